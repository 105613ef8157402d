"""The authors' Danbooru support set as index entries (``index import-danbooru``).

The reference's ``_scripts/pose_retrieval.py`` searches a fixed set of Danbooru posts:

* ``_data/danbooru/preprocessed/pose_descriptors/neighbors.pkl``: a pickled scikit-learn
  ``NearestNeighbors`` (sklearn 1.0.1) fitted on one descriptor per post (``pdist`` of the
  crop-frame keypoints, :mod:`.descriptor`; 300-D for 25 joints); ``kneighbors(d[None])``
  with the fit-time ``n_neighbors`` answers a query;
* row ``i`` of it is the post ``bns[i]``, where ``bns`` is
  ``sorted(set(int(line) for line in intently.csv if line) & set(full_body.pkl))``
  (``_data/danbooru/_filters/intently.csv``: one post id per line;
  ``_data/danbooru/preprocessed/pose_descriptors/full_body.pkl``: a pickled collection of
  post ids), and the printed link is ``https://danbooru.donmai.us/posts/<id>``.

:func:`neighbors_entries` turns these into *link-only* entries (the descriptor and the link, no
keypoints; :class:`.store.IndexEntry`), in row order, so entry ids are rows + 1.  The matrix is
read from the fitted object's state (``_fit_X``), never by running scikit-learn: pickles are
read by :func:`.safe_pickle.load_data_pickle`.  Only a Euclidean fit (``minkowski`` with
``p=2``, or ``euclidean``) is accepted, so an exact search over the rows answers as
``kneighbors`` does: same rows, same order, distances equal to float32 rounding of the stored
descriptors (about 1e-6 relative); rows at exactly equal distance come in row order
(scikit-learn leaves their order to its tree or sort).

``raw_retrieval_support.zip`` (bizarre-pose-estimator issue #4: "pickles of dicts with raw
model outputs of the support set") is read by :func:`raw_support_entries`.  Assumed layout
(the issue shows no file listing): every ``*.pkl`` member is a dict ``{post id: output}``
whose ``output`` holds the reference's ``infer_pose`` fields ``keypoints`` ((J, 2) ``(row,
col)`` image pixels, J = 25 or 17) and ``bbox`` (``[(row0, col0), (height, width)]``, the
segmenter's box); the members are merged and sorted by post id.  Those entries carry real
poses, so their descriptors are computed here for any descriptor kind (``coco17`` for COCO-17
poses from other tools, as issue #4 asked).
"""

from __future__ import annotations

import hashlib
import numbers
import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..errors import KeypointError, PoseIndexError
from ..weights import file_sha256
from .descriptor import DESCRIPTOR_KINDS, PoseKeypoints
from .safe_pickle import Recorded, load_data_pickle
from .store import IndexEntry

__all__ = ["NEIGHBORS", "FULL_BODY", "INTENTLY", "MAX_MEMBER_BYTES", "MAX_TOTAL_BYTES", "MAX_RATIO", "post_url",
           "post_id", "hit_record", "FittedNeighbors", "read_neighbors", "support_post_ids", "DanbooruSupport",
           "open_support"]

NEIGHBORS = "_data/danbooru/preprocessed/pose_descriptors/neighbors.pkl"
FULL_BODY = "_data/danbooru/preprocessed/pose_descriptors/full_body.pkl"
INTENTLY = "_data/danbooru/_filters/intently.csv"

#: the most one zip member may unpack to, and all members read from one zip together (the
#: release's files are far smaller); larger sizes in a zip's headers are refused before reading
MAX_MEMBER_BYTES = 8 << 30
MAX_TOTAL_BYTES = 16 << 30
#: the highest compression ratio accepted for a member over 1 MiB (pickled arrays compress
#: little; a zip bomb compresses about 1000:1)
MAX_RATIO = 200


def post_url(post_id: int) -> str:
    """The Danbooru link the reference prints for a post id."""
    return f"https://danbooru.donmai.us/posts/{int(post_id)}"


def post_id(tags: Any) -> int | None:
    """The Danbooru post of a support-set entry (its tags' ``danbooru_id``, an int), or None for
    any other entry (tags that are not a dict, or hold no integer ``danbooru_id``)."""
    pid = tags.get("danbooru_id") if isinstance(tags, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) else None


def hit_record(hit, tags: dict) -> dict:
    """A query result as JSON (``index query --json``, the node's ``results_json``):
    ``{rank, distance, source, mirrored}``, plus ``danbooru_id`` and ``link`` for a support-set
    entry (:func:`post_id`)."""
    record = {"rank": hit.rank, "distance": hit.distance, "source": hit.source, "mirrored": hit.mirrored}
    pid = post_id(tags)
    if pid is not None:
        record.update(danbooru_id=pid, link=post_url(pid))
    return record


def _post_sha(post_id: int) -> str:
    """The content hash of a support entry: its post id (a re-import skips what is there)."""
    return hashlib.sha256(f"danbooru-post:{int(post_id)}".encode()).hexdigest()


@dataclass(frozen=True)
class FittedNeighbors:
    """What a pickled ``NearestNeighbors`` holds that a search needs.

    Attributes:
        fit_x: float64 (N, D) the fitted descriptors, row order.
        n_neighbors: the fit-time k (``kneighbors`` without an argument returns that many).
        sklearn_version: the version that wrote the file (``_sklearn_version``), or None.
    """

    fit_x: np.ndarray
    n_neighbors: int
    sklearn_version: str | None


def _short(value: Any) -> str:
    """``repr(value)`` on one line, at most 60 characters (for messages)."""
    return " ".join(repr(value).split())[:60]


def read_neighbors(obj: Any, source: str) -> FittedNeighbors:
    """Check the state of an unpickled ``NearestNeighbors`` stand-in and take its data.

    Args:
        obj: what :func:`.safe_pickle.load_data_pickle` read from ``neighbors.pkl`` (a
            :class:`.safe_pickle.Recorded` ``NearestNeighbors`` whose state is a dict).
        source: the file's name, for messages.

    Returns:
        the fitted rows as float64 (N, D), the fit-time ``n_neighbors`` (5 when absent) and
        the scikit-learn version that wrote the file.

    Raises:
        PoseIndexError: not a ``NearestNeighbors``, no fitted 2-D numeric ``_fit_X``, a metric
            other than Euclidean (named in the message), or metric settings of the wrong types.
    """
    if not (isinstance(obj, Recorded) and obj.qualname.endswith(".NearestNeighbors") and isinstance(obj.state, dict)):
        found = obj.qualname if isinstance(obj, Recorded) else type(obj).__name__
        raise PoseIndexError(f"{source}: expected a pickled scikit-learn NearestNeighbors, found {found}")
    state = obj.state
    x = state.get("_fit_X")
    if not (isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype.kind in "fiu" and x.size):
        raise PoseIndexError(f"{source}: the NearestNeighbors holds no fitted 2-D numeric data (_fit_X); "
                             "was it fitted before it was saved?")
    metric = state.get("effective_metric_", state.get("metric"))
    params = state.get("effective_metric_params_")
    if not isinstance(params, (Mapping, type(None))):
        raise PoseIndexError(f"{source}: the neighbours' effective_metric_params_ is a {type(params).__name__}, "
                             "not a dict; the file is damaged or not the release's neighbors.pkl")
    params = dict(params or {})
    p = params.pop("p", state.get("p"))
    two = isinstance(p, numbers.Real) and not isinstance(p, bool) and p == 2
    if not (isinstance(metric, str) and (metric in ("euclidean", "l2") or (metric == "minkowski" and two))
            and not params):
        raise PoseIndexError(f"{source}: the neighbours were fitted with metric {_short(metric)} (p={_short(p)}, "
                             f"params {_short(params)}); only the reference's Euclidean distance is supported")
    k = state.get("n_neighbors")
    version = state.get("_sklearn_version")
    return FittedNeighbors(np.asarray(x, dtype=np.float64), int(k) if isinstance(k, (int, np.integer)) else 5,
                           str(version) if version is not None else None)


def support_post_ids(intently_csv: bytes, full_body: Any, source: str) -> list[int]:
    """The reference's post ids of the rows: ``sorted(intently ∩ full_body)``.

    Args:
        intently_csv: the bytes of ``intently.csv`` (one post id per non-empty line).
        full_body: the unpickled ``full_body.pkl`` (a list, set, tuple or array of ints).
        source: the name of ``full_body.pkl`` (the file, or ``zip:member``), for messages.

    Returns:
        the post ids of the rows, ascending.

    Raises:
        PoseIndexError: a line that is not an integer, or ``full_body`` not a collection of ints.
    """
    ids = set()
    for number, line in enumerate(intently_csv.decode("utf-8", "replace").split("\n"), start=1):
        if line:
            try:
                ids.add(int(line))
            except ValueError:
                raise PoseIndexError(f"{source}: line {number} of intently.csv is not a post id: {line[:40]!r}") from None
    if isinstance(full_body, np.ndarray) and full_body.dtype.kind in "iuO":  # others (even 0-byte items) refused
        full_body = full_body.tolist()
    if not (isinstance(full_body, (list, tuple, set, frozenset))
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in full_body)):
        raise PoseIndexError(f"{source}: full_body.pkl must hold a collection of integer post ids, "
                             f"got {type(full_body).__name__}")
    return sorted(ids & {int(v) for v in full_body})


class _Files:
    """Files of the authors' release: a zip archive or a folder, found by their release path
    (``_data/...``, under any top folder) or, failing that, by their file name alone."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        self.names = ([n for n in self.zip.namelist() if not n.endswith("/")] if self.zip else
                      [str(p.relative_to(path)).replace(os.sep, "/") for p in path.rglob("*") if p.is_file()])
        self.unpacked = 0  # bytes of the zip members opened so far

    def find(self, release_path: str) -> str | None:
        """The name (as in :attr:`names`) of a release file: the one at ``release_path`` (under
        any top folder), else the first with its file name, else None."""
        base = release_path.rsplit("/", 1)[1]
        for match in (lambda n: n == release_path or n.endswith("/" + release_path),
                      lambda n: n.rsplit("/", 1)[-1] == base):
            found = sorted(n for n in self.names if match(n))
            if found:
                return found[0]
        return None

    def open(self, name: str) -> IO[bytes]:
        """A binary stream of the file ``name`` (one of :attr:`names`).

        Raises:
            PoseIndexError: a zip member whose header says it unpacks to more than
                :data:`MAX_MEMBER_BYTES`, past :data:`MAX_TOTAL_BYTES` with the members opened
                before, or (over 1 MiB) more than :data:`MAX_RATIO` times its compressed size.
            OSError: the file cannot be read.
        """
        if not self.zip:
            return open(self.path / name, "rb")
        info = self.zip.getinfo(name)
        size, packed = info.file_size, info.compress_size
        self.unpacked += size
        if size > MAX_MEMBER_BYTES or self.unpacked > MAX_TOTAL_BYTES:
            raise PoseIndexError(f"{self.label(name)}: the zip says it unpacks to {size} bytes ({self.unpacked} with "
                                 f"the members before it), over the limit of {MAX_MEMBER_BYTES} per member and "
                                 f"{MAX_TOTAL_BYTES} in all; it is not the authors' release")
        if size > 1 << 20 and size > MAX_RATIO * max(packed, 1):
            raise PoseIndexError(f"{self.label(name)}: compressed {size // max(packed, 1)}:1 ({packed} bytes unpack "
                                 f"to {size}), over {MAX_RATIO}:1: a zip bomb, not the authors' release")
        return self.zip.open(info)

    def label(self, name: str) -> str:
        """``name`` for messages: ``archive.zip:member`` or the file's path."""
        return f"{self.path}:{name}" if self.zip else str(self.path / name)

    def close(self) -> None:
        if self.zip:
            self.zip.close()


@dataclass
class DanbooruSupport:
    """The support set found at a path: what :func:`open_support` returns.

    Attributes:
        kind: ``"neighbors"`` (link-only entries from ``neighbors.pkl``) or ``"raw"``
            (poses from ``raw_retrieval_support.zip``).
        descriptor_kind: the index kind the entries need (``"all25"`` / ``"coco17"``; for
            ``"raw"`` the one asked for).
        count: the number of entries.
        model: what the index records about its source (file names, sha256, fit settings).
        entries: an iterator of :class:`~.store.IndexEntry`, in row (or post id) order.
    """

    kind: str
    descriptor_kind: str
    count: int
    model: dict
    entries: Iterator[IndexEntry]


def _neighbors_support(files: _Files, names: dict[str, str]) -> DanbooruSupport:
    """Link-only entries from the release's three files (:func:`read_neighbors`,
    :func:`support_post_ids`): one per fitted row, in row order.

    Args:
        files: the release.
        names: ``{"neighbors", "full_body", "intently"}`` -> their names in ``files``.

    Raises:
        PoseIndexError: the files disagree on the number of rows, descriptors of an unknown
            length, or negative / non-finite descriptor values; see also the functions above.
    """
    with files.open(names["neighbors"]) as f:
        fitted = read_neighbors(load_data_pickle(f, files.label(names["neighbors"])), files.label(names["neighbors"]))
    with files.open(names["full_body"]) as f:
        full_body = load_data_pickle(f, files.label(names["full_body"]))
    with files.open(names["intently"]) as f:
        intently = f.read()
    ids = support_post_ids(intently, full_body, files.label(names["full_body"]))
    n, dims = fitted.fit_x.shape
    if len(ids) != n:
        raise PoseIndexError(f"{files.path}: intently.csv and full_body.pkl give {len(ids)} post ids for the {n} "
                             "rows of neighbors.pkl; the three files must come from the same release")
    kinds = {k.dims: name for name, k in DESCRIPTOR_KINDS.items()}
    if dims not in kinds:
        raise PoseIndexError(f"{files.label(names['neighbors'])}: descriptors of {dims} values; expected "
                             f"{' or '.join(f'{d} ({k})' for d, k in kinds.items())}")
    x = fitted.fit_x
    if not np.isfinite(x).all() or (x < 0).any():
        raise PoseIndexError(f"{files.label(names['neighbors'])}: the fitted descriptors hold negative or "
                             "non-finite values; they are not pose distances")
    model = {"support_set": "danbooru", "n_neighbors": fitted.n_neighbors, "sklearn_version": fitted.sklearn_version,
             "files": {key: Path(name).name for key, name in names.items()}}
    entries = (IndexEntry(None, post_url(pid), _post_sha(pid), tags={"danbooru_id": pid}, descriptor=row)
               for pid, row in zip(ids, x))
    return DanbooruSupport("neighbors", kinds[dims], n, model, entries)


def _post_id(key: Any, source: str) -> int:
    """A raw support dict's key as a post id: an int, or a str / bytes of decimal digits.

    Raises:
        PoseIndexError: any other key (named, shortened, in the message).
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    text = key.decode("latin1") if isinstance(key, bytes) else key
    if isinstance(text, str) and text.strip().isdecimal():
        return int(text)
    raise PoseIndexError(f"{source}: expected post ids as keys, got {_short(key)}")


def _raw_pose(pid: int, out: Any, source: str) -> PoseKeypoints:
    """The pose of one raw model output (``keypoints`` (row, col), ``bbox`` [(row0, col0), (h, w)])."""
    if not (isinstance(out, dict) and "keypoints" in out and "bbox" in out):
        keys = sorted(map(str, out)) if isinstance(out, dict) else type(out).__name__
        raise PoseIndexError(f"{source}: post {pid}: expected a dict with 'keypoints' and 'bbox', got {keys}")
    kps = out["keypoints"]
    if isinstance(kps, np.ndarray) and kps.dtype.itemsize == 0:  # 10**9 of them cost no bytes in the file
        raise PoseIndexError(f"{source}: post {pid}: keypoints must be numbers, got an array of {kps.dtype}")
    try:
        rc = np.asarray(out["keypoints"], dtype=np.float64)
        (row0, col0), (h, w) = out["bbox"]
        if rc.ndim != 2 or rc.shape[1] < 2:
            raise KeypointError(f"keypoints must be (J, 2) (row, col), got shape {rc.shape}")
        return PoseKeypoints.create(rc[:, 1::-1], (float(col0), float(row0), float(w), float(h)))
    except (KeypointError, TypeError, ValueError) as e:
        raise PoseIndexError(f"{source}: post {pid}: {e}") from None


def _raw_support(files: _Files, kind: str) -> DanbooruSupport:
    """Entries with poses from the raw support pickles (every ``*.pkl`` in ``files``: dicts
    of post id -> model output, merged), in post id order, for descriptors of ``kind``.

    Raises:
        PoseIndexError: no ``*.pkl``, a pickle that is not a dict, a key that is not a post id,
            or an output without usable ``keypoints`` / ``bbox`` (:func:`_raw_pose`).
    """
    members = sorted(n for n in files.names if n.endswith(".pkl"))
    if not members:
        raise PoseIndexError(f"{files.path}: neither the release's neighbors.pkl nor raw support pickles (*.pkl) "
                             "found; give bizarre_pose_models.zip, its extracted folder, or raw_retrieval_support.zip")
    merged: dict[int, Any] = {}
    for name in members:
        with files.open(name) as f:
            part = load_data_pickle(f, files.label(name))
        if not isinstance(part, dict):
            raise PoseIndexError(f"{files.label(name)}: expected a dict of post id -> model outputs, "
                                 f"got {type(part).__name__}")
        merged.update((_post_id(k, files.label(name)), v) for k, v in part.items())
    poses = [(pid, _raw_pose(pid, merged[pid], str(files.path))) for pid in sorted(merged)]
    model = {"support_set": "danbooru raw", "files": {"raw_support": files.path.name}}
    entries = (IndexEntry(pose, post_url(pid), _post_sha(pid), tags={"danbooru_id": pid}) for pid, pose in poses)
    return DanbooruSupport("raw", kind, len(poses), model, entries)


def open_support(path: str | os.PathLike, kind: str | None = None) -> DanbooruSupport:
    """The support set at ``path``: ``bizarre_pose_models.zip``, a folder (the extracted release,
    or one holding ``neighbors.pkl``, ``full_body.pkl`` and ``intently.csv``), or
    ``raw_retrieval_support.zip``.

    Everything is read and checked here (pickles through the allow-list; a zip's members
    within :data:`MAX_MEMBER_BYTES`, :data:`MAX_TOTAL_BYTES` and :data:`MAX_RATIO`); the returned
    entries only build records.  The file's sha256 (a zip; the recorded one when the download is
    unchanged, :func:`~illustpose.weights.file_sha256`) is added to ``model``.

    Args:
        kind: descriptor kind for raw support (default ``"all25"``); for ``neighbors.pkl``
            the kind is that of its descriptors, and asking for another one is refused.

    Raises:
        PoseIndexError: missing or mismatched files, unexpected content.
        UnsafeCheckpointError: a pickle names a global outside the allow-list (nothing runs).
        CheckpointError: a damaged pickle.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise PoseIndexError(f"{p}: no such file or folder; give bizarre_pose_models.zip, its extracted folder, "
                             "or raw_retrieval_support.zip")
    try:
        files = _Files(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise PoseIndexError(f"{p}: not a readable zip archive or folder ({e})") from None
    try:
        names = {key: files.find(rel) for key, rel in
                 (("neighbors", NEIGHBORS), ("full_body", FULL_BODY), ("intently", INTENTLY))}
        if names["neighbors"]:
            missing = [rel for key, rel in (("full_body", FULL_BODY), ("intently", INTENTLY)) if not names[key]]
            if missing:
                raise PoseIndexError(f"{p} has neighbors.pkl but lacks {', '.join(missing)}: the post id of each "
                                     "row comes from them; give the whole release")
            support = _neighbors_support(files, names)
            if kind is not None and kind != support.descriptor_kind:
                raise PoseIndexError(f"{p}: neighbors.pkl holds {support.descriptor_kind} descriptors, not {kind}; "
                                     "other kinds need raw_retrieval_support.zip (the poses)")
        else:
            support = _raw_support(files, kind or "all25")
    finally:
        files.close()
    if p.is_file():
        support.model["sha256"] = file_sha256(p)
    return support
