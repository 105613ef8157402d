"""The pose reference index: one SQLite file of poses and their descriptors, searchable.

Layout (format version :data:`FORMAT_VERSION`; ``PRAGMA application_id`` = :data:`APPLICATION_ID`,
journal in WAL mode):

* ``meta(key, value)``: ``format`` (``"illustpose.pose_index"``), ``format_version``,
  ``descriptor_kind`` / ``descriptor_dims`` / ``descriptor_joints``, ``crop_size`` /
  ``crop_padding`` (the crop frame), ``model`` (JSON: the weights that produced the poses),
  ``created`` (ISO-8601 UTC), ``illustpose_version``;
* ``entries``: ``id`` (INTEGER PRIMARY KEY, from 1, never reused), ``source`` (path or URL
  of the reference image), ``sha256`` (content hash, indexed), ``image_width`` /
  ``image_height`` (pixels, NULL if unknown), ``bbox_x/y/w/h`` (COCO pixels), ``keypoints``
  (float64 little-endian (25, 3) ``x, y, score``; NaN, NaN, 0 for an absent joint),
  ``present`` (bit j = joint j present), ``descriptor`` (float32 little-endian (D,), NaN
  at pairs with an absent joint), ``tags`` (JSON object), ``added`` (ISO-8601 UTC).

Link-only entries (:attr:`IndexEntry.descriptor` given, no pose: the authors' Danbooru support
set imported from ``neighbors.pkl``, :mod:`.danbooru`) have an empty ``keypoints`` blob, a zero
bbox, every joint of the kind present, and their link as ``source``; :meth:`PoseIndex.get`
returns them with ``pose`` None, and :meth:`PoseIndex.export_coco` leaves them out.

Crash safety: :meth:`PoseIndex.add` commits every ``batch_size`` entries in one transaction
(``synchronous=FULL``); a crash or ``kill -9`` loses at most the batch in flight and never
corrupts the file (SQLite's WAL guarantees).  The search matrix (:mod:`.search`) is loaded
once, at the first query, and then only rows with a larger id are read (rows added by this
handle or by another process).

Interface words follow sqlite-utils (a handle owning the file, ``add``/``close``, context
manager) and annoy (``query`` -> ids with distances), except that the descriptor kind is
read from the file and a mismatch is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from numbers import Integral
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from .. import __version__
from ..errors import PoseIndexError
from ..datasets import write_coco
from ..keypoints import KeypointError, to_coco_annotation
from ..results import PoseResult
from ..registry import POSE_CROP_PADDING as CROP_PADDING
from ..registry import POSE_CROP_SIZE as CROP_SIZE
from .descriptor import (
    NUM_JOINTS,
    DescriptorKind,
    PoseKeypoints,
    descriptor_kind,
    pose_descriptors,
)
from .search import DEFAULT_MIN_JOINTS, DescriptorSearch

__all__ = ["FORMAT", "FORMAT_VERSION", "APPLICATION_ID", "IndexEntry", "StoredEntry", "Hit",
           "AddResult", "PoseIndex"]

FORMAT = "illustpose.pose_index"
FORMAT_VERSION = 1
#: ``PRAGMA application_id`` of an index file ("IPOS").
APPLICATION_ID = 0x49504F53

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    image_width INTEGER,
    image_height INTEGER,
    bbox_x REAL NOT NULL, bbox_y REAL NOT NULL, bbox_w REAL NOT NULL, bbox_h REAL NOT NULL,
    keypoints BLOB NOT NULL,
    present INTEGER NOT NULL,
    descriptor BLOB NOT NULL,
    tags TEXT NOT NULL,
    added TEXT NOT NULL
);
CREATE INDEX entries_sha256 ON entries (sha256);
"""
_SQLITE_MAGIC = b"SQLite format 3\x00"
_LOAD_PAGE = 65536  # rows per fetch when loading the search matrix
_MAX_VARS = 500  # host parameters per statement (SQLite's old default limit is 999)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_BIT_VALUES = 1 << np.arange(NUM_JOINTS, dtype=np.int64)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _mask_bits(present: np.ndarray) -> int:
    """Bit mask of a bool (25,) joint presence vector (bit j = joint j)."""
    return int(_BIT_VALUES[present].sum())


@dataclass(frozen=True)
class IndexEntry:
    """One pose to add to an index.

    Attributes:
        pose: the pose (its bbox defines the crop frame of the descriptor); None for a
            link-only entry, which gives ``descriptor`` instead.
        source: path or URL of the reference image (or pose file), shown in query results.
        sha256: hex content hash used to skip duplicates (the CLI hashes the file's bytes);
            None = :meth:`PoseKeypoints.content_hash` of the pose.
        image_size_hw: ``(height, width)`` of the source image in pixels, or None.
        tags: JSON-serialisable mapping stored with the entry (e.g. ``{"character": "x"}``).
        descriptor: for a link-only entry (``pose`` None): its complete descriptor, float
            (D,) of the index's kind, finite and >= 0 (stored as float32); None otherwise.
    """

    pose: PoseKeypoints | None
    source: str
    sha256: str | None = None
    image_size_hw: tuple[int, int] | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)
    descriptor: np.ndarray | None = None

    @classmethod
    def from_pose_result(cls, result: PoseResult, source: str, *, sha256: str | None = None,
                         tags: Mapping[str, Any] | None = None, min_score: float | None = None) -> "IndexEntry":
        """An entry from the estimator's output (its image size and bbox included)."""
        return cls(PoseKeypoints.from_pose_result(result, min_score), str(source), sha256,
                   tuple(int(v) for v in result.image_size_hw), dict(tags or {}))


@dataclass(frozen=True)
class StoredEntry:
    """An entry as stored (see the module docstring for the columns); ``pose`` is None for a
    link-only entry."""

    id: int
    source: str
    sha256: str
    image_size_hw: tuple[int, int] | None
    pose: PoseKeypoints | None
    tags: dict
    added: str


class Hit(NamedTuple):
    """One query result.

    Attributes:
        rank: 1 for the nearest.
        distance: crop-frame pixels (:mod:`.search` gives the formula).
        id: the entry id (:meth:`PoseIndex.get` returns the entry).
        source: the entry's source path or URL.
        mirrored: True when the mirrored query matched (``mirror=True`` only).
    """

    rank: int
    distance: float
    id: int
    source: str
    mirrored: bool


@dataclass(frozen=True)
class AddResult:
    """What :meth:`PoseIndex.add` did: ids of the new entries; sources skipped as duplicates."""

    added_ids: list[int]
    skipped: list[str]


def _check_header(path: Path) -> None:
    """Refuse files that are not SQLite, or SQLite files of another application."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except OSError as e:
        raise PoseIndexError(f"{path}: cannot read the index file ({e.strerror or e})") from None
    if not head:
        raise PoseIndexError(
            f"{path} is an empty file, not a pose index; delete it and run `index build` again"
        )
    if not head.startswith(_SQLITE_MAGIC):
        raise PoseIndexError(
            f"{path} is not a pose index: not an SQLite database (it starts with {head[:16]!r}); "
            "check the path, or rebuild the index with `python -m illustpose index build`"
        )
    app_id = int.from_bytes(head[68:72], "big")
    if app_id != APPLICATION_ID:
        raise PoseIndexError(
            f"{path} is an SQLite database of another application (application_id {app_id:#010x}, "
            f"expected {APPLICATION_ID:#010x}), not an illustpose pose index; check the path"
        )


def _create(path: Path, kind: DescriptorKind, model: Mapping[str, Any] | None) -> None:
    """Write an empty index to a temporary file and link it into place (never half-created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "descriptor_kind": kind.name,
        "descriptor_dims": str(kind.dims),
        "descriptor_joints": str(kind.num_joints),
        "crop_size": str(CROP_SIZE),
        "crop_padding": repr(CROP_PADDING),
        "model": json.dumps(dict(model or {}), sort_keys=True),
        "created": _now(),
        "illustpose_version": __version__,
    }
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript("BEGIN;" + _SCHEMA + "COMMIT;")
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
            conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(tmp, path)  # atomic, and never replaces an index created meanwhile
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: atomic rename instead
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _json_tags(tags: Mapping[str, Any], where: str) -> str:
    try:
        return json.dumps(dict(tags), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise PoseIndexError(f"{where}: tags must be a JSON-serialisable mapping ({e})") from None


class PoseIndex:
    """A pose reference index stored in one SQLite file.

    Args:
        path: the ``.sqlite`` file.
        create: create the file (and its folder) when it does not exist.
        kind: descriptor kind of a new index (default ``"all25"``); for an existing one, the
            kind it must have (None accepts what is stored).
        model: for a new index, the weights that produce its poses, e.g.
            ``{"segmenter": "...", "pose": "..."}`` (recorded in the metadata).
        backend: search backend, ``"numpy"`` (exact, default) or ``"faiss"``
            (see :mod:`.search`).

    Raises:
        PoseIndexError: the file is missing (and ``create`` is False), empty, not SQLite, an
            SQLite file of another application, corrupt, of a newer format, built with
            another descriptor kind or crop than asked/supported; or an unknown backend.

    Use it as a context manager, or call :meth:`close`.  One handle may be shared between
    threads (calls are serialised); several processes may open the same file (SQLite WAL:
    one writer at a time, readers never blocked).
    """

    def __init__(self, path: str | os.PathLike, *, create: bool = False, kind: str | None = None,
                 model: Mapping[str, Any] | None = None, backend: str = "numpy"):
        self.path = Path(path)
        self.backend = backend
        self._lock = threading.RLock()
        self._search: DescriptorSearch | None = None  # rows are loaded at the first query (_sync)
        self._synced_id = 0
        self._closed = False
        if not self.path.exists():
            if not create:
                raise PoseIndexError(
                    f"{self.path}: no such pose index; create it with "
                    f"`python -m illustpose index build {self.path} FOLDER`"
                )
            _create(self.path, descriptor_kind(kind or "all25"), model)
        _check_header(self.path)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0,
                                         check_same_thread=False)
        except sqlite3.Error as e:
            raise PoseIndexError(f"{self.path}: cannot open the index ({e})") from None
        try:
            self._meta = self._read_meta()
            self.kind = self._check_meta(kind)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._search = DescriptorSearch(self.kind, backend)  # a bad backend fails here
        except sqlite3.DatabaseError as e:
            self._conn.close()
            raise self._corrupt(e) from None
        except BaseException:
            self._conn.close()
            raise

    # ------------------------------------------------------------------ opening

    def _corrupt(self, e: Exception) -> PoseIndexError:
        return PoseIndexError(
            f"{self.path} is corrupt or unreadable ({e}); restore it from a backup or rebuild it "
            "with `python -m illustpose index build`"
        )

    def _read_meta(self) -> dict[str, str]:
        try:
            return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                raise PoseIndexError(
                    f"{self.path} has the application id of a pose index but no 'meta' table; "
                    "it is damaged: rebuild it with `python -m illustpose index build`"
                ) from None
            raise self._corrupt(e) from None
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from None

    def _check_meta(self, kind: str | None) -> DescriptorKind:
        m = self._meta
        if m.get("format") != FORMAT:
            raise PoseIndexError(f"{self.path}: format {m.get('format')!r}, expected {FORMAT!r}; not a pose index")
        try:
            version = int(m.get("format_version", ""))
        except ValueError:
            raise PoseIndexError(f"{self.path}: bad format_version {m.get('format_version')!r}") from None
        if version > FORMAT_VERSION:
            raise PoseIndexError(
                f"{self.path} has index format {version}, this illustpose ({__version__}) reads "
                f"format {FORMAT_VERSION} or older; upgrade illustpose"
            )
        stored = descriptor_kind(m.get("descriptor_kind"))
        if m.get("descriptor_dims") != str(stored.dims):
            raise PoseIndexError(
                f"{self.path}: descriptor_dims {m.get('descriptor_dims')} does not match kind "
                f"{stored.name!r} ({stored.dims}); the file is damaged"
            )
        if (m.get("crop_size"), m.get("crop_padding")) != (str(CROP_SIZE), repr(CROP_PADDING)):
            raise PoseIndexError(
                f"{self.path} was built with crop size {m.get('crop_size')} / padding "
                f"{m.get('crop_padding')}; this version computes {CROP_SIZE} / {CROP_PADDING}: rebuild it"
            )
        if kind is not None and descriptor_kind(kind).name != stored.name:
            raise PoseIndexError(
                f"{self.path} was built with the {stored.name!r} descriptor ({stored.dims}-D), "
                f"not {kind!r}; use a new index file for {kind!r} (descriptor kinds cannot be mixed)"
            )
        return stored

    # ------------------------------------------------------------------ handle

    def close(self) -> None:
        """Close the file (idempotent); the cached search matrix is released."""
        with self._lock:
            self._conn.close()
            self._search = None
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise PoseIndexError(f"{self.path}: the index is closed; open it again with PoseIndex(path)")

    def __enter__(self) -> "PoseIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _execute(self, sql: str, params=()) -> list:
        self._check_open()
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from None

    @property
    def model(self) -> dict:
        """The weights recorded at creation (``{}`` when none were)."""
        return json.loads(self._meta.get("model") or "{}")

    def record_model(self, model: Mapping[str, Any]) -> None:
        """Record the weights that produce the index's poses (:attr:`model`), replacing what
        was recorded: for an index that has no entries yet (``index build`` records the files
        it loads once it loads them)."""
        value = json.dumps(dict(model), sort_keys=True)
        with self._lock:
            self._execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('model', ?)", (value,))
            self._meta["model"] = value

    def __len__(self) -> int:
        with self._lock:
            return self._execute("SELECT count(*) FROM entries")[0][0]

    def has_content(self, sha256: str) -> bool:
        """Whether an entry with this content hash exists (what ``index build`` skips)."""
        with self._lock:
            return bool(self._execute("SELECT 1 FROM entries WHERE sha256 = ? LIMIT 1", (sha256,)))

    # ------------------------------------------------------------------ writing

    def add(self, entries: Iterable[IndexEntry], *, allow_duplicates: bool = False, batch_size: int = 256,
            on_commit: Callable[[int], None] | None = None) -> AddResult:
        """Add poses, committing every ``batch_size`` entries in one transaction.

        Args:
            entries: :class:`IndexEntry` items (any iterable; consumed lazily, so a generator
                that runs the model is fine).
            allow_duplicates: add entries whose ``sha256`` is already stored (or repeated).
            batch_size: entries per transaction (>= 1); a crash loses at most one batch.
            on_commit: called after each commit with the number of entries added so far.

        Returns:
            :class:`AddResult`.

        Raises:
            PoseIndexError: a malformed entry (its position and source named; the batches
                before it stay committed, its own batch is not written) or a write failure.
        """
        if batch_size < 1:
            raise PoseIndexError(f"batch_size must be >= 1, got {batch_size}")
        result = AddResult([], [])
        batch: list[IndexEntry] = []
        for position, entry in enumerate(entries):
            if not isinstance(entry, IndexEntry) or not (
                    isinstance(entry.pose, PoseKeypoints) or (entry.pose is None and entry.descriptor is not None)):
                raise PoseIndexError(
                    f"entry {position}: expected an IndexEntry holding a PoseKeypoints (or a descriptor and no "
                    f"pose), got {type(entry).__name__}"
                )
            batch.append(entry)
            if len(batch) == batch_size:
                self._insert(batch, position - len(batch) + 1, allow_duplicates, result, on_commit)
                batch = []
        if batch:
            self._insert(batch, position - len(batch) + 1, allow_duplicates, result, on_commit)
        return result

    def _rows(self, batch: list[IndexEntry], first: int) -> list[tuple]:
        """Validated column values of a batch (without the id), descriptors computed together."""
        poses = [e.pose for e in batch if e.pose is not None]
        desc = iter(pose_descriptors(np.stack([p.keypoints for p in poses]), np.array([p.bbox_xywh for p in poses]),
                                     self.kind) if poses else ())
        rows, added = [], _now()
        for n, entry in enumerate(batch):
            where = f"entry {first + n} ({entry.source!r})"
            if not isinstance(entry.source, str) or not entry.source:
                raise PoseIndexError(f"{where}: source must be a non-empty string")
            if entry.pose is None:
                rows.append(self._link_row(entry, where, added))
                continue
            d = next(desc)
            sha = entry.sha256 or entry.pose.content_hash()
            if not (isinstance(sha, str) and _SHA256_HEX.fullmatch(sha)):
                raise PoseIndexError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha!r}")
            hw = entry.image_size_hw
            if hw is not None:
                if not (len(hw) == 2 and all(isinstance(v, Integral) and v > 0 for v in hw)):
                    raise PoseIndexError(f"{where}: image_size_hw must be (height, width) positive ints, got {hw!r}")
                hw = (int(hw[0]), int(hw[1]))
            p = entry.pose
            kps = np.concatenate([p.keypoints, p.scores[:, None]], axis=1).astype("<f8")
            rows.append((entry.source, sha, None if hw is None else hw[1], None if hw is None else hw[0],
                         *p.bbox_xywh, kps.tobytes(), _mask_bits(p.present), d.astype("<f4").tobytes(),
                         _json_tags(entry.tags, where), added))
        return rows

    def _link_row(self, entry: IndexEntry, where: str, added: str) -> tuple:
        """The column values of a link-only entry (see the module docstring)."""
        try:
            d = np.asarray(entry.descriptor, dtype=np.float64)
        except (TypeError, ValueError):
            raise PoseIndexError(f"{where}: descriptor must be numbers") from None
        if d.shape != (self.kind.dims,) or not np.isfinite(d).all() or (d < 0).any():
            raise PoseIndexError(f"{where}: a link-only descriptor must be {self.kind.dims} finite distances >= 0 "
                                 f"({self.kind.name} index), got shape {d.shape}")
        d32 = d.astype("<f4")
        sha = entry.sha256 or hashlib.sha256(b"illustpose-descriptor-v1" + d32.tobytes()).hexdigest()
        if not (isinstance(sha, str) and _SHA256_HEX.fullmatch(sha)):
            raise PoseIndexError(f"{where}: sha256 must be 64 lowercase hex digits, got {sha!r}")
        return (entry.source, sha, None, None, 0.0, 0.0, 0.0, 0.0, b"", self.kind.full_mask, d32.tobytes(),
                _json_tags(entry.tags, where), added)

    def _insert(self, batch: list[IndexEntry], first: int, allow_duplicates: bool, result: AddResult,
                on_commit: Callable[[int], None] | None) -> None:
        try:
            rows = self._rows(batch, first)
        except KeypointError as e:
            raise PoseIndexError(f"entries {first}..{first + len(batch) - 1}: {e}") from None
        with self._lock:
            self._check_open()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    known = set()
                    if not allow_duplicates:
                        hashes = sorted({r[1] for r in rows})
                        for i in range(0, len(hashes), _MAX_VARS):
                            chunk = hashes[i:i + _MAX_VARS]
                            known.update(h for (h,) in self._conn.execute(
                                f"SELECT sha256 FROM entries WHERE sha256 IN ({','.join('?' * len(chunk))})", chunk))
                    next_id = self._conn.execute("SELECT coalesce(max(id), 0) + 1 FROM entries").fetchone()[0]
                    new = []
                    for r in rows:
                        if r[1] in known:
                            result.skipped.append(r[0])
                            continue
                        if not allow_duplicates:
                            known.add(r[1])
                        new.append((next_id + len(new), *r))
                    self._conn.executemany(
                        "INSERT INTO entries (id, source, sha256, image_width, image_height, bbox_x, bbox_y, "
                        "bbox_w, bbox_h, keypoints, present, descriptor, tags, added) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", new)
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as e:
                raise PoseIndexError(f"{self.path}: could not write entries {first}.. ({e})") from None
        result.added_ids.extend(row[0] for row in new)
        if on_commit:
            on_commit(len(result.added_ids))

    # ------------------------------------------------------------------ reading

    def _stored(self, row) -> StoredEntry:
        eid, source, sha, w, h, bx, by, bw, bh, kps, present, tags, added = row
        if not kps:  # a link-only entry
            return StoredEntry(eid, source, sha, None, None, json.loads(tags), added)
        if len(kps) != NUM_JOINTS * 3 * 8:
            raise PoseIndexError(f"{self.path}: entry {eid} has a damaged keypoints blob ({len(kps)} bytes)")
        arr = np.frombuffer(kps, dtype="<f8").reshape(NUM_JOINTS, 3)
        mask = np.array([(present >> j) & 1 for j in range(NUM_JOINTS)], dtype=bool)
        pose = PoseKeypoints(arr[:, :2].astype(np.float64), mask, arr[:, 2].astype(np.float64),
                             (bx, by, bw, bh))
        return StoredEntry(eid, source, sha, None if w is None else (h, w), pose, json.loads(tags), added)

    _ENTRY_COLUMNS = ("id, source, sha256, image_width, image_height, bbox_x, bbox_y, bbox_w, bbox_h, "
                      "keypoints, present, tags, added")

    def get(self, entry_id: int) -> StoredEntry:
        """The stored entry with this id.

        Raises:
            PoseIndexError: no such id.
        """
        with self._lock:
            rows = self._execute(f"SELECT {self._ENTRY_COLUMNS} FROM entries WHERE id = ?", (int(entry_id),))
        if not rows:
            raise PoseIndexError(f"{self.path}: no entry with id {entry_id}")
        return self._stored(rows[0])

    def _sync(self) -> DescriptorSearch:
        """The search matrix, with every committed row not loaded yet appended (one snapshot)."""
        self._check_open()
        dims = self.kind.dims
        try:
            self._conn.execute("BEGIN")  # one read snapshot for the count and the rows
            try:
                count = self._conn.execute("SELECT count(*) FROM entries WHERE id > ?", (self._synced_id,)).fetchone()[0]
                if not count:
                    return self._search
                ids = np.empty(count, dtype=np.int64)
                masks = np.empty(count, dtype=np.int64)
                desc = np.empty((count, dims), dtype=np.float32)
                cur = self._conn.execute("SELECT id, present, descriptor FROM entries WHERE id > ? ORDER BY id",
                                         (self._synced_id,))
                at = 0
                while page := cur.fetchmany(_LOAD_PAGE):
                    page_ids, page_masks, blobs = zip(*page)
                    raw = b"".join(blobs)
                    if len(raw) != len(page) * dims * 4:
                        bad = next(i for i, b in zip(page_ids, blobs) if len(b) != dims * 4)
                        raise PoseIndexError(
                            f"{self.path}: entry {bad} has a damaged descriptor (expected {dims} float32 "
                            f"values of a {self.kind.name} index); rebuild the index"
                        )
                    ids[at:at + len(page)] = page_ids
                    masks[at:at + len(page)] = page_masks
                    desc[at:at + len(page)] = np.frombuffer(raw, dtype="<f4").reshape(len(page), dims)
                    at += len(page)
            finally:
                self._conn.execute("COMMIT")
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from None
        self._search.add(ids, desc, masks)
        self._search.prepare()
        self._synced_id = int(ids[-1])
        return self._search

    def query(self, pose: PoseKeypoints | PoseResult, k: int = 10, *, mirror: bool = False, partial: bool = True,
              min_joints: int = DEFAULT_MIN_JOINTS, min_score: float | None = None) -> list[Hit]:
        """The k indexed poses nearest to ``pose``.

        Args:
            pose: a :class:`PoseKeypoints` or the estimator's :class:`~illustpose.results.PoseResult`.
            k: number of results (>= 1); more than the index holds returns every comparable entry.
            mirror: also match the left/right mirror image of the pose (best of both per entry).
            partial: accept a pose with absent joints (distance renormalised over the pairs
                present, see :mod:`.search`); False refuses it.  A COCO-17 / POSE_KEYPOINT
                pose has 17 of the 25 joints of an ``all25`` index, so it needs ``partial``.
            min_joints: least number of joints the pose must have (and share with an entry).
            min_score: joints scoring below it are absent (:meth:`PoseKeypoints.with_min_score`).

        Returns:
            list of :class:`Hit`, nearest first (ties by id).

        Raises:
            PoseIndexError: empty index, too few joints, absent joints with ``partial=False``,
                bad ``k`` / ``min_joints``, or a corrupt file.
        """
        if isinstance(pose, PoseResult):
            pose = PoseKeypoints.from_pose_result(pose)
        if not isinstance(pose, PoseKeypoints):
            raise PoseIndexError(f"query pose must be a PoseKeypoints or PoseResult, got {type(pose).__name__}")
        try:
            if min_score is not None:
                pose = pose.with_min_score(min_score)
        except KeypointError as e:
            raise PoseIndexError(f"query pose: {e}") from None
        descriptor = pose_descriptors(pose.keypoints, pose.bbox_xywh, self.kind)
        with self._lock:
            search = self._sync()
            if not len(search):
                raise PoseIndexError(
                    f"{self.path} is empty (0 entries): add poses first, e.g. "
                    f"`python -m illustpose index add {self.path} IMAGE_OR_FOLDER`"
                )
            found = search.search(descriptor, _mask_bits(pose.present), k, mirror=mirror, partial=partial,
                                  min_joints=min_joints)
            sources = {}
            id_list = found.ids.tolist()
            for i in range(0, len(id_list), _MAX_VARS):
                chunk = id_list[i:i + _MAX_VARS]
                sources.update(self._execute(
                    f"SELECT id, source FROM entries WHERE id IN ({','.join('?' * len(chunk))})", chunk))
        return [Hit(rank, float(d), int(i), sources[int(i)], bool(m))
                for rank, (i, d, m) in enumerate(zip(found.ids, found.distances, found.mirrored), start=1)]

    def info(self) -> dict[str, Any]:
        """Metadata and counts: path, format_version, descriptor_kind, descriptor_dims,
        descriptor_joints, crop_size, crop_padding, model, created, illustpose_version (of
        the creator), entries, partial_entries (entries missing some of the kind's joints),
        file_bytes (main file, without the WAL)."""
        full = self.kind.full_mask
        with self._lock:
            entries = self._execute("SELECT count(*) FROM entries")[0][0]
            partial = self._execute("SELECT count(*) FROM entries WHERE (present & ?) != ?", (full, full))[0][0]
        m = self._meta
        return {
            "path": str(self.path),
            "format_version": int(m["format_version"]),
            "descriptor_kind": self.kind.name,
            "descriptor_dims": self.kind.dims,
            "descriptor_joints": self.kind.num_joints,
            "crop_size": CROP_SIZE,
            "crop_padding": CROP_PADDING,
            "model": self.model,
            "created": m.get("created"),
            "illustpose_version": m.get("illustpose_version"),
            "entries": entries,
            "partial_entries": partial,
            "file_bytes": self.path.stat().st_size,
        }

    # ------------------------------------------------------------------ export

    def _entries(self) -> Iterable[StoredEntry]:
        """Every stored entry in id order, read page by page (bounded memory)."""
        try:
            cur = self._conn.execute(f"SELECT {self._ENTRY_COLUMNS} FROM entries ORDER BY id")
            while page := cur.fetchmany(_LOAD_PAGE):
                yield from (e for e in map(self._stored, page) if e.pose is not None)
        except sqlite3.DatabaseError as e:
            raise self._corrupt(e) from None

    @staticmethod
    def _coco_image(e: StoredEntry) -> dict:
        item = {"id": e.id, "file_name": e.source}
        if e.image_size_hw:
            item.update(height=e.image_size_hw[0], width=e.image_size_hw[1])
        return item

    @staticmethod
    def _coco_annotation(e: StoredEntry) -> dict:
        from ..characters import joints_present

        p = e.pose
        present = p.present if e.image_size_hw is None else p.present & joints_present(p.keypoints, e.image_size_hw)
        xy = np.where(present[:, None], p.keypoints, 0.0)
        ann = to_coco_annotation(xy, p.scores, p.bbox_xywh, image_id=e.id, ann_id=e.id, present=present)
        return {**ann, "tags": e.tags}

    def export_coco(self, path: str | os.PathLike) -> Path:
        """Write every entry as COCO keypoint JSON (one image + one annotation per entry).

        ``images[i]``: ``id`` (= entry id), ``file_name`` (the source), ``width``/``height``
        when known.  ``annotations[i]``: :func:`illustpose.keypoints.to_coco_annotation`
        (``id`` = ``image_id`` = entry id; present joints ``v = 2``, absent ``[0, 0, 0]``, as are
        joints outside the image, as ``annotate`` marks them;
        ``extra_keypoints`` with the model's 8 extra joints) plus the entry's ``tags``.
        Written by :func:`illustpose.datasets.write_coco` (streamed, atomic), so it is
        complete or absent.  Link-only entries (no pose) are left out.

        Returns:
            the written path.
        """
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        info = {"version": __version__, "date_created": _now(), "descriptor_kind": self.kind.name,
                "model": self.model}
        with self._lock:
            self._check_open()
            return write_coco(out, map(self._coco_image, self._entries()), map(self._coco_annotation, self._entries()),
                              description=f"illustpose pose index export of {self.path.name}", info=info)
