"""Where each model's weight files are, and how to get them.

The known files are the :mod:`illustpose.registry`'s (:func:`~illustpose.registry.known_files`).
The public sources:

* the community repackaging on Hugging Face (``public-data/bizarre-pose-estimator-models``):
  ``segmenter.pth``, ``tagger.pth`` and its tag list;
* the authors' ``bizarre_pose_models.zip`` (2,343,386,993 bytes), whose members are the
  Lightning checkpoints and the rules JSON: downloaded from the unofficial Hugging Face mirror
  ``h54917/bizarre-pose-estimator`` first (pinned sha256: a file that differs is refused), else
  from the authors' Google Drive folder (needs ``gdown``; a file that differs from the mirror's
  sha256 is used with a warning, as the authors' own copy);
* ComfyUI-AnimePose's repackaging (``character_bg_seg.safetensors``,
  ``anime_pose_head.safetensors``): accepted where found, never downloaded.

Downloads are verified against the registry's sha256 where one is pinned; every file
downloaded or extracted is recorded in its folder's :data:`HASHES_FILE` (:func:`hash_records`),
which also notices a file that changed later.  ``HF_HUB_OFFLINE=1`` stops every download,
Google Drive included.

:func:`resolve` finds a model's file in this order:

1. ``path`` given explicitly (a file; it must exist);
2. each folder of ``search_dirs``, in order (the ComfyUI nodes pass ``models/illustpose``);
3. the pack's own ``weights/`` folder (:data:`PACK_WEIGHTS_DIR`);
4. a ``bizarre_pose_models.zip`` already saved in one of those folders (extracted, no network);
5. a download, unless offline: Hugging Face first, then the authors' zip (mirror, then Drive).

In each folder the accepted names are, in order: our converted ``<kind>.safetensors``, the
Hugging Face file name, then the authors' file at its path inside the zip or by its base name.

Nothing here touches the network or ``os.environ`` at import, and nothing imports torch.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from .errors import WeightsNotFoundError
from .fileio import atomic_path, sha256_file, write_text
from .registry import DRIVE_ZIP, KnownFile, format_size, known_files

__all__ = ["PACK_WEIGHTS_DIR", "user_cache_dir", "PROBE_TIMEOUT", "is_offline", "resolve", "resolve_all", "find_local",
           "search_folders", "tags_path_for", "HASHES_FILE", "hash_records", "zip_record", "release_zip",
           "file_sha256"]


def user_cache_dir() -> Path:
    """illustpose's folder in the user's cache: ``$XDG_CACHE_HOME/illustpose``, else ``~/.cache/illustpose``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "illustpose")


def _pack_weights_dir() -> Path:
    """The checkout's ``weights/`` folder when the library runs from a clone (editable install,
    ComfyUI pack); for an installed wheel, which ships no such folder, ``weights/`` in the
    user's cache (:func:`user_cache_dir`)."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "weights").is_dir():
        return root / "weights"
    return user_cache_dir() / "weights"


#: The pack's ``weights/`` folder (a clone's, else the user's cache folder), searched after
#: ``search_dirs``; the default download destination.
PACK_WEIGHTS_DIR = _pack_weights_dir()
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's ENV_VARS_TRUE_VALUES


def _by_name(name: str) -> KnownFile:
    return next(f for f in known_files() if f.name == name)


def is_offline(offline: bool | None = None) -> bool:
    """True if the network must not be touched.

    ``offline`` wins when given; otherwise the environment variable ``HF_HUB_OFFLINE`` (read
    now) or huggingface_hub's own ``constants.HF_HUB_OFFLINE`` (read at its import).
    """
    if offline is not None:
        return bool(offline)
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def _candidates(model: str) -> list[str]:
    """Relative names accepted for ``model`` in one folder, best first."""
    names = [] if model == "tags" else [f"{model}.safetensors"]
    for f in known_files(model):
        names += [n for n in f.local_names() if n not in names]
    return names


def _find_in(folder: Path, model: str) -> Path | None:
    for n in _candidates(model):
        p = folder / n
        if p.is_file():
            return p
    return None


def _dedupe(dirs: Iterable[Path]) -> list[Path]:
    out, seen = [], set()
    for d in dirs:
        key = os.path.normcase(os.path.abspath(d))
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def search_folders(search_dirs: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The folders :func:`resolve` looks in, in order: ``search_dirs``, then :data:`PACK_WEIGHTS_DIR`."""
    return _dedupe([*(Path(d).expanduser() for d in search_dirs), PACK_WEIGHTS_DIR])


def find_local(model: str, search_dirs: Sequence[str | os.PathLike] = ()) -> Path | None:
    """The file :func:`resolve` would use for ``model`` from the folders alone (no zip, no network)."""
    return next((hit for d in search_folders(search_dirs) if (hit := _find_in(d, model))), None)


def resolve(
    model: str,
    path: str | os.PathLike | None = None,
    *,
    search_dirs: Sequence[str | os.PathLike] = (),
    offline: bool | None = None,
    download: bool = True,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Return a local path to ``model``'s weight file, downloading it if needed and allowed.

    Order: ``path`` > each of ``search_dirs`` > :data:`PACK_WEIGHTS_DIR` > a saved
    ``bizarre_pose_models.zip`` in one of those folders (members extracted beside it) >
    download (Hugging Face first, then the Drive zip).  In each folder: ``<model>.safetensors``,
    then the HF name, then the authors' file at its zip path or by its base name.  A source
    whose host does not answer within a few seconds is skipped without retries.

    Args:
        model: a weights kind of :func:`illustpose.registry.weights_kinds`.
        path: explicit weight file; it must exist.  A folder is searched first instead.
        search_dirs: extra folders, searched in order (ComfyUI's ``models/illustpose``).  The
            first one is the download destination; without any, the pack's ``weights/``.
        offline: True never touches the network; None follows ``HF_HUB_OFFLINE``.
        download: False never downloads (local zip extraction still happens).
        progress: show download progress bars.
        cache_dir: where the Drive zip is kept after download (default
            ``$XDG_CACHE_HOME/illustpose`` or ``~/.cache/illustpose``; about 2.18 GB, reused
            for later extractions, delete it at will).

    Returns:
        pathlib.Path of an existing file.  Downloads also fetch the companions (the tagger's
        tag names) beside it; a companion that fails only warns.

    Raises:
        ValueError: unknown ``model``.
        WeightsNotFoundError: ``path`` does not exist; or nothing was found and downloading
            was impossible, forbidden or failed: one message listing each file, its size,
            where to get it and the folders where it may be put.
    """
    return resolve_all([(model, path)], search_dirs=search_dirs, offline=offline, download=download,
                       progress=progress, cache_dir=cache_dir)[0]


def resolve_all(
    requests: Iterable[tuple[str, str | os.PathLike | None]],
    *,
    search_dirs: Sequence[str | os.PathLike] = (),
    offline: bool | None = None,
    download: bool = True,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    path_hint: str = "pass the file's path explicitly",
) -> list[Path]:
    """:func:`resolve` for several ``(model, path)`` requests, with one error for all that is missing.

    Everything found locally is used; the rest is downloaded (each unreachable host is tried
    once, for a few seconds).  What still lacks is reported in one message that lists every
    file, the folders searched and the one ``python -m illustpose weights download ...``
    command that fetches them all.

    Args:
        requests: ``(model, path or None)`` pairs, as :func:`resolve`'s first two arguments.
        path_hint: how the caller's user passes a file by hand, ending the message's advice
            (the CLI names its ``--segmenter PATH`` ... flags).
        search_dirs, offline, download, progress, cache_dir: as :func:`resolve`.

    Returns:
        One existing file per request, in order.

    Raises:
        ValueError: an unknown model.
        WeightsNotFoundError: explicit paths that do not exist (nothing is downloaded then) and
            files that are neither found nor downloaded, all in one message.
    """
    requests = list(requests)
    for model, _ in requests:
        known_files(model)  # ValueError naming the known kinds
    found: dict[int, Path] = {}
    wrong_paths: list[str] = []
    missing: list[tuple[int, list[Path]]] = []
    for i, (model, path) in enumerate(requests):
        dirs = search_folders(search_dirs)
        if path is not None:
            p = Path(path).expanduser()
            if p.is_file():
                found[i] = p
                continue
            if not p.is_dir():
                wrong_paths.append(
                    f"weights for {model!r}: the given path {p} does not exist; expected an "
                    "existing .safetensors, .pth or .ckpt file. Check the path, or give none to "
                    "search the weights folders and download.")
                continue
            dirs = _dedupe([p, *dirs])
        if hit := _local(model, dirs):
            found[i] = hit
        else:
            missing.append((i, dirs))
    if not missing and not wrong_paths:
        return [found[i] for i in range(len(requests))]

    if not missing:
        reason = None
    elif wrong_paths:
        reason = "nothing was downloaded because of the wrong path above"
    elif is_offline(offline) or is_offline():  # HF_HUB_OFFLINE stops every download, even offline=False
        reason = "downloads are off (offline mode: offline=True, --offline or HF_HUB_OFFLINE=1)"
    elif not download:
        reason = "downloading was not allowed"
    else:
        hosts: dict[tuple[str, int], str | None] = {}
        failures: list[str] = []
        for i, dirs in missing:
            try:
                found[i] = _fetch(requests[i][0], dirs[0], progress, cache_dir, hosts)
            except _NotFetched as e:
                failures += e.failures
        missing = [(i, dirs) for i, dirs in missing if i not in found]
        down = [f"{host}:{port} ({why})" for (host, port), why in hosts.items() if why]
        unreachable = "the network seems unreachable" if len(down) == len(hosts) else "a download host is unreachable"
        reason = "; ".join(
            ([f"{unreachable}: no connection to {', '.join(down)}"] if down else [])
            + (["the download failed:\n    " + "\n    ".join(failures)] if failures else []))
    if not missing and not wrong_paths:
        return [found[i] for i in range(len(requests))]
    message = wrong_paths[:]
    if missing:
        dirs = _dedupe(d for _, ds in missing for d in ds)
        message.append(_missing([requests[i][0] for i, _ in missing], dirs, reason, path_hint))
    raise WeightsNotFoundError("\n".join(message))


def _local(model: str, dirs: list[Path]) -> Path | None:
    """``model``'s file in ``dirs``, else extracted from a saved authors' zip there, else None."""
    for d in dirs:
        if hit := _find_in(d, model):
            return _unchanged(d, hit)
    drive_files = [f for f in known_files(model) if f.source == "drive_zip"]
    for d in dirs:
        if drive_files and (d / DRIVE_ZIP.zip_name).is_file():
            return _extract(d / DRIVE_ZIP.zip_name, drive_files[0], d, owned=False)
    return None


class _NotFetched(Exception):
    """No source of a model could be downloaded; ``failures``: one line per file tried."""

    def __init__(self, failures: list[str]):
        super().__init__("; ".join(failures))
        self.failures = failures


#: seconds a download host has to accept a connection before it counts as unreachable
PROBE_TIMEOUT = 3.0


def _source_urls(f: KnownFile) -> list[str]:
    """The hosts a download of ``f`` may use (huggingface_hub's endpoint for Hugging Face files)."""
    try:
        from huggingface_hub import constants

        hub = constants.ENDPOINT
    except ImportError:
        hub = "https://huggingface.co"
    if f.source == "hf":
        return [hub]
    return ([hub] if DRIVE_ZIP.hf_repo else []) + [f.url]


def _zip_cache(cache_dir: str | os.PathLike | None) -> Path:
    """The folder that keeps the downloaded authors' zip (:func:`resolve`'s ``cache_dir``)."""
    return Path(cache_dir) if cache_dir else user_cache_dir()


def _unreachable(url: str, hosts: dict) -> str | None:
    """Why ``url``'s host (or the proxy configured for it) cannot be reached; None when it answers.

    One TCP connection with a :data:`PROBE_TIMEOUT` deadline (name lookup included), so an
    offline machine fails in seconds instead of through a library's retries.  ``hosts``
    caches the answer per ``(host, port)``.
    """
    import socket
    import threading
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = p.hostname or "", p.port or 8080
    if (host, port) not in hosts:
        answer = ["no answer within %g s" % PROBE_TIMEOUT]

        def connect():
            try:
                socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
                answer[0] = None
            except OSError as e:
                answer[0] = e.strerror or str(e) or type(e).__name__

        probe = threading.Thread(target=connect, daemon=True)
        probe.start()
        probe.join(PROBE_TIMEOUT + 0.5)
        hosts[host, port] = answer[0]
    return hosts[host, port]


def _fetch(model: str, dest: Path, progress: bool, cache_dir, hosts: dict) -> Path:
    """Download ``model`` into ``dest`` from its first source that works.

    Raises:
        _NotFetched: every source failed or was unreachable (those are recorded in ``hosts``).
    """
    failures: list[str] = []
    skipped = False
    for f in (f for f in known_files(model) if f.downloadable):
        cached = f.source == "drive_zip" and (_zip_cache(cache_dir) / DRIVE_ZIP.zip_name).is_file()
        if not cached and all([_unreachable(url, hosts) for url in _source_urls(f)]):
            skipped = True
            continue
        try:
            if f.source == "hf":
                return _download_hf(f, dest, progress)
            if failures or skipped:
                why = failures[-1] if failures else f"Hugging Face does not answer ({model!r})"
                warnings.warn(f"{why}; trying the authors' Drive zip instead ({format_size(DRIVE_ZIP.size)})",
                              stacklevel=4)
            return _extract(_fetch_drive_zip(cache_dir, progress), f, dest, owned=True)
        except Exception as e:  # network, quota, missing gdown...: try the next source
            failures.append(f"{f.basename}: {e}")
    raise _NotFetched(failures)


def _missing(models: Sequence[str], dirs: list[Path], reason: str | None,
             path_hint: str = "pass the file's path explicitly") -> str:
    """The one message for weights of ``models`` that were not found in ``dirs``, and why."""
    names = ", ".join(map(repr, models))
    lines = [f"No weights for {names} were found, and {reason}.", "Looked in:", *(f"  {d}" for d in dirs)]
    for model in models:
        lines += [f"For {model!r} (looked for {', '.join(_candidates(model))}), get any one of these "
                  "files (with the file listed under it, if any):"]
        for f in known_files(model):
            lines.append(f"  - {f.describe()}")
            lines += [f"      + beside it: {_by_name(c).describe()}" for c in f.companions]
    command = ["python", "-m", "illustpose", "weights", "download", *models]
    if dirs[0] != PACK_WEIGHTS_DIR:
        command += ["--weights-dir", str(dirs[0])]
    lines += [
        f"Put {'it' if len(models) == 1 else 'each'} in one of the folders above, under its file name "
        "(files from the zip may also keep their path inside the zip), or save "
        f"{DRIVE_ZIP.zip_name} itself there and illustpose extracts only what it needs; or {path_hint}.",
        f"Or download {'it' if len(models) == 1 else 'them all'} in one go (online): {shlex.join(command)}",
    ]
    if "offline" in reason:
        lines.append("Or go online (unset HF_HUB_OFFLINE, no --offline) to let the run download "
                     f"{'it' if len(models) == 1 else 'them'}.")
    return "\n".join(lines)


# ------------------------------------------------------------------ downloads and their hashes

#: The file in a folder where illustpose records the sha256 of each file it downloaded or
#: extracted there (:func:`hash_records`).
HASHES_FILE = ".illustpose-hashes.json"


def hash_records(folder: str | os.PathLike) -> dict[str, dict]:
    """The sha256 records kept in ``folder``'s :data:`HASHES_FILE`.

    Every file illustpose downloads or extracts into a folder is recorded there under its
    relative POSIX path: ``{"sha256", "size", "mtime_ns", "source", "pinned", "status",
    "recorded"}`` (``recorded``: UTC time, ISO 8601).  ``status`` is ``verified`` (equal to the
    registry's pinned sha256, ``pinned``), ``recorded`` (no sha256 was known: this is the first
    download's), ``differs`` (a Google Drive zip unlike the pinned sha256, used anyway) or
    ``changed`` (the file changed after it was recorded; ``was`` holds the earlier digest).
    Files extracted from a zip also name its digest (``zip_sha256``) when it is recorded.

    Returns:
        ``{relative path: record}``; empty when the folder has no records or they cannot be
        read (never raises).
    """
    try:
        data = json.loads((Path(folder) / HASHES_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def file_sha256(path: str | os.PathLike) -> str:
    """A weight file's sha256 (lower-case hex): the one recorded in its folder's
    :data:`HASHES_FILE` while the file's size and modification time are those recorded (a
    downloaded file is not read again), else computed (:func:`~illustpose.fileio.sha256_file`).

    Raises:
        OSError: the file cannot be read.
    """
    path = Path(path)
    st = path.stat()
    rec = hash_records(path.parent).get(path.name)
    if rec and (rec.get("size"), rec.get("mtime_ns")) == (st.st_size, st.st_mtime_ns) and rec.get("sha256"):
        return str(rec["sha256"])
    return sha256_file(path)


def zip_record(cache_dir: str | os.PathLike | None = None) -> dict | None:
    """The :func:`hash_records` entry of the downloaded ``bizarre_pose_models.zip`` in the cache
    (:func:`resolve`'s ``cache_dir``), or None when none was downloaded."""
    return hash_records(_zip_cache(cache_dir)).get(DRIVE_ZIP.zip_name)


def _relative(folder: Path, path: Path) -> str:
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:
        return path.resolve().relative_to(folder.resolve()).as_posix()


def _record(folder: Path, path: Path, digest: str, *, source: str, pinned: str | None, status: str,
            **extra) -> None:
    """Write ``path``'s record into ``folder``'s :data:`HASHES_FILE` (atomically); a folder that
    cannot take it only warns, the file itself is fine."""
    st = path.stat()
    records = hash_records(folder)
    records[_relative(folder, path)] = dict(
        sha256=digest, size=st.st_size, mtime_ns=st.st_mtime_ns, source=source, pinned=pinned, status=status,
        recorded=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra)
    try:
        write_text(folder / HASHES_FILE, json.dumps({"format": 1, "files": records}, indent=1, sort_keys=True))
    except OSError as e:
        warnings.warn(f"could not record the sha256 of {path} in {folder / HASHES_FILE}: {e}", stacklevel=3)


def _verify(folder: Path, path: Path, pinned: str | None, source: str, *, keep_reason: str | None = None,
            **extra) -> str:
    """Hash a file just downloaded into ``folder``, compare it with ``pinned`` and record it.

    Streaming (:func:`~illustpose.fileio.sha256_file`).  A file unlike ``pinned`` is deleted and
    refused, unless ``keep_reason`` says why it is used anyway: then a warning names both digests.

    Returns:
        the file's sha256 (hex).

    Raises:
        WeightsNotFoundError: it differs from ``pinned`` and there is no ``keep_reason``.
    """
    digest = sha256_file(path)
    status = "recorded" if pinned is None else "verified" if digest == pinned else "differs"
    if status == "differs" and keep_reason is None:
        path.unlink(missing_ok=True)
        raise WeightsNotFoundError(
            f"{source}: refused the downloaded {path.name}: its sha256 is {digest}, but the pinned sha256 is "
            f"{pinned}. It was deleted. The download was damaged or the file changed at its source: run "
            "again, and if it persists get the file from another source (weights/README.md) or report it."
        )
    if status == "differs":
        warnings.warn(
            f"UNVERIFIED {path.name} from {source}: sha256 {digest} ({path.stat().st_size:,} bytes) differs from "
            f"the pinned sha256 {pinned}. {keep_reason} Both digests are recorded in {folder / HASHES_FILE}.",
            stacklevel=4)
    _record(folder, path, digest, source=source, pinned=pinned, status=status, **extra)
    return digest


def _unchanged(folder: Path, path: Path) -> Path:
    """``path``, found in ``folder``; warns once if it changed since its sha256 was recorded there.

    Only recorded files are checked, and only hashed when their size or modification time moved
    (then the record is brought up to date, marked ``changed`` if the content differs).
    """
    rec = hash_records(folder).get(_relative(folder, path))
    st = path.stat()
    if not rec or (rec.get("size"), rec.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
        return path
    digest = sha256_file(path)
    status, extra = rec.get("status", "recorded"), {k: rec[k] for k in ("was", "zip_sha256") if k in rec}
    if digest != rec.get("sha256"):
        warnings.warn(
            f"{path} changed after illustpose recorded it ({rec.get('source')}): its sha256 is now {digest}, "
            f"recorded {rec.get('sha256')}. If you did not replace it on purpose, delete it and download it again.",
            stacklevel=3)
        status, extra["was"] = "changed", rec.get("sha256")
    _record(folder, path, digest, source=str(rec.get("source")), pinned=rec.get("pinned"), status=status, **extra)
    return path


def _check_online(what: str) -> None:
    """Refuse a download while ``HF_HUB_OFFLINE`` is set, whatever ``offline=`` said."""
    if is_offline():
        raise WeightsNotFoundError(
            f"HF_HUB_OFFLINE is set, which turns every download off, {what} included; unset it to download")


def _hub():
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsNotFoundError(
            "huggingface_hub is not installed; run `pip install huggingface_hub`"
        ) from None
    return huggingface_hub


def _bars(progress: bool) -> dict:
    """``hf_hub_download`` keywords: none with progress bars, a silent tqdm class without."""
    if progress:
        return {}
    from tqdm.auto import tqdm

    class _Quiet(tqdm):
        def __init__(self, *a, **k):
            k["disable"] = True
            super().__init__(*a, **k)

    return {"tqdm_class": _Quiet}


def _download_hf(f: KnownFile, dest: Path, progress: bool) -> Path:
    """``hf_hub_download(repo_id, filename, local_dir=dest)`` for ``f`` and its companions.

    Each file is checked against its pinned sha256 (one that differs is deleted and refused)
    or, where none is known, its sha256 is recorded in ``dest``'s :data:`HASHES_FILE`.
    """
    _check_online("Hugging Face")
    hub = _hub()

    def get(g: KnownFile) -> Path:
        got = Path(hub.hf_hub_download(repo_id=g.repo_id, filename=g.filename, local_dir=str(dest),
                                       **_bars(progress)))
        _verify(dest, got, g.sha256, g.url)
        return got

    got = get(f)
    for c in (c for c in map(_by_name, f.companions) if c.source == "hf"):
        try:
            get(c)
        except Exception as e:
            warnings.warn(f"{f.name} was downloaded but its companion failed: "
                          f"{c.describe()}: {e}", stacklevel=3)
    return got


def _import_gdown():
    try:
        import gdown
    except ImportError:
        raise WeightsNotFoundError(
            "downloading from Google Drive needs gdown, which is not installed; run "
            "`pip install illustpose[drive]` (or `pip install gdown`), or download the zip by "
            "hand (see below)"
        ) from None
    return gdown


def _fetch_drive_zip(cache_dir: str | os.PathLike | None, progress: bool) -> Path:
    """Return the cached ``bizarre_pose_models.zip``, downloading it if absent.

    Sources, in order: the Hugging Face mirror (:attr:`~illustpose.registry.DriveZip.hf_repo`;
    resumable, cached, no quota; a file unlike the pinned sha256 is deleted and refused), then
    the authors' Google Drive folder with gdown (a file unlike the pinned sha256, which comes
    from the mirror, is used with a loud warning naming both digests).  The zip's sha256 is
    recorded in the cache's :data:`HASHES_FILE`; a cached zip that changed since is reported.

    Raises:
        WeightsNotFoundError: ``HF_HUB_OFFLINE`` is set, or every source failed (the message
            gives each reason).
    """
    z = DRIVE_ZIP
    cache = _zip_cache(cache_dir)
    final = cache / z.zip_name
    if final.is_file() and zipfile.is_zipfile(final):
        return _unchanged(cache, final)
    _check_online("Google Drive")
    mirror_failure = None
    if z.hf_repo:
        try:
            got = Path(_hub().hf_hub_download(repo_id=z.hf_repo, filename=z.hf_filename, local_dir=str(cache),
                                              **_bars(progress)))
            if got != final:
                os.replace(got, final)
            _verify(cache, final, z.sha256, z.hf_url)
            return final
        except Exception as e:  # network, missing file, refused digest...: Google Drive next
            mirror_failure = f"the Hugging Face mirror {z.hf_url} failed: {e}"
            warnings.warn(f"{mirror_failure}; trying the authors' Google Drive folder", stacklevel=3)
    try:
        return _fetch_from_drive(cache, progress)
    except WeightsNotFoundError as e:
        if mirror_failure:
            raise WeightsNotFoundError(f"{e}; before that, {mirror_failure}") from None
        raise


def release_zip(cache_dir: str | os.PathLike | None = None, *, download: bool = False,
                progress: bool = True) -> Path | None:
    """The authors' ``bizarre_pose_models.zip`` in the cache (it also holds the retrieval
    support files ``_data/danbooru/...``), downloaded with :func:`resolve`'s checks (mirror
    first, pinned size and sha256) when ``download`` is set; None when absent and not asked.

    Raises:
        WeightsNotFoundError: ``download`` and every source failed (or offline).
    """
    final = _zip_cache(cache_dir) / DRIVE_ZIP.zip_name
    if final.is_file() and zipfile.is_zipfile(final):
        return _unchanged(_zip_cache(cache_dir), final)
    return _fetch_drive_zip(cache_dir, progress) if download else None


def _fetch_from_drive(cache: Path, progress: bool) -> Path:
    """Download the zip from the authors' Google Drive folder into ``cache`` with gdown.

    The download goes to ``<zip>.incomplete`` and is renamed only once it reads as a zip, so
    the cache never holds a truncated archive.
    """
    z = DRIVE_ZIP
    gdown = _import_gdown()
    listing = gdown.download_folder(url=z.folder_url, skip_download=True, quiet=not progress)
    entry = next((x for x in listing or () if Path(x.path).name == z.zip_name), None)
    if entry is None:
        found = ", ".join(Path(x.path).name for x in listing or ()) or "nothing"
        raise WeightsNotFoundError(
            f"the Google Drive folder {z.folder_url} has no {z.zip_name} "
            f"(found: {found}); download the needed files by hand"
        )
    cache.mkdir(parents=True, exist_ok=True)
    part = cache / (z.zip_name + ".incomplete")
    out = gdown.download(id=entry.id, output=str(part), quiet=not progress, resume=True)
    if not out or not part.is_file():
        raise WeightsNotFoundError(
            f"Google Drive did not serve {z.zip_name} (often its download quota for large "
            f"files); download it by hand from {z.folder_url}"
        )
    if not zipfile.is_zipfile(part):
        got = part.stat().st_size
        part.unlink()
        raise WeightsNotFoundError(
            f"the download of {z.zip_name} is truncated or not a zip: got {got} bytes, "
            f"expected {format_size(z.size)}; it was deleted, run again"
        )
    final = cache / z.zip_name
    os.replace(part, final)
    _verify(cache, final, z.sha256, z.folder_url, keep_reason=(
        f"The pinned sha256 is the Hugging Face mirror's ({z.hf_repo}); this is the authors' own Google Drive "
        "copy, so it is used anyway, but that it holds the released weights is unconfirmed."))
    return final


def _extract(zip_path: Path, f: KnownFile, dest: Path, *, owned: bool) -> Path:
    """Extract ``f`` (and its zip companions) from ``zip_path`` to ``dest/<zip member>``.

    Each member is written atomically (:func:`~illustpose.fileio.atomic_path`) once zipfile has
    checked its CRC and, when the registry knows it, its sha256, so no partial or wrong file is
    ever left; its sha256 is recorded in ``dest``'s :data:`HASHES_FILE`, with the zip's when
    that is recorded.  ``owned``: the zip is our cache (deleted if damaged).
    Raises WeightsNotFoundError if the zip is damaged or lacks ``f``'s member.
    """
    wanted = [f] + [c for c in map(_by_name, f.companions) if c.source == "drive_zip"]
    zip_record = hash_records(zip_path.parent).get(zip_path.name, {})
    from_zip = {"zip_sha256": zip_record["sha256"]} if "sha256" in zip_record else {}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = zf.namelist()
            for g in wanted:
                # tolerate a top-level folder around the authors' tree
                member = next((n for n in names if n == g.zip_member
                               or n.endswith("/" + g.zip_member)), None)
                if member is None:
                    msg = f"{zip_path} has no member '{g.zip_member}'"
                    if g is f:
                        raise WeightsNotFoundError(
                            msg + "; is it the authors' bizarre_pose_models.zip?")
                    warnings.warn(msg + f" (needed beside {f.basename})", stacklevel=3)
                    continue
                with atomic_path(dest / g.zip_member) as tmp:
                    with zf.open(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)  # zipfile checks the CRC at the end
                    digest = sha256_file(tmp)
                    if g.sha256 and digest != g.sha256:
                        raise WeightsNotFoundError(
                            f"{zip_path}: member '{member}' has sha256 {digest}, expected {g.sha256}")
                _record(dest, dest / g.zip_member, digest, source=f"{zip_path} member '{member}'",
                        pinned=g.sha256, status="verified" if g.sha256 else "recorded", **from_zip)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        if owned:
            Path(zip_path).unlink(missing_ok=True)
        raise WeightsNotFoundError(
            f"{zip_path} is damaged ({type(e).__name__}: {e}); "
            + ("it was deleted, run again to download it anew" if owned
               else "delete it and download it again")
        ) from None
    return dest / f.zip_member


def tags_path_for(
    checkpoint_path: str | os.PathLike,
    explicit: str | os.PathLike | None = None,
    search_dirs: Sequence[str | os.PathLike] = (),
) -> Path | None:
    """Find the tag-name file for a tagger checkpoint.

    Order: ``explicit`` (must exist) > the checkpoint's folder > the root of the authors' tree
    when the checkpoint sits at its zip path > each of ``search_dirs`` > the pack's
    ``weights/``.  In each folder: ``<checkpoint stem>.tags.txt``, ``tags.txt``,
    ``intently_combatively_rules.json``, then the rules JSON at its zip path
    (``_data/danbooru/_filters/...``).

    Returns:
        The path found, or None if there is none.

    Raises:
        WeightsNotFoundError: ``explicit`` is given but does not exist.
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.is_file():
            return p
        raise WeightsNotFoundError(
            f"tag names: the given file {p} does not exist; expected a one-name-per-line "
            ".txt or the authors' rules .json. Check the path, or give none to look beside "
            "the weights."
        )
    ckpt = Path(checkpoint_path)
    dirs = [ckpt.parent]
    for f in known_files():
        parts = PurePosixPath(f.name).parts
        if f.source == "drive_zip" and len(ckpt.parts) > len(parts) \
                and ckpt.parts[-len(parts):] == parts:
            dirs.append(Path(*ckpt.parts[: -len(parts)]))
    dirs = _dedupe([*dirs, *map(Path, search_dirs), PACK_WEIGHTS_DIR])
    names = [f"{ckpt.stem}.tags.txt"]
    tag_files = known_files("tags")
    names += [f.basename for f in tag_files] + [f.name for f in tag_files]
    names = list(dict.fromkeys(names))
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None
