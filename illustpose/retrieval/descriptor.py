"""Pose descriptors of the reference's retrieval: pairwise joint distances in the pose crop frame.

Reference: ``_scripts/pose_retrieval.py retrieve_nearest`` of bizarre-pose-estimator::

    d = scipy.spatial.distance.pdist(u2d.cropbox_points(keypoints, *cropbox))

The keypoints (all 25 decoded channels, original-image ``(row, col)``) are mapped *forward*
through the pose cropbox of the character bbox (bbox -> centred square -> ``1.1 * max(h, w)``
padded square -> 256 x 256, :func:`illustpose.geometry.pose_cropbox`), which normalises
position and scale; the descriptor is the condensed Euclidean distance vector in
``pdist`` order: pairs ``(0, 1), (0, 2), ..., (0, J-1), (1, 2), ..., (J-2, J-1)``.

Descriptor kinds (:data:`DESCRIPTOR_KINDS`):

* ``"all25"``: the 25 model channels (COCO-17 + the 8 extras), 300-D: the reference;
* ``"coco17"``: the 17 COCO joints only, 136-D (poses from COCO files or POSE_KEYPOINT,
  which carry no extra joints).

Values are crop-frame pixels (0 to about 360 for a pose inside its bbox).  :func:`pose_descriptors`
computes every distance in float64 exactly as ``scipy.spatial.distance.pdist`` does on the
output of :func:`illustpose.geometry.cropbox_points` (bit-identical; the tests check it) and
rounds once to the requested dtype (float32 for an index).  Absent joints are NaN coordinates
and give NaN in every pair that involves them.

Mirroring (:func:`mirror_descriptors`): a horizontal flip in the crop frame changes no
distance, so the descriptor of the mirrored pose is the descriptor with left and right joints
swapped (:func:`illustpose.keypoints.flip_permutation`), i.e. a fixed permutation of its pairs.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..errors import PoseIndexError
from ..geometry import apply_crop_transforms, pose_crop_transforms
from ..keypoints import (
    ALL_KEYPOINTS,
    OPENPOSE18_FROM_COCO17,
    KeypointError,
    OpenPosePerson,
    flip_permutation,
    from_coco_annotation,
)
from ..registry import POSE_CROP_PADDING, POSE_CROP_SIZE
from ..results import PoseResult

__all__ = [
    "NUM_JOINTS",
    "DescriptorKind",
    "DESCRIPTOR_KINDS",
    "descriptor_kind",
    "PoseKeypoints",
    "pose_descriptors",
    "mirror_descriptors",
    "pair_mask",
]

#: Joints stored per entry: the model's 25 channels (:data:`illustpose.keypoints.ALL_KEYPOINTS`).
NUM_JOINTS = len(ALL_KEYPOINTS)

_CHUNK_ROWS = 512  # poses per inner step: the working set (~6 MB) stays in cache
_PARALLEL_MIN_ROWS = 8192  # below this a thread pool costs more than it saves


@dataclass(frozen=True)
class DescriptorKind:
    """Which joints a descriptor uses.

    Attributes:
        name: ``"all25"`` or ``"coco17"``.
        num_joints: J, the first J of :data:`~illustpose.keypoints.ALL_KEYPOINTS` (25 or 17).
        dims: ``J * (J - 1) / 2`` (300 or 136).
        pair_i, pair_j: int64 (dims,) joint indices of each pair, ``pdist`` order (i < j).
        mirror_pairs: int64 (dims,) pair permutation of a left/right mirror:
            ``mirrored[:, p] = descriptor[:, mirror_pairs[p]]``; its own inverse.
        mirror_joints: int64 (J,) joint permutation of the mirror (the same for ``present``).
    """

    name: str
    num_joints: int
    dims: int
    pair_i: np.ndarray
    pair_j: np.ndarray
    mirror_pairs: np.ndarray
    mirror_joints: np.ndarray

    @property
    def full_mask(self) -> int:
        """Bit mask with bit j set for each of the kind's joints (all joints present)."""
        return (1 << self.num_joints) - 1


def _make_kind(name: str, num_joints: int) -> DescriptorKind:
    i, j = np.triu_indices(num_joints, 1)
    perm = np.asarray(flip_permutation(num_joints), dtype=np.int64)
    pair_index = np.full((num_joints, num_joints), -1, dtype=np.int64)
    pair_index[i, j] = pair_index[j, i] = np.arange(i.size)
    mirror_pairs = pair_index[perm[i], perm[j]]
    return DescriptorKind(name, num_joints, int(i.size), i.astype(np.int64), j.astype(np.int64),
                          mirror_pairs, perm)


#: The supported descriptor kinds by name.
DESCRIPTOR_KINDS: dict[str, DescriptorKind] = {
    "all25": _make_kind("all25", 25),
    "coco17": _make_kind("coco17", 17),
}


def descriptor_kind(name: str) -> DescriptorKind:
    """The :class:`DescriptorKind` called ``name``.

    Raises:
        PoseIndexError: for an unknown name (the message lists the valid ones).
    """
    try:
        return DESCRIPTOR_KINDS[name]
    except (KeyError, TypeError):
        raise PoseIndexError(
            f"unknown descriptor kind {name!r}; expected one of {sorted(DESCRIPTOR_KINDS)}"
        ) from None


def _float_array(value, what: str) -> np.ndarray:
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise KeypointError(f"{what} must be numbers, got {value!r:.80}") from None


def _bbox_array(bbox_xywh, where: str) -> np.ndarray:
    bbox = _float_array(bbox_xywh, f"{where}: bbox_xywh")
    if bbox.shape[-1:] != (4,) or not np.isfinite(bbox).all() or (bbox[..., 2:] <= 0).any():
        raise KeypointError(
            f"{where}: bbox_xywh must be finite COCO [x, y, w, h] pixels with w > 0 and h > 0, "
            f"got {bbox.tolist()}"
        )
    return bbox


@dataclass(frozen=True)
class PoseKeypoints:
    """One pose as the index stores and queries it.

    Build it with :meth:`from_pose_result`, :meth:`from_coco_annotation`,
    :meth:`from_openpose` or :meth:`create`, which validate and normalise the arrays.

    Attributes:
        keypoints: float64 (25, 2) ``(x, y)`` pixels of the source image, x right, y down, in
            :data:`~illustpose.keypoints.ALL_KEYPOINTS` order; NaN rows for absent joints.
        present: bool (25,), True for a joint that takes part in distances.
        scores: float64 (25,) per-joint confidence (the model's heatmap peak in [0, 1];
            1.0 for poses read from files; 0.0 for absent joints).  Informational only.
        bbox_xywh: the character bbox, COCO ``(x, y, w, h)`` floats in pixels, ``w, h > 0``;
            it defines the crop frame, so it must be the same kind of box for every pose of
            an index (the segmenter's bbox for image poses).
    """

    keypoints: np.ndarray
    present: np.ndarray
    scores: np.ndarray
    bbox_xywh: tuple[float, float, float, float]

    @classmethod
    def create(cls, keypoints_xy, bbox_xywh=None, *, present=None, scores=None) -> "PoseKeypoints":
        """Validate and pad a pose of 17 (COCO) or 25 (model) joints to 25 rows.

        Args:
            keypoints_xy: array-like (K, 2), K in {17, 25}, ``(x, y)`` pixels.
            bbox_xywh: COCO ``[x, y, w, h]`` pixels; None = the extent of the present joints
                (tighter than the segmenter's bbox: only comparable with poses boxed the
                same way).
            present: bool (K,); None = every joint.  Joints K..24 are absent.
            scores: (K,) confidences; None = 1.0 for present joints.

        Raises:
            KeypointError: wrong shapes, a present joint that is not finite, no present
                joint, or a bbox with a non-positive side.
        """
        xy = _float_array(keypoints_xy, "keypoints")
        if xy.ndim != 2 or xy.shape[1] != 2 or xy.shape[0] not in (17, NUM_JOINTS):
            raise KeypointError(
                f"keypoints must have shape (17, 2) or (25, 2) as (x, y) pixels, got {xy.shape}"
            )
        k = xy.shape[0]
        pres = np.ones(k, dtype=bool) if present is None else np.array(present, dtype=bool)
        sc = np.ones(k) if scores is None else _float_array(scores, "scores")
        if pres.shape != (k,) or sc.shape != (k,):
            raise KeypointError(f"present and scores must have shape ({k},), got {pres.shape} and {sc.shape}")
        if not np.isfinite(sc).all():
            raise KeypointError("scores must be finite numbers")
        bad = np.flatnonzero(pres & ~np.isfinite(xy).all(axis=1))
        if bad.size:
            raise KeypointError(f"present joints {bad.tolist()} have non-finite coordinates")
        if not pres.any():
            raise KeypointError("the pose has no present joint")
        if bbox_xywh is None:
            lo, hi = xy[pres].min(axis=0), xy[pres].max(axis=0)
            bbox_xywh = (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])
        bbox = _bbox_array(bbox_xywh, "pose")
        full_xy = np.full((NUM_JOINTS, 2), np.nan)
        full_present = np.zeros(NUM_JOINTS, dtype=bool)
        full_scores = np.zeros(NUM_JOINTS)
        full_xy[:k][pres] = xy[pres]
        full_present[:k] = pres
        full_scores[:k][pres] = sc[pres]
        return cls(full_xy, full_present, full_scores, tuple(float(v) for v in bbox))

    @classmethod
    def from_pose_result(cls, result: PoseResult, min_score: float | None = None) -> "PoseKeypoints":
        """The pose of a :class:`~illustpose.results.PoseResult` (25 joints, its bbox).

        Args:
            result: the estimator's output.
            min_score: see :meth:`with_min_score`; None keeps all 25 joints, as the reference
                does (the model places every joint).
        """
        pose = cls.create(result.keypoints, result.bbox_xywh, scores=result.scores)
        return pose if min_score is None else pose.with_min_score(min_score)

    def with_min_score(self, min_score: float) -> "PoseKeypoints":
        """This pose with the joints scoring below ``min_score`` made absent (a partial pose).

        Raises:
            KeypointError: if no joint is left.
        """
        present = self.present & (self.scores >= min_score)
        if not present.any():
            raise KeypointError(
                f"no joint scores >= {min_score} (best score {self.scores.max():.3f}); lower the threshold"
            )
        keypoints = np.where(present[:, None], self.keypoints, np.nan)
        return replace(self, keypoints=keypoints, present=present, scores=np.where(present, self.scores, 0.0))

    @classmethod
    def from_coco_annotation(cls, ann) -> "PoseKeypoints":
        """A COCO keypoint annotation: 17 joints, ``v > 0`` present, its ``bbox`` when given.

        Raises:
            KeypointError: malformed ``keypoints`` / ``bbox`` (see
                :func:`illustpose.keypoints.from_coco_annotation`).
        """
        xy, vis = from_coco_annotation(ann)
        return cls.create(xy, ann.get("bbox"), present=vis > 0)

    @classmethod
    def from_openpose(cls, person: OpenPosePerson, bbox_xywh=None) -> "PoseKeypoints":
        """An OpenPose-18 body (from :func:`~illustpose.keypoints.parse_pose_keypoint`).

        The 17 COCO joints are read back through
        :data:`~illustpose.keypoints.OPENPOSE18_FROM_COCO17`; the neck is dropped (it is the
        shoulders' midpoint, not a COCO joint).  Without ``bbox_xywh`` the bbox is the
        joints' extent (see :meth:`create`).
        """
        xy = np.zeros((17, 2))
        present = np.zeros(17, dtype=bool)
        for slot, src in enumerate(OPENPOSE18_FROM_COCO17):
            if src is not None:
                xy[src], present[src] = person.xy[slot], person.present[slot]
        return cls.create(xy, bbox_xywh, present=present)

    def content_hash(self) -> str:
        """sha256 hex digest of the pose's content (present joints, presence, bbox)."""
        xy = np.where(self.present[:, None], self.keypoints, 0.0)
        h = hashlib.sha256(b"illustpose-pose-v1")
        for part in (xy, self.present, np.asarray(self.bbox_xywh, dtype=np.float64)):
            h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()


def _check_batch(xy: np.ndarray, bbox: np.ndarray, min_joints: int) -> None:
    if xy.ndim != 3 or xy.shape[1] < min_joints or xy.shape[2] != 2 or bbox.shape != (xy.shape[0], 4):
        raise KeypointError(
            f"expected keypoints (N, J, 2) with J >= {min_joints} (x, y pixels) and bbox_xywh (N, 4), "
            f"got {xy.shape} and {bbox.shape}"
        )


def _workers() -> int:
    """CPUs this process may use (affinity-aware where the OS reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _descriptor_rows(xy: np.ndarray, transforms: np.ndarray, kind: DescriptorKind, out: np.ndarray) -> None:
    """``out[n] = pdist(crop frame points of pose n)`` for float64 ``xy`` (n, J, 2).

    Works in blocks of :data:`_CHUNK_ROWS` poses, joints-major (J, poses) so every step is a
    long contiguous loop and the working set stays in cache.  Each crop-frame point is one
    complex number ``row + i*col``: one subtraction gives both coordinate differences of
    the pairs ``(i, i+1..J-1)``; squares are summed row first, then col, and the square root
    is taken in float64 before the single rounding to ``out.dtype`` (written transposed into
    ``out``): the operations of scipy's ``pdist``, and no BLAS, so results never depend on a
    library's summation order.
    """
    n, joints = xy.shape[:2]
    rows = min(n, _CHUNK_ROWS)
    points = np.empty((rows, joints, 2), dtype=np.float64)
    zt = np.empty((joints, rows), dtype=np.complex128)
    diff = np.empty((kind.dims, rows), dtype=np.complex128)
    sq = np.empty((kind.dims, rows), dtype=np.float64)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        c = stop - start
        apply_crop_transforms(xy[start:stop], transforms[start:stop], points[:c])
        np.copyto(zt[:, :c], points[:c].view(np.complex128)[..., 0].T)
        at = 0
        for i in range(joints - 1):  # pairs (i, i+1), ..., (i, J-1): pdist order
            np.subtract(zt[i + 1:, :c], zt[i, :c], out=diff[at:at + joints - 1 - i, :c])
            at += joints - 1 - i
        parts = diff[:, :c].view(np.float64)  # (dims, 2c): row and col differences interleaved
        np.multiply(parts, parts, out=parts)
        np.add(parts[:, 0::2], parts[:, 1::2], out=sq[:, :c])
        np.sqrt(sq[:, :c], out=out[start:stop].T, casting="same_kind")


def pose_descriptors(keypoints_xy, bbox_xywh, kind: str | DescriptorKind = "all25", *,
                     size: int = POSE_CROP_SIZE, padding: float = POSE_CROP_PADDING,
                     dtype=np.float32) -> np.ndarray:
    """Descriptors of a batch of poses (the reference's ``pdist(cropbox_points(...))``).

    Args:
        keypoints_xy: float (N, K, 2) or one pose (K, 2), ``(x, y)`` image pixels with
            K >= the kind's J (only the first J joints are used); NaN marks an absent joint.
        bbox_xywh: (N, 4) or (4,) COCO ``[x, y, w, h]`` character bbox in pixels.
        kind: ``"all25"`` (J = 25, 300-D) or ``"coco17"`` (J = 17, 136-D), or a
            :class:`DescriptorKind`.
        size, padding: the crop frame (the model's 256 and 0.1).
        dtype: float32 (index storage) or float64 (the exact reference values).

    Returns:
        (N, D) or (D,) array of ``dtype``: crop-frame pixel distances in ``pdist`` pair
        order, each the float64 scipy value rounded once; NaN for pairs with an absent joint.
        Large batches are split over the process's CPUs (numpy releases the GIL).

    Raises:
        KeypointError: wrong shapes or a bad bbox.  PoseIndexError: unknown kind.
    """
    kd = kind if isinstance(kind, DescriptorKind) else descriptor_kind(kind)
    xy = np.asarray(keypoints_xy, dtype=np.float64)
    bbox = _bbox_array(bbox_xywh, "pose_descriptors")
    single = xy.ndim == 2
    if single:
        xy, bbox = xy[None], bbox[None]
    _check_batch(xy, bbox, kd.num_joints)
    xy = xy[:, :kd.num_joints]
    transforms = pose_crop_transforms(bbox, size, padding)
    n = xy.shape[0]
    out = np.empty((n, kd.dims), dtype=dtype)
    workers = min(_workers(), max(1, n // _PARALLEL_MIN_ROWS))
    if workers == 1:
        _descriptor_rows(xy, transforms, kd, out)
    else:
        bounds = np.linspace(0, n, workers + 1).astype(int)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda se: _descriptor_rows(xy[se[0]:se[1]], transforms[se[0]:se[1]], kd,
                                                      out[se[0]:se[1]]),
                          zip(bounds[:-1], bounds[1:])))
    return out[0] if single else out


def mirror_descriptors(descriptors: np.ndarray, kind: str | DescriptorKind = "all25") -> np.ndarray:
    """Descriptors of the left/right mirrored poses.

    Mirroring = horizontal flip in the crop frame (``col -> size - col``) + swapping left and
    right joints (:func:`illustpose.keypoints.flip_permutation`; nose_root, body_upper and
    the unnamed channels 23, 24 stay).  The flip preserves every distance, so the result is
    the pair permutation ``descriptors[..., kind.mirror_pairs]`` (exact; mirroring twice
    gives the input back).

    Args:
        descriptors: (..., D) array, any dtype.

    Returns:
        a new array of the same shape and dtype.
    """
    kd = kind if isinstance(kind, DescriptorKind) else descriptor_kind(kind)
    d = np.asarray(descriptors)
    if d.shape[-1:] != (kd.dims,):
        raise PoseIndexError(f"{kd.name} descriptors have {kd.dims} values, got shape {d.shape}")
    return d[..., kd.mirror_pairs]


def pair_mask(present: Sequence[bool] | np.ndarray, kind: str | DescriptorKind = "all25") -> np.ndarray:
    """Which descriptor pairs exist for the given joints.

    Args:
        present: bool (..., K) with K >= the kind's J (extra joints ignored).

    Returns:
        bool (..., D): True where both joints of the pair are present.
    """
    kd = kind if isinstance(kind, DescriptorKind) else descriptor_kind(kind)
    p = np.asarray(present, dtype=bool)[..., :kd.num_joints]
    return p[..., kd.pair_i] & p[..., kd.pair_j]
