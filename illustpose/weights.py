"""Where each model's weight files are, and how to get them.

The known files are the :mod:`illustpose.registry`'s (:func:`~illustpose.registry.known_files`).
Two public sources exist:

* the community repackaging on Hugging Face (``public-data/bizarre-pose-estimator-models``):
  ``segmenter.pth``, ``tagger.pth`` and its tag list;
* the authors' Google Drive folder, holding ``bizarre_pose_models.zip`` (about 2.18 GB), whose
  members are the Lightning checkpoints (the pose models exist only there) and the rules JSON.

:func:`resolve` finds a model's file in this order:

1. ``path`` given explicitly (a file; it must exist);
2. each folder of ``search_dirs``, in order (the ComfyUI nodes pass ``models/illustpose``);
3. the pack's own ``weights/`` folder (:data:`PACK_WEIGHTS_DIR`);
4. a ``bizarre_pose_models.zip`` already saved in one of those folders (extracted, no network);
5. a download, unless offline: Hugging Face first, then the Drive zip (needs ``gdown``).

In each folder the accepted names are, in order: our converted ``<kind>.safetensors``, the
Hugging Face file name, then the authors' file at its path inside the zip or by its base name.

Nothing here touches the network or ``os.environ`` at import, and nothing imports torch.
"""

from __future__ import annotations

import os
import shutil
import warnings
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from .errors import WeightsNotFoundError
from .fileio import atomic_path, sha256_file
from .registry import DRIVE_ZIP, KnownFile, format_size, known_files

__all__ = ["PACK_WEIGHTS_DIR", "is_offline", "resolve", "tags_path_for"]

#: The pack's ``weights/`` folder (repo root), searched after ``search_dirs``; the default
#: download destination.  Computed from this file's location, nothing is read at import.
PACK_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
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
    then the HF name, then the authors' file at its zip path or by its base name.

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
    files = known_files(model)
    dirs = [Path(d).expanduser() for d in search_dirs]
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if not p.is_dir():
            raise WeightsNotFoundError(
                f"weights for {model!r}: the given path {p} does not exist; expected an "
                "existing .safetensors, .pth or .ckpt file. Check the path, or give none to "
                "search the weights folders and download."
            )
        dirs.insert(0, p)
    dirs = _dedupe([*dirs, PACK_WEIGHTS_DIR])
    for d in dirs:
        if hit := _find_in(d, model):
            return hit

    drive_files = [f for f in files if f.source == "drive_zip"]
    zip_name = DRIVE_ZIP.zip_name
    for d in dirs:
        if drive_files and (d / zip_name).is_file():
            return _extract(d / zip_name, drive_files[0], d, owned=False)

    if is_offline(offline):
        raise WeightsNotFoundError(_missing(model, dirs, "downloads are off (offline mode: "
                                            "offline=True, --offline or HF_HUB_OFFLINE=1)"))
    if not download:
        raise WeightsNotFoundError(_missing(model, dirs, "downloading was not allowed"))
    dest = dirs[0]
    failures = []
    for f in files:
        try:
            if f.source == "hf":
                return _download_hf(f, dest, progress)
            if failures:
                size = format_size(DRIVE_ZIP.size)
                warnings.warn(f"download failed: {failures[-1]}; trying the authors' Drive zip "
                              f"instead ({size})", stacklevel=2)
            return _extract(_fetch_drive_zip(cache_dir, progress), f, dest, owned=True)
        except Exception as e:  # network, quota, missing gdown...: try the next source
            failures.append(f"{f.basename}: {e}")
    raise WeightsNotFoundError(
        _missing(model, dirs, "the download failed:\n    " + "\n    ".join(failures))
    )


def _missing(model: str, dirs: list[Path], reason: str) -> str:
    zip_name = DRIVE_ZIP.zip_name
    lines = [
        f"No weights for {model!r} were found, and {reason}.",
        f"Looked for {', '.join(_candidates(model))} in:",
        *(f"  {d}" for d in dirs),
        "Get any one of these files (with the file listed under it, if any):",
    ]
    for f in known_files(model):
        lines.append(f"  - {f.describe()}")
        lines += [f"      + beside it: {_by_name(c).describe()}" for c in f.companions]
    lines.append(
        "Put it in one of the folders above, under its file name (files from the zip may also "
        f"keep their path inside the zip), or save {zip_name} itself there and illustpose "
        "extracts only what it needs; or pass the file's path explicitly."
    )
    if "offline" in reason:
        lines.append("Or go online (unset HF_HUB_OFFLINE, no --offline) to download it.")
    return "\n".join(lines)


def _download_hf(f: KnownFile, dest: Path, progress: bool) -> Path:
    """``hf_hub_download(repo_id, filename, local_dir=dest)`` for ``f`` and its companions."""
    try:
        import huggingface_hub
    except ImportError:
        raise WeightsNotFoundError(
            "huggingface_hub is not installed; run `pip install huggingface_hub`"
        ) from None
    kw = {}
    if not progress:
        from tqdm.auto import tqdm

        class _Quiet(tqdm):
            def __init__(self, *a, **k):
                k["disable"] = True
                super().__init__(*a, **k)

        kw["tqdm_class"] = _Quiet

    def get(g: KnownFile) -> Path:
        got = Path(huggingface_hub.hf_hub_download(
            repo_id=g.repo_id, filename=g.filename, local_dir=str(dest), **kw
        ))
        if g.sha256 and sha256_file(got) != g.sha256:
            got.unlink()
            raise WeightsNotFoundError(
                f"{g.url}: downloaded file's sha256 differs from the registry's {g.sha256}; "
                "the file was removed; try again later or report it."
            )
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
    """Return the cached ``bizarre_pose_models.zip``, downloading it with gdown if absent.

    The download goes to ``<zip>.incomplete`` and is renamed only once it reads as a zip, so
    the cache never holds a truncated archive.
    """
    z = DRIVE_ZIP
    cache = Path(cache_dir) if cache_dir else (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "illustpose"
    )
    final = cache / z.zip_name
    if final.is_file() and zipfile.is_zipfile(final):
        return final
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
    os.replace(part, final)
    return final


def _extract(zip_path: Path, f: KnownFile, dest: Path, *, owned: bool) -> Path:
    """Extract ``f`` (and its zip companions) from ``zip_path`` to ``dest/<zip member>``.

    Each member is written atomically (:func:`~illustpose.fileio.atomic_path`) once zipfile has
    checked its CRC and, when the registry knows it, its sha256, so no partial or wrong file is
    ever left.  ``owned``: the zip is our cache (deleted if damaged).
    Raises WeightsNotFoundError if the zip is damaged or lacks ``f``'s member.
    """
    wanted = [f] + [c for c in map(_by_name, f.companions) if c.source == "drive_zip"]
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
                    digest = sha256_file(tmp) if g.sha256 else None
                    if digest != g.sha256:
                        raise WeightsNotFoundError(
                            f"{zip_path}: member '{member}' has sha256 {digest}, expected {g.sha256}")
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
