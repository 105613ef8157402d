"""Pose accuracy metrics of the reference (PCP, PCPm, PCKh, PDJ, per-joint OKS) and COCO AP.

The functions below reproduce ``_util/keypoints_v0.py`` of ShuhongChen/bizarre-pose-estimator
(commit b72005c; lines cited as ``kv0:N``), the metrics the paper reports (logged there as
``pcp_50``, ``pcpm_50``, ``pckh_20``, ``pckh_50``, ``pdj_20``, ``oks_50``, ``oks_75``).

Coordinates.  The reference works in ``(row, col)`` = ``(y, x)`` with a bbox
``[(row0, col0), (h, w)]``.  Here every input is in the library's convention: keypoints
``(x, y)`` pixels (float arrays ``(B, 17, 2)``, or ``(17, 2)`` for one sample) and bboxes COCO
``[x, y, w, h]`` pixels (``(B, 4)`` or ``(4,)``); they are converted once, in
:func:`_normalise`, to the reference's frame.  Both keypoint sets are then normalised by the
*ground-truth* bbox exactly as the reference does (kv0:114-118, 147-151, 191-195)::

    p_norm = (p_rc - (row0, col0)) / max(h, w)

and ``d`` is the Euclidean distance between a predicted joint and its ground truth in that
frame.  Every metric is a ratio of lengths, so the result does not depend on the order of
the two axes nor on translating or uniformly scaling gt, prediction and bbox together.

Equality.  All thresholds are inclusive, as in the reference: PCP and PCK count a joint
correct when ``d <= k * length`` (kv0:127, 169); OKS counts it correct when its keypoint
similarity ``>= thresh`` (kv0:203).

Missing ground truth.  The reference ignores visibility (it reads ``[..., :2]`` only), so an
unlabelled COCO joint (``v = 0``, stored as 0, 0) would be scored against the point (0, 0).
Here a ``visible`` argument takes the COCO ``v`` flags ``(B, 17)``: joints with ``v = 0`` are
excluded from every mean; ``v = 1`` (labelled but not visible) and ``v = 2`` count, as in
COCO, whose OKS also sums over every joint with ``v > 0``.  A PCP part needs both endpoints
labelled; a PCKh / PDJ joint also needs the ground-truth joints its threshold is measured
on.  With ``visible=None`` (or all ``v > 0``) the numbers equal the reference's.

Missed characters.  A prediction that is NaN in every coordinate stands for a ground-truth
character no prediction was matched to (:func:`match_poses`): each of its labelled joints and
parts counts as wrong.  Any other NaN in a prediction is an error.

How the reference's OKS differs from COCO's.  COCO (``pycocotools.cocoeval.computeOks``)
computes one similarity per instance, ``mean_i exp(-d_i^2 / (2 * area * (2 sigma_i)^2))``
over the labelled joints, with ``area`` the annotation's (segmentation) area in px^2, and
turns it into an average precision over thresholds 0.50:0.05:0.95 and detection scores.
The reference (kv0:179-212) instead (1) does *not* double sigma: it uses
``exp(-d^2 / (2 s^2 sigma^2))`` with the sigmas of :data:`~illustpose.keypoints.COCO_OKS_SIGMAS`
(COCO's values / 10); (2) thresholds *each joint's* similarity and reports the fraction of
joints at or above the threshold (a PCK-like accuracy, not an AP); (3) defines the scale as
the bbox: ``s^2 = h * w`` (in the normalised frame ``s = sqrt(h w) / max(h, w)``), not the
segment area.  With ``area = w * h`` the reference's similarity of a joint is exactly COCO's
raised to the 4th power, so ``oks@0.5`` is much stricter than COCO's per-joint similarity
>= 0.5.  :func:`coco_keypoint_ap` gives the real COCO numbers.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import MetricInputError
from .geometry import xy_to_rc
from .keypoints import COCO_KEYPOINTS, COCO_OKS_SIGMAS, COCO_SKELETON

__all__ = [
    "MetricResult",
    "JOINT_NAMES",
    "PCP_PARTS",
    "PCP_PART_NAMES",
    "SUMMARY_METRICS",
    "TABLE_GROUPS",
    "pcp",
    "mean_part_lengths",
    "pck",
    "pdj",
    "oks",
    "evaluate",
    "match_poses",
    "summarize",
    "format_table",
    "coco_keypoint_ap",
]




#: The 17 joint names, COCO order and spelling (:data:`illustpose.keypoints.COCO_KEYPOINTS`).
JOINT_NAMES: tuple[str, ...] = tuple(COCO_KEYPOINTS)

#: The reference's 14 PCP parts ``coco_parts`` (kv0:71-87), 0-based joint pairs.
PCP_PARTS: tuple[tuple[int, int], ...] = tuple(COCO_SKELETON)

#: ``"<joint a>-<joint b>"`` for each of :data:`PCP_PARTS`, e.g. ``"right_ear-right_eye"``.
PCP_PART_NAMES: tuple[str, ...] = tuple(f"{JOINT_NAMES[a]}-{JOINT_NAMES[b]}" for a, b in PCP_PARTS)

#: Keys of :func:`evaluate` / :func:`summarize`, in output order.
SUMMARY_METRICS: tuple[str, ...] = ("pdj@0.2", "pckh@0.5", "pckh@0.2", "oks@0.5", "oks@0.75", "pcp@0.5")

#: Rows of :func:`format_table`: label -> joints averaged into the row (left/right pairs).
TABLE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("nose", ("nose",)),
    ("eyes", ("left_eye", "right_eye")),
    ("ears", ("left_ear", "right_ear")),
    ("shoulders", ("left_shoulder", "right_shoulder")),
    ("elbows", ("left_elbow", "right_elbow")),
    ("wrists", ("left_wrist", "right_wrist")),
    ("hips", ("left_hip", "right_hip")),
    ("knees", ("left_knee", "right_knee")),
    ("ankles", ("left_ankle", "right_ankle")),
)

_SIGMAS = np.asarray(COCO_OKS_SIGMAS, dtype=np.float64)
_NOSE, _L_SHOULDER, _R_SHOULDER, _L_HIP = (
    JOINT_NAMES.index(n) for n in ("nose", "left_shoulder", "right_shoulder", "left_hip")
)
_PCK_MODES = ("h", "pdj", "bbox_diag")


@dataclass(frozen=True)
class MetricResult:
    """Per-sample, per-item correctness of one metric over a batch, and its means.

    Items are the 17 joints (PCK, PDJ, OKS) or the 14 parts (PCP).

    Attributes:
        names: the K item names (:data:`JOINT_NAMES` or :data:`PCP_PART_NAMES`).
        kind: ``"joint"`` or ``"part"``.
        correct: bool (B, K), True where the item is within the threshold (whatever
            ``valid`` says; read the two together).
        valid: bool (B, K), True where the item is scored (its ground truth is labelled).
        distances: float64 (B, 17), per-joint distance pred-gt divided by max(bbox h, w).
        per_sample: float64 (B,), fraction of valid items correct; NaN if none is valid.
            Equals the reference's ``ans['metric']`` when every item is valid.
        per_item: float64 (K,), fraction of valid samples where the item is correct; NaN
            if no sample is valid.
        mean: float, mean of ``per_sample`` over the samples with a valid item (NaN if
            none): the reference's metric averaged over the dataset.  When every item is
            valid it also equals ``per_item.mean()``.
        similarities: float64 (B, 17) per-joint keypoint similarity for OKS; None otherwise.
    """

    names: tuple[str, ...]
    kind: str
    correct: np.ndarray
    valid: np.ndarray
    distances: np.ndarray
    per_sample: np.ndarray
    per_item: np.ndarray
    mean: float
    similarities: np.ndarray | None = None


@dataclass(frozen=True)
class _Frame:
    """Inputs normalised to the reference's frame (float64, batched)."""

    gt: np.ndarray  # (B, 17, 2) (row, col) / max(h, w), relative to the bbox corner
    distances: np.ndarray  # (B, 17)
    size: np.ndarray  # (B, 2) bbox (h, w) / max(h, w)
    labelled: np.ndarray  # (B, 17) bool, COCO v > 0


# --------------------------------------------------------------------------- input


def _points(value, name: str) -> np.ndarray:
    """``value`` as float64 (B, 17, 2); a single (17, 2) pose becomes B = 1."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"{name} must be numeric (x, y) pixels; could not read it ({exc})") from None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (17, 2):
        raise MetricInputError(
            f"{name} must have shape (B, 17, 2) or (17, 2): COCO-17 (x, y) pixels; got {arr.shape}"
        )
    return arr


def _bboxes(value, batch: int) -> np.ndarray:
    """``value`` as float64 (B, 4) COCO ``[x, y, w, h]`` with finite values and w, h > 0."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(f"bbox must be numeric [x, y, w, h] pixels; could not read it ({exc})") from None
    if arr.ndim == 1:
        arr = arr[None]
    if arr.shape != (batch, 4):
        raise MetricInputError(
            f"bbox must have shape ({batch}, 4) (one COCO [x, y, w, h] per sample); got {arr.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1) | (arr[:, 2] <= 0) | (arr[:, 3] <= 0))
    if bad.size:
        raise MetricInputError(
            f"bbox rows {bad.tolist()} must be finite with w > 0 and h > 0 "
            f"(the scores are normalised by the ground-truth box); got {arr[bad[0]].tolist()}"
        )
    return arr


def _labelled(visible, batch: int) -> np.ndarray:
    """COCO visibility flags (B, 17) -> bool (B, 17) "labelled" (v > 0); None -> all True."""
    if visible is None:
        return np.ones((batch, 17), dtype=bool)
    arr = np.asarray(visible)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.shape != (batch, 17):
        raise MetricInputError(f"visible must have shape ({batch}, 17) (COCO v per joint); got {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.copy()
    if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1, 2)).all():
        raise MetricInputError(
            "visible must hold COCO visibility flags 0 (unlabelled), 1 (labelled, hidden), "
            f"2 (visible), or bools; got values {np.unique(arr)[:8].tolist()}"
        )
    return arr > 0


def _normalise(gt_xy, bbox_xywh, pred_xy, visible) -> _Frame:
    """Validate inputs and map them to the reference's normalised (row, col) frame.

    The one (x, y) -> (row, col) conversion of this module; then kv0:114-120:
    ``(p - bbox corner) / max(h, w)`` and ``d = ||gt - pred||``.
    """
    gt = _points(gt_xy, "gt")
    pred = _points(pred_xy, "pred")
    if pred.shape != gt.shape:
        raise MetricInputError(f"pred has shape {pred.shape} but gt has {gt.shape}; give one prediction per sample")
    bbox = _bboxes(bbox_xywh, gt.shape[0])
    labelled = _labelled(visible, gt.shape[0])
    missed = np.isnan(pred).all(axis=(1, 2))  # a ground-truth character no prediction matched
    for name, arr, excused in (("gt", gt, np.zeros_like(missed)), ("pred", pred, missed)):
        bad = np.argwhere(labelled & ~np.isfinite(arr).all(axis=2) & ~excused[:, None])
        if bad.size:
            raise MetricInputError(f"{name} has NaN or inf at (sample, joint) {bad[:5].tolist()} of labelled joints")
    corner = np.stack([bbox[:, 1], bbox[:, 0]], axis=1)[:, None]  # (row0, col0)
    size_hw = np.stack([bbox[:, 3], bbox[:, 2]], axis=1)
    scale = size_hw.max(axis=1)[:, None, None]
    gt_n = (xy_to_rc(gt) - corner) / scale
    pred_n = (xy_to_rc(pred) - corner) / scale
    distances = np.linalg.norm(gt_n - pred_n, axis=2)
    distances[missed] = np.inf
    return _Frame(gt_n, distances, size_hw / scale[:, :, 0], labelled)


# --------------------------------------------------------------------------- results


def _fraction(correct: np.ndarray, valid: np.ndarray, axis: int) -> np.ndarray:
    """Share of ``correct`` among ``valid`` entries along ``axis``; NaN where none is valid."""
    hits = np.sum(correct & valid, axis=axis, dtype=np.float64)
    count = np.sum(valid, axis=axis, dtype=np.float64)
    return np.divide(hits, count, out=np.full(hits.shape, np.nan), where=count > 0)


def _result(names, kind, correct, valid, frame: _Frame, similarities=None) -> MetricResult:
    """Bundle correctness with its per-sample / per-item / overall means."""
    per_sample = _fraction(correct, valid, axis=1)
    scored = per_sample[~np.isnan(per_sample)]
    return MetricResult(
        names=tuple(names),
        kind=kind,
        correct=correct,
        valid=valid,
        distances=frame.distances,
        per_sample=per_sample,
        per_item=_fraction(correct, valid, axis=0),
        mean=float(scored.mean()) if scored.size else math.nan,
        similarities=similarities,
    )


# --------------------------------------------------------------------------- metrics


def _part_lengths(frame: _Frame) -> np.ndarray:
    """(B, 14) ground-truth part lengths / max(bbox h, w) (kv0:121-123)."""
    ends = np.asarray(PCP_PARTS)
    return np.linalg.norm(frame.gt[:, ends[:, 0]] - frame.gt[:, ends[:, 1]], axis=2)


def pcp(gt, bbox, pred, k: float = 0.5, mean_part_lengths=None, visible=None) -> MetricResult:
    """Percentage of Correct Parts, PCP@k, or PCPm@k with dataset-mean part lengths.

    Follows kv0:102-134.  A part (of the 14 :data:`PCP_PARTS`) is correct when *both* its
    endpoints satisfy ``d <= k * L`` (inclusive), where ``d`` is the endpoint's distance
    divided by max(bbox h, w) and ``L`` is the part's length divided by the same number:
    the sample's own ground-truth length (PCP), or ``mean_part_lengths`` (PCPm, as the
    reference's ``m``).  A part is valid when both endpoints are labelled.

    Args:
        gt: float (B, 17, 2) or (17, 2), ground-truth ``(x, y)`` pixels, COCO order.
        bbox: float (B, 4) or (4,), ground-truth COCO ``[x, y, w, h]`` pixels, w, h > 0.
        pred: float, same shape as ``gt``, predicted ``(x, y)`` pixels.
        k: threshold factor (0.5 for the paper's PCP@0.5).
        mean_part_lengths: None for PCP, or float (14,) mean normalised part lengths for
            PCPm (see :func:`mean_part_lengths`).
        visible: None, or (B, 17) COCO v flags / bools; v = 0 joints are not scored.

    Returns:
        :class:`MetricResult` over the 14 parts (``kind="part"``).

    Raises:
        MetricInputError: on wrong shapes, non-finite labelled joints, a bbox with w or h
            <= 0, or ``mean_part_lengths`` not 14 finite numbers.
    """
    frame = _normalise(gt, bbox, pred, visible)
    if mean_part_lengths is None:
        lengths = _part_lengths(frame)
    else:
        m = np.asarray(mean_part_lengths, dtype=np.float64)
        if m.shape != (len(PCP_PARTS),) or not np.isfinite(m).all():
            raise MetricInputError(f"mean_part_lengths must be 14 finite numbers (one per part); got shape {m.shape}")
        lengths = np.broadcast_to(m, (frame.gt.shape[0], m.size))
    ends = np.asarray(PCP_PARTS)
    correct = (frame.distances[:, ends] <= k * lengths[..., None]).all(axis=2)
    valid = frame.labelled[:, ends].all(axis=2)
    return _result(PCP_PART_NAMES, "part", correct, valid, frame)


def mean_part_lengths(gt, bbox, visible=None) -> np.ndarray:
    """Dataset-mean normalised part lengths, the ``m`` of PCPm.

    As the reference's dataset classes compute it (kv0:263-274): per sample, each of the 14
    ground-truth part lengths divided by max(bbox h, w), averaged over samples (here over
    the samples where both endpoints are labelled).

    Args:
        gt: float (B, 17, 2) ground-truth ``(x, y)`` pixels.
        bbox: float (B, 4) COCO ``[x, y, w, h]`` pixels.
        visible: None or (B, 17) COCO v flags.

    Returns:
        float64 (14,); NaN for a part never labelled.

    Raises:
        MetricInputError: as :func:`pcp`.
    """
    frame = _normalise(gt, bbox, gt, visible)
    lengths = _part_lengths(frame)
    valid = frame.labelled[:, np.asarray(PCP_PARTS)].all(axis=2)
    count = valid.sum(axis=0)
    total = np.where(valid, lengths, 0.0).sum(axis=0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _pck_length(frame: _Frame, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample reference length (B,) of a PCK mode and whether it is defined (B,)."""
    gt, lab = frame.gt, frame.labelled
    if mode == "h":  # kv0:154-160: nose to the shoulders' midpoint
        neck = (gt[:, _L_SHOULDER] + gt[:, _R_SHOULDER]) / 2
        return np.linalg.norm(gt[:, _NOSE] - neck, axis=1), lab[:, [_NOSE, _L_SHOULDER, _R_SHOULDER]].all(axis=1)
    if mode == "pdj":  # kv0:161-163: left hip to right shoulder
        return np.linalg.norm(gt[:, _L_HIP] - gt[:, _R_SHOULDER], axis=1), lab[:, _L_HIP] & lab[:, _R_SHOULDER]
    # kv0:164-166: the bbox diagonal
    return np.linalg.norm(frame.size, axis=1), np.ones(gt.shape[0], dtype=bool)


def pck(gt, bbox, pred, k: float = 0.5, mode: str = "h", visible=None) -> MetricResult:
    """Percentage of Correct Keypoints with one of the reference's reference lengths.

    Follows kv0:135-176.  A joint is correct when ``d <= k * L`` (inclusive), ``d`` its
    distance divided by max(bbox h, w) and ``L``, divided by the same number:

    * ``mode="h"`` (PCKh; the paper's PCKh@0.2 / @0.5): a head size, the ground-truth
      distance from the nose to the midpoint of the two shoulders;
    * ``mode="pdj"`` (PDJ; the paper's PDJ@0.2 with k = 0.2): the ground-truth distance
      from the left hip to the right shoulder (a torso diagonal);
    * ``mode="bbox_diag"``: the bbox diagonal ``sqrt(h^2 + w^2)``.

    A joint is valid when it is labelled and, for "h" / "pdj", so are the joints ``L``
    is measured on (otherwise the whole sample is not scored).

    Args:
        gt, bbox, pred, visible: as :func:`pcp`.
        k: threshold factor.
        mode: "h", "pdj" or "bbox_diag".

    Returns:
        :class:`MetricResult` over the 17 joints (``kind="joint"``).

    Raises:
        MetricInputError: as :func:`pcp`, or an unknown ``mode``.
    """
    if mode not in _PCK_MODES:
        raise MetricInputError(f"pck mode must be one of {_PCK_MODES}; got {mode!r}")
    frame = _normalise(gt, bbox, pred, visible)
    length, defined = _pck_length(frame, mode)
    correct = frame.distances <= k * length[:, None]
    return _result(JOINT_NAMES, "joint", correct, frame.labelled & defined[:, None], frame)


def pdj(gt, bbox, pred, k: float = 0.2, visible=None) -> MetricResult:
    """Percentage of Detected Joints: :func:`pck` with ``mode="pdj"`` (kv0:177-178).

    ``d <= k * ||left_hip - right_shoulder||`` on the ground truth, both divided by
    max(bbox h, w); the paper reports k = 0.2.  Arguments, result and errors as :func:`pck`.
    """
    return pck(gt, bbox, pred, k=k, mode="pdj", visible=visible)


def oks(gt, bbox, pred, thresh: float = 0.5, visible=None) -> MetricResult:
    """The reference's per-joint OKS accuracy, OKS@thresh (kv0:179-212).

    For each joint ``ks = exp(-d^2 / (2 s^2 sigma^2))`` with ``d`` the distance divided by
    max(bbox h, w), ``s = sqrt(h * w) / max(h, w)`` (the bbox's square-root area in the same
    units) and ``sigma`` from :data:`~illustpose.keypoints.COCO_OKS_SIGMAS`; the joint is
    correct when ``ks >= thresh`` (inclusive).  This is not COCO's OKS: see the module
    docstring and :func:`coco_keypoint_ap`.

    Args:
        gt, bbox, pred, visible: as :func:`pcp`.
        thresh: similarity threshold (0.5 and 0.75 in the paper).

    Returns:
        :class:`MetricResult` over the 17 joints, with ``similarities`` (B, 17).

    Raises:
        MetricInputError: as :func:`pcp`.
    """
    frame = _normalise(gt, bbox, pred, visible)
    s = np.sqrt(frame.size[:, 0] * frame.size[:, 1])[:, None]
    similarities = np.exp(-frame.distances**2 / (2 * s**2 * _SIGMAS[None] ** 2))
    correct = similarities >= thresh
    return _result(JOINT_NAMES, "joint", correct, frame.labelled.copy(), frame, similarities)


def evaluate(gt, bbox, pred, visible=None) -> dict[str, MetricResult]:
    """All metrics of :data:`SUMMARY_METRICS` at the paper's settings.

    Args:
        gt, bbox, pred, visible: as :func:`pcp`.

    Returns:
        ``{"pdj@0.2", "pckh@0.5", "pckh@0.2", "oks@0.5", "oks@0.75", "pcp@0.5"}`` ->
        :class:`MetricResult`, ready for :func:`summarize`.  PCPm needs dataset-wide part
        lengths; call :func:`pcp` with :func:`mean_part_lengths` for it.

    Raises:
        MetricInputError: as :func:`pcp`.
    """
    return {
        "pdj@0.2": pdj(gt, bbox, pred, k=0.2, visible=visible),
        "pckh@0.5": pck(gt, bbox, pred, k=0.5, mode="h", visible=visible),
        "pckh@0.2": pck(gt, bbox, pred, k=0.2, mode="h", visible=visible),
        "oks@0.5": oks(gt, bbox, pred, thresh=0.5, visible=visible),
        "oks@0.75": oks(gt, bbox, pred, thresh=0.75, visible=visible),
        "pcp@0.5": pcp(gt, bbox, pred, k=0.5, visible=visible),
    }


# --------------------------------------------------------------------------- matching


def match_poses(gt_xy, gt_visible, gt_area, pred_xy, pred_scores=None) -> list[int | None]:
    """COCO's matching of the predicted characters of one image to its ground-truth characters.

    As ``pycocotools.cocoeval.evaluateImg``: predictions are taken highest score first (ties
    and missing scores keep their order), each matched to the still unmatched ground truth
    with the highest COCO OKS (``mean exp(-d^2 / (2 * area * (2 sigma)^2))`` over its
    labelled joints, sigmas :data:`~illustpose.keypoints.COCO_OKS_SIGMAS`; the first on ties),
    at OKS threshold 0, so every prediction finds a partner while one is left.

    Args:
        gt_xy: float ``(G, 17, 2)`` ``(x, y)`` pixels of the ground truth.
        gt_visible: ``(G, 17)`` COCO ``v`` flags (joints with ``v = 0`` are not compared).
        gt_area: ``(G,)`` the ground truths' areas in px^2 (bbox ``w * h``).
        pred_xy: float ``(P, 17, 2)`` ``(x, y)`` pixels of the predictions.
        pred_scores: ``(P,)`` scores (None or NaN: rank after the scored ones).

    Returns:
        for each ground truth, the index of its prediction, or None when none was left.
    """
    gt, pred = _points(gt_xy, "gt"), _points(pred_xy, "pred")
    labelled = _labelled(gt_visible, gt.shape[0])
    area = np.asarray(gt_area, dtype=np.float64).reshape(-1)
    score = np.full(len(pred), np.nan) if pred_scores is None else np.asarray(pred_scores, dtype=np.float64)
    d2 = ((gt[:, None] - pred[None]) ** 2).sum(axis=3)  # (G, P, 17)
    e = d2 / ((2 * _SIGMAS) ** 2 * (area[:, None, None] + np.spacing(1)) * 2)
    count = labelled.sum(axis=1)[:, None]
    oks = np.where(count > 0, (np.exp(-e) * labelled[:, None]).sum(axis=2) / np.maximum(count, 1), 0.0)
    oks = np.nan_to_num(oks, nan=-1.0)
    matched: list[int | None] = [None] * len(gt)
    for p in sorted(range(len(pred)), key=lambda i: -score[i] if np.isfinite(score[i]) else np.inf):
        free = [g for g in range(len(gt)) if matched[g] is None]
        if not free:
            break
        matched[max(free, key=lambda g: (oks[g, p], -g))] = p
    return matched


# --------------------------------------------------------------------------- reporting


def _json_number(value: float) -> float | None:
    """A float for JSON; NaN (nothing was scored) becomes None (``null``)."""
    return None if math.isnan(value) else float(value)


def summarize(per_joint_results: Mapping[str, MetricResult]) -> dict:
    """JSON-ready summary of :func:`evaluate`'s results.

    Args:
        per_joint_results: mapping holding every key of :data:`SUMMARY_METRICS` (others
            are ignored), all over the same samples.

    Returns:
        ``{"metrics": {"pdj@0.2": {"mean": m, "per_joint": {joint: v}}, "pckh@0.5": ...,
        "pckh@0.2": ..., "oks@0.5": ..., "oks@0.75": ..., "pcp@0.5": {"mean": m,
        "per_part": {part: v}}}, "images": n}``; values are fractions in [0, 1], ``null``
        where nothing was scored; ``n`` is the number of samples (one character each).

    Raises:
        MetricInputError: if a metric is missing or the results cover different batches.
    """
    missing = [name for name in SUMMARY_METRICS if name not in per_joint_results]
    if missing:
        raise MetricInputError(f"summarize needs the results of {list(SUMMARY_METRICS)}; missing {missing}")
    sizes = {name: per_joint_results[name].correct.shape[0] for name in SUMMARY_METRICS}
    if len(set(sizes.values())) != 1:
        raise MetricInputError(f"the results cover different numbers of samples: {sizes}")
    metrics = {}
    for name in SUMMARY_METRICS:
        result = per_joint_results[name]
        key = "per_part" if result.kind == "part" else "per_joint"
        metrics[name] = {
            "mean": _json_number(result.mean),
            key: {n: _json_number(v) for n, v in zip(result.names, result.per_item.tolist())},
        }
    return {"metrics": metrics, "images": int(next(iter(sizes.values())))}


def _group_value(per_joint: Mapping[str, float | None], joints: Sequence[str]) -> float | None:
    """Mean of the non-null values of ``joints`` (left/right averaged); None if all null."""
    values = [per_joint[j] for j in joints if per_joint.get(j) is not None]
    return sum(values) / len(values) if values else None


def _cell(value: float | None) -> str:
    """A fraction as a percentage with one decimal, or "-" when missing."""
    return "-" if value is None else f"{100 * value:.1f}"


def format_table(summary: Mapping) -> str:
    """A per-joint text table of :func:`summarize`'s output, like the paper's Table 1.

    Rows are :data:`TABLE_GROUPS` (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
    ankles; each left/right pair averaged) then ``mean`` (each metric's overall mean, which
    weights joints, not rows, equally).  Columns are the metrics in :data:`SUMMARY_METRICS`
    order, in percent; PCP is per part, so only its mean is shown.

    Args:
        summary: the dict returned by :func:`summarize`.

    Returns:
        the table as one string, lines joined by newlines, no trailing newline.

    Raises:
        MetricInputError: if ``summary`` lacks the ``"metrics"`` entries of :func:`summarize`.
    """
    metrics = summary.get("metrics", {}) if isinstance(summary, Mapping) else {}
    missing = [name for name in SUMMARY_METRICS if name not in metrics]
    if missing:
        raise MetricInputError(f"format_table needs the dict from summarize(); its 'metrics' lack {missing}")
    headers = ["joint", *(name.upper().replace("PCKH", "PCKh") for name in SUMMARY_METRICS)]
    rows = []
    for label, joints in TABLE_GROUPS:
        rows.append([label, *(
            _cell(_group_value(metrics[m]["per_joint"], joints)) if "per_joint" in metrics[m] else "-"
            for m in SUMMARY_METRICS
        )])
    rows.append(["mean", *(_cell(metrics[m]["mean"]) for m in SUMMARY_METRICS)])
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [f"images: {summary.get('images', '?')}"]
    for i, row in enumerate([headers, *rows]):
        lines.append("  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]))
        if i == 0 or i == len(rows) - 1:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines)


# --------------------------------------------------------------------------- COCO AP

_COCO_STATS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def _import_pycocotools():
    """``(COCO, COCOeval)`` from pycocotools, or a MetricInputError saying how to install it."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MetricInputError(
            "coco_keypoint_ap needs pycocotools, which is not installed; run `pip install pycocotools`"
        ) from None
    return COCO, COCOeval


def _complete_ground_truth(gt_coco: Mapping) -> dict:
    """A deep copy of ``gt_coco`` with the fields COCOeval needs filled in where absent.

    ``iscrowd`` -> 0, ``area`` -> bbox w*h, ``num_keypoints`` -> count of v > 0.
    """
    if not isinstance(gt_coco, Mapping) or not all(k in gt_coco for k in ("images", "annotations", "categories")):
        raise MetricInputError("gt_coco must be a COCO dict with 'images', 'annotations' and 'categories'")
    data = copy.deepcopy(dict(gt_coco))
    for i, ann in enumerate(data["annotations"]):
        if "keypoints" not in ann or "bbox" not in ann:
            raise MetricInputError(f"gt_coco annotations[{i}] needs 'keypoints' and 'bbox'")
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("num_keypoints", sum(1 for v in ann["keypoints"][2::3] if v > 0))
    return data


def coco_keypoint_ap(gt_coco: dict, predictions: list[dict]) -> dict:
    """COCO keypoint AP / AR with pycocotools (``COCOeval(iouType="keypoints")``).

    Standard COCO evaluation (OKS with doubled sigmas averaged over labelled joints, AP
    over OKS thresholds 0.50:0.05:0.95, up to 20 detections per image ranked by score), not
    the reference's per-joint accuracy (see the module docstring).  ``gt_coco`` is not
    modified; its annotations get ``iscrowd`` 0, ``area`` = bbox w*h and ``num_keypoints``
    = count of v > 0 where those fields are absent (COCO's own files use the segment area).

    Args:
        gt_coco: a COCO keypoint ground-truth dict (``images``, ``annotations``,
            ``categories``), pixels.
        predictions: COCO result dicts, each ``{"image_id", "category_id", "keypoints": 51
            numbers [x, y, v]*17, "score"}`` (e.g. from
            :func:`illustpose.keypoints.to_coco_annotation`).

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` ->
        float (COCOeval's ``stats``; -1.0 where COCO has nothing to score, e.g. no
        medium-size objects).

    Raises:
        MetricInputError: if pycocotools is not installed, ``gt_coco`` is malformed, or
            ``predictions`` is empty or lacks the result fields.
    """
    COCO, COCOeval = _import_pycocotools()
    data = _complete_ground_truth(gt_coco)
    needed = ("image_id", "category_id", "keypoints", "score")
    if not predictions:
        raise MetricInputError("predictions is empty; COCO AP needs at least one detection")
    image_ids = {img.get("id") for img in data["images"]}
    for i, det in enumerate(predictions):
        if not isinstance(det, Mapping) or any(k not in det for k in needed):
            raise MetricInputError(f"predictions[{i}] must be a dict with {list(needed)}")
        if det["image_id"] not in image_ids:
            raise MetricInputError(
                f"predictions[{i}] has image_id {det['image_id']!r}, which is not an image of gt_coco"
            )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        dt = gt.loadRes(copy.deepcopy(list(predictions)))
        evaluator = COCOeval(gt, dt, iouType="keypoints")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(v) for name, v in zip(_COCO_STATS, evaluator.stats)}
