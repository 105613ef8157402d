"""Exact k-nearest-neighbour search over pose descriptors held in memory.

The reference fits scikit-learn's ``NearestNeighbors`` on the descriptors and calls
``kneighbors`` (``_scripts/pose_retrieval.py``): Euclidean distance, exact.  This module
returns the same neighbours (the tests and ``benchmarks/bench_index.py`` compare them),
faster, and adds mirror-aware and partial-pose search.

Distances.  Descriptors are float32 (D,) vectors (:mod:`.descriptor`), NaN at pairs that
involve an absent joint.  Between a query ``q`` and an entry ``x`` whose present joints
share the set ``C`` (``|C| >= min_joints``), with ``P(C)`` the pairs of joints of ``C``::

    distance(q, x) = sqrt( D / |P(C)| * sum over p in P(C) of (x[p] - q[p])**2 )

computed in float64 from the stored float32 values.  With every joint present on both sides
this is the plain Euclidean distance of the reference; otherwise the sum over the pairs
present is rescaled to the full D pairs, so partial and full matches share one scale.
Entries that share fewer than ``min_joints`` joints with the query are left out.

Mirror-aware search ranks each entry by ``min(distance(q, x), distance(mirror(q), x))``
(:func:`.descriptor.mirror_descriptors`) and reports which of the two matched.

How it is exact and fast.  Entries are grouped by their set of present joints.  A group is
*scanned*: float32 distances in cache-sized blocks, whose relative error is at most
``(n + 4) * 2**-24`` (a sum of ``n`` non-negative terms), select every candidate that could
be among the k nearest; the candidates are re-ranked in float64.  The group of complete
poses, once it has :data:`BOUND_MIN_ROWS` entries, is searched with a lower bound instead
(for complete queries; for a partial query's set of joints from its second use, fitted on
those pairs' columns): the rows are projected on the 16 main axes of their covariance
(``V``, fitted on the data), keeping the norm ``r`` of the residual, and::

    |x - q|**2 >= |V'(x - q)|**2 + (r_x - r_q)**2

(Pythagoras plus the reverse triangle inequality).  One float32 product over N x 17 values
bounds every entry (the mirrored query shares the product); a strided sample gives a first
k-th distance, and only entries whose bound
(less a rounding margin that covers float32 error) is below it are measured exactly.  For
skeletons a few dozen rows per query are measured out of a million.  The optional ``"faiss"``
backend (``pip install faiss-cpu``) hands complete-pose queries to ``faiss.IndexFlatL2``
instead, re-ranking its float32 answer in float64 (near-ties within float32 rounding may
order differently from the numpy backend).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import PoseIndexError
from .descriptor import DescriptorKind, mirror_descriptors, pair_mask

__all__ = ["BACKENDS", "DEFAULT_MIN_JOINTS", "BOUND_MIN_ROWS", "SearchResult", "DescriptorSearch"]

#: Search backends: ``"numpy"`` (always available) and ``"faiss"`` (when importable).
BACKENDS = ("numpy", "faiss")
#: Default least number of joints a query must have, and must share with an entry.
DEFAULT_MIN_JOINTS = 5
#: Complete-pose groups at least this large use the projection bound instead of a scan.
BOUND_MIN_ROWS = 4096

_U32 = 2.0 ** -24  # float32 unit roundoff
_BOUND_DIMS = 16
_BOUND_SAMPLE_ROWS = 16384  # rows used to fit the projection
_PROJECT_ROWS = 2048  # rows projected per step (float64 working set in cache)
_BOUND_STRIDE = 32  # 1 in 32 bounds seeds the first k-th distance
_SEED_LIMIT = 4096  # most rows measured exactly to seed the k-th distance
_SCAN_ROWS = 2048  # rows per scan step (the float32 working set stays in cache)
_FAISS_EXTRA = 32  # extra FAISS candidates re-ranked in float64
_PARTIAL_BOUNDS = 4  # projection bounds kept per group for partial-joint masks


@dataclass(frozen=True)
class SearchResult:
    """Neighbours of one query, nearest first (ties by id).

    Attributes:
        ids: int64 (m,) entry ids, ``m <= k`` (fewer when fewer entries are comparable).
        distances: float64 (m,) crop-frame pixel distances (see the module docstring).
        mirrored: bool (m,) True where the mirrored query gave the distance.
    """

    ids: np.ndarray
    distances: np.ndarray
    mirrored: np.ndarray


def _grow(arr: np.ndarray, need: int, axis: int) -> np.ndarray:
    """``arr`` with room for ``need`` items along ``axis`` (x1.5 growth, contents kept)."""
    cap = arr.shape[axis]
    if need <= cap:
        return arr
    shape = list(arr.shape)
    shape[axis] = max(need, cap + cap // 2, 1024)
    out = np.empty(shape, dtype=arr.dtype)
    out[(slice(None),) * axis + (slice(0, cap),)] = arr
    return out


def _exact_d2(rows: np.ndarray, q: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
    """float64 sum of squared differences over ``cols`` (all columns when None)."""
    if cols is not None:
        rows, q = rows[:, cols], q[cols]
    diff = rows.astype(np.float64) - q.astype(np.float64)
    return np.einsum("ij,ij->i", diff, diff)


def _top_k(cand: np.ndarray, d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((cand, d2))[:k]
    return cand[order], d2[order]


def _scan(data: np.ndarray, queries: np.ndarray, cols: np.ndarray | None, k: int) -> list:
    """Exact k nearest rows of ``data`` (n, D) over ``cols`` for each query row (m, D).

    float32 sums of squares in blocks (each block read once for all queries) select the
    candidates; they are re-ranked in float64.  Returns ``[(rows, d2)]`` per query.
    """
    n = data.shape[0]
    sub = queries if cols is None else queries[:, cols]
    approx = np.empty((len(queries), n), dtype=np.float32)
    diff = np.empty((min(n, _SCAN_ROWS), sub.shape[1]), dtype=np.float32)
    for start in range(0, n, _SCAN_ROWS):
        block = data[start:start + _SCAN_ROWS]
        block = block if cols is None else block[:, cols]
        d = diff[:len(block)]
        for qi, q in enumerate(sub):
            np.subtract(block, q, out=d)
            np.multiply(d, d, out=d)
            np.sum(d, axis=1, out=approx[qi, start:start + _SCAN_ROWS])
    eps = (sub.shape[1] + 4) * _U32  # relative error of a float32 sum of that many squares
    out = []
    for q, a in zip(queries, approx):
        kth = float(np.partition(a, k - 1)[k - 1])
        cand = np.flatnonzero(a <= kth * (1 + eps) / (1 - eps))
        out.append(_top_k(cand, _exact_d2(data[cand], q, cols), k))
    return out


class _Rows:
    """A growable float32 (n, D) matrix with an int64 id per row."""

    def __init__(self, dims: int):
        self.n = 0
        self.data = np.empty((0, dims), dtype=np.float32)
        self.ids = np.empty(0, dtype=np.int64)

    def append(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Append rows; the first append of a C-contiguous float32 array keeps it without a copy."""
        m = len(ids)
        if self.n == 0 and rows.dtype == np.float32 and rows.flags.c_contiguous:
            self.data, self.ids, self.n = rows, ids.copy(), m
            return
        self.data = _grow(self.data, self.n + m, 0)
        self.ids = _grow(self.ids, self.n + m, 0)
        self.data[self.n:self.n + m] = rows
        self.ids[self.n:self.n + m] = ids
        self.n += m


class _ProjectionBound:
    """The lower bound of the module docstring over the columns ``cols`` (None = all) of a group."""

    def __init__(self, data: np.ndarray, cols: np.ndarray | None):
        self.cols = cols
        sample = data[:: max(1, data.shape[0] // _BOUND_SAMPLE_ROWS)]
        sample = (sample if cols is None else sample[:, cols]).astype(np.float64)
        self.mean = sample.mean(axis=0)
        sample -= self.mean
        _, vectors = np.linalg.eigh(sample.T @ sample)  # the covariance's axes (any scale)
        self.basis = np.ascontiguousarray(vectors[:, ::-1][:, :_BOUND_DIMS])
        self.fitted_rows = data.shape[0]
        self.n = 0
        self.proj = np.empty((_BOUND_DIMS + 1, 0), dtype=np.float32)  # [V'(x - mean); r_x]
        self.norm2 = np.empty(0, dtype=np.float32)  # |x - mean|**2
        self.radius = 0.0  # max |x - mean|
        self._h = np.empty((0, 0), dtype=np.float32)  # reused per query: no fresh pages to fault in
        self.extend(data)

    def extend(self, data: np.ndarray) -> None:
        """Project the rows ``data[self.n:]`` (rows appended since the last call), in float64."""
        total = data.shape[0]
        self.proj = _grow(self.proj, total, 1)
        self.norm2 = _grow(self.norm2, total, 0)
        centred = np.empty((_PROJECT_ROWS, self.mean.size))
        y = np.empty((_PROJECT_ROWS, _BOUND_DIMS))
        for start in range(self.n, total, _PROJECT_ROWS):
            m = min(_PROJECT_ROWS, total - start)
            c, yy = centred[:m], y[:m]
            rows = data[start:start + m]
            np.subtract(rows if self.cols is None else rows[:, self.cols], self.mean, out=c)
            np.matmul(c, self.basis, out=yy)
            a = np.einsum("ij,ij->i", c, c)
            self.proj[:_BOUND_DIMS, start:start + m] = yy.T
            self.proj[_BOUND_DIMS, start:start + m] = np.sqrt(np.maximum(a - np.einsum("ij,ij->i", yy, yy), 0.0))
            self.norm2[start:start + m] = a
            self.radius = max(self.radius, float(np.sqrt(a.max())))
        self.n = total

    def search(self, data: np.ndarray, queries: np.ndarray, k: int) -> list:
        """``[(rows, d2)]`` per query row; the bounds of all queries come from one product."""
        n, cols = self.n, self.cols
        centred = (queries if cols is None else queries[:, cols]).astype(np.float64) - self.mean
        pq = centred @ self.basis
        q2 = np.einsum("ij,ij->i", centred, centred)
        w = np.concatenate([pq, np.sqrt(np.maximum(q2 - np.einsum("ij,ij->i", pq, pq), 0.0))[:, None]], axis=1)
        # h = |x - mean|**2 - 2 [V'(x - mean); r_x] . [V'(q - mean); r_q]  =  bound**2 - |q - mean|**2
        m = len(queries)
        if self._h.shape[0] < m or self._h.shape[1] != n:
            self._h = np.empty((max(m, 2), n), dtype=np.float32)  # a query and its mirror
        h_all = np.matmul(w.astype(np.float32), self.proj[:, :n], out=self._h[:m])
        h_all *= -2.0
        h_all += self.norm2[:n]
        stride = max(1, min(_BOUND_STRIDE, n // k))  # the sample keeps >= k rows
        out = []
        for q, h, qq in zip(queries, h_all, q2):
            # float32 rounding of norm2, proj, w, the product and the sums stays below this
            margin = (2 * _BOUND_DIMS + 10) * _U32 * (self.radius + np.sqrt(qq)) ** 2
            seed = np.flatnonzero(h <= np.partition(h[::stride], k - 1)[k - 1])
            if seed.size > _SEED_LIMIT:
                seed = seed[np.argpartition(h[seed], k - 1)[:k]]
            kth = float(np.partition(_exact_d2(data[seed], q, cols), k - 1)[k - 1])
            cand = np.flatnonzero(h <= kth * (1 + 1e-12) - qq + margin)
            out.append(_top_k(cand, _exact_d2(data[cand], q, cols), k))
        return out


class _FaissFlat:
    """``faiss.IndexFlatL2`` over the rows of one complete-pose group."""

    cols = None

    def __init__(self, faiss, dims: int):
        self.index = faiss.IndexFlatL2(dims)
        self.n = 0

    def extend(self, data: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(data[self.n:]))
        self.n = data.shape[0]

    def search(self, data: np.ndarray, queries: np.ndarray, k: int) -> list:
        _, found = self.index.search(np.ascontiguousarray(queries), min(self.n, k + _FAISS_EXTRA))
        return [_top_k(f[f >= 0], _exact_d2(data[f[f >= 0]], q, None), k) for q, f in zip(queries, found)]


@dataclass
class _Group:
    """Entries with the same set of present joints, and the bounds built for them.

    ``bounds`` maps a shared-joint mask to its accelerator: the group's own mask (complete
    queries on complete poses; FAISS there when asked) and up to :data:`_PARTIAL_BOUNDS`
    partial masks, each built the second time a query uses it.
    """

    mask: int
    rows: _Rows
    bounds: dict = field(default_factory=dict)
    uses: set = field(default_factory=set)


def _bits(mask: int) -> int:
    return bin(mask).count("1")


class DescriptorSearch:
    """In-memory exact kNN over descriptors of one kind (what :class:`.store.PoseIndex` caches).

    Args:
        kind: the descriptor kind of every row.
        backend: ``"numpy"`` or ``"faiss"`` (see the module docstring).

    Raises:
        PoseIndexError: an unknown backend, or ``"faiss"`` when it cannot be imported.
    """

    def __init__(self, kind: DescriptorKind, backend: str = "numpy"):
        if backend not in BACKENDS:
            raise PoseIndexError(f"unknown search backend {backend!r}; expected one of {list(BACKENDS)}")
        self._faiss = None
        if backend == "faiss":
            try:
                import faiss
            except ImportError:
                raise PoseIndexError(
                    "backend 'faiss' asked for but faiss is not installed; pip install faiss-cpu "
                    "(or use the default backend 'numpy', which is exact)"
                ) from None
            self._faiss = faiss
        self.kind = kind
        self.backend = backend
        self._groups: dict[int, _Group] = {}
        self._pair_cols: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return sum(g.rows.n for g in self._groups.values())

    def add(self, ids: np.ndarray, descriptors: np.ndarray, joint_masks: np.ndarray) -> None:
        """Append entries.

        A float32 C-contiguous ``descriptors`` array of complete poses added to an empty search
        is kept without a copy: do not modify it afterwards.

        Args:
            ids: int64 (n,) entry ids.
            descriptors: float32 (n, D) descriptors (NaN where a joint is absent).
            joint_masks: int (n,) bit masks of present joints (bit j = joint j); bits beyond
                the kind's joints are ignored.
        """
        ids = np.asarray(ids, dtype=np.int64)
        desc = np.asarray(descriptors, dtype=np.float32)
        masks = np.asarray(joint_masks, dtype=np.int64) & self.kind.full_mask
        if desc.shape != (ids.size, self.kind.dims) or masks.shape != ids.shape:
            raise PoseIndexError(
                f"expected {ids.size} {self.kind.name} descriptors of {self.kind.dims} values and "
                f"{ids.size} joint masks, got shapes {desc.shape} and {masks.shape}"
            )
        unique = np.unique(masks).tolist()
        for mask in unique:
            sel = masks == mask
            group = self._groups.setdefault(mask, _Group(mask, _Rows(self.kind.dims)))
            if len(unique) == 1:
                group.rows.append(ids, desc)
            else:
                group.rows.append(ids[sel], desc[sel])

    def prepare(self) -> None:
        """Build or refresh the complete-pose accelerators now (else the next query does it).

        Fitting the projection bound takes about 2 s per million complete poses on 2 cores.
        """
        for group in self._groups.values():
            if group.mask == self.kind.full_mask:
                self._bound(group, group.mask)

    def _columns(self, mask: int) -> np.ndarray | None:
        """Descriptor columns of the pairs within ``mask``; None for every column."""
        if mask == self.kind.full_mask:
            return None
        if mask not in self._pair_cols:
            present = [(mask >> j) & 1 for j in range(self.kind.num_joints)]
            self._pair_cols[mask] = np.flatnonzero(pair_mask(present, self.kind))
        return self._pair_cols[mask]

    def _bound(self, group: _Group, common: int):
        """The accelerator for queries sharing the joints ``common`` with ``group``, or None.

        Only groups of complete poses with :data:`BOUND_MIN_ROWS` rows get one (smaller groups
        are scanned as fast).  A partial mask gets its bound at its second use (a one-off
        partial query is cheaper to scan than to fit); at most :data:`_PARTIAL_BOUNDS` are
        kept, the oldest dropped.  A projection bound is refitted once its group has doubled
        since the fit, and extended with the rows added since the last query otherwise.
        """
        rows = group.rows
        if group.mask != self.kind.full_mask or rows.n < BOUND_MIN_ROWS:
            return None
        data, cols = rows.data[:rows.n], self._columns(common)
        bound = group.bounds.get(common)
        if bound is None:
            if self._faiss is not None and common == group.mask:
                bound = _FaissFlat(self._faiss, self.kind.dims)
            elif common == group.mask or common in group.uses:
                partial = [m for m in group.bounds if m != group.mask]
                if common != group.mask and len(partial) >= _PARTIAL_BOUNDS:
                    del group.bounds[partial[0]]
                bound = _ProjectionBound(data, cols)
            else:
                group.uses.add(common)
                return None
            group.bounds[common] = bound
        elif isinstance(bound, _ProjectionBound) and rows.n >= 2 * bound.fitted_rows:
            bound = group.bounds[common] = _ProjectionBound(data, cols)
        if bound.n < rows.n:
            bound.extend(data)
        return bound

    def _search_all(self, queries: list[tuple[np.ndarray, int]], k: int, min_joints: int) -> list:
        """For each group, the k nearest rows to each query: ``[(query index, ids, distances)]``."""
        found = []
        for group in self._groups.values():
            by_common: dict[int, list[int]] = {}
            for qi, (_, qmask) in enumerate(queries):
                common = qmask & group.mask
                if _bits(common) >= min_joints:
                    by_common.setdefault(common, []).append(qi)
            data = group.rows.data[:group.rows.n]
            kk = min(k, group.rows.n)
            for common, members in by_common.items():
                cols = self._columns(common)
                qs = np.stack([queries[qi][0] for qi in members])
                bound = self._bound(group, common)
                results = bound.search(data, qs, kk) if bound else _scan(data, qs, cols, kk)
                scale = self.kind.dims / (self.kind.dims if cols is None else cols.size)
                for qi, (local, d2) in zip(members, results):
                    found.append((qi, group.rows.ids[local], np.sqrt(d2 * scale)))
        return found

    def search(self, descriptor: np.ndarray, joint_mask: int, k: int = 10, *, mirror: bool = False,
               partial: bool = True, min_joints: int = DEFAULT_MIN_JOINTS) -> SearchResult:
        """The k entries nearest to one query.

        Args:
            descriptor: float32 (D,) query descriptor (NaN at absent pairs).
            joint_mask: bit mask of the query's present joints (bits beyond the kind ignored).
            k: how many neighbours, >= 1; more than the comparable entries returns them all.
            mirror: also match the left/right mirrored query; keep each entry's best.
            partial: allow a query with absent joints (renormalised distance); False
                refuses it.
            min_joints: least number of present joints of the query, and of joints shared
                with an entry for it to be ranked; >= 2.

        Returns:
            :class:`SearchResult`.

        Raises:
            PoseIndexError: nothing to search (empty), k < 1, min_joints < 2, a query with
                fewer than ``min_joints`` joints, or absent joints with ``partial=False``.
        """
        kind = self.kind
        q = np.asarray(descriptor, dtype=np.float32)
        qmask = int(joint_mask) & kind.full_mask
        if q.shape != (kind.dims,):
            raise PoseIndexError(f"query descriptor must have {kind.dims} values ({kind.name}), got shape {q.shape}")
        if k < 1 or min_joints < 2:
            raise PoseIndexError(f"k must be >= 1 and min_joints >= 2, got k={k}, min_joints={min_joints}")
        if not len(self):
            raise PoseIndexError("the index is empty: add poses before querying")
        joints = _bits(qmask)
        if joints < min_joints:
            raise PoseIndexError(
                f"the query pose has {joints} usable joints of {kind.num_joints} ({kind.name}); "
                f"at least min_joints={min_joints} are needed: use a clearer pose, lower the score "
                f"threshold that dropped joints, or lower min_joints"
            )
        if joints < kind.num_joints and not partial:
            raise PoseIndexError(
                f"the query pose has {joints} of the {kind.num_joints} joints of a {kind.name} index "
                "and partial matching is off; allow partial poses, or query a coco17 index with a "
                "COCO-17 pose"
            )
        queries = [(q, qmask)]
        if mirror:
            mirrored_mask = sum(1 << j for j, src in enumerate(kind.mirror_joints.tolist()) if (qmask >> src) & 1)
            queries.append((mirror_descriptors(q, kind), mirrored_mask))
        found = self._search_all(queries, k, min_joints)
        ids = [f[1] for f in found]
        dists = [f[2] for f in found]
        flags = [np.full(len(f[1]), f[0] == 1) for f in found]
        if not ids:
            return SearchResult(np.empty(0, np.int64), np.empty(0), np.empty(0, bool))
        ids, dists, flags = np.concatenate(ids), np.concatenate(dists), np.concatenate(flags)
        order = np.lexsort((ids, flags, dists))
        _, first = np.unique(ids[order], return_index=True)  # best distance of each entry
        best = order[np.sort(first)][:k]
        return SearchResult(ids[best], dists[best], flags[best])
