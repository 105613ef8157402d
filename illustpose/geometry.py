"""Crop, resize and bbox geometry of the reference implementation, in exact float64.

Conventions (the reference's ``_util/twodee_v0.py``):

* sizes are ``(h, w)``; points are ``(row, col)`` = ``(y, x)`` in pixels, the origin at
  the top-left corner of the top-left pixel; nothing here adds a half-pixel offset;
* a bbox is ``(row0, col0, h, w)`` here and ``[x, y, w, h]`` (COCO) at the library's edges;
* a *cropbox* ``(from_corner, from_size, to_size)`` maps the source rectangle that starts at
  ``from_corner`` with size ``from_size`` onto a ``to_size`` target:
  ``target = (source - from_corner) * to_size / from_size``.

All arithmetic is done with Python floats in the reference's order of operations, so the
results equal the reference bit for bit (the golden files check ``cropbox`` and
``cropbox_inverse`` to 0.0).  :func:`rc_to_xy` is the single place where (row, col) becomes
(x, y).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "Cropbox",
    "resize_min_size",
    "resize_max_size",
    "square_cropbox",
    "compose_cropboxes",
    "pose_cropbox",
    "heatmap_cell_xy",
    "invert_cropbox",
    "cropbox_points",
    "bbox_from_mask",
    "bbox_rc_to_xywh",
    "bbox_xywh_to_rc",
    "rc_to_xy",
    "xy_to_rc",
]

Pair = tuple[float, float]


class Cropbox(NamedTuple):
    """A forward crop: source rectangle ``from_corner``/``from_size`` -> target ``to_size``.

    Each field is a ``(row, col)`` or ``(h, w)`` pair of floats in pixels.  Mirrors the
    reference's ``[from_corner, from_size, to_size]`` lists (``_util/twodee_v0.py``).
    """

    from_corner: Pair
    from_size: Pair
    to_size: Pair

    def as_array(self) -> np.ndarray:
        """The cropbox as a float64 array of shape (3, 2): rows from_corner, from_size, to_size."""
        return np.asarray(self, dtype=np.float64)


def _pair(v) -> Pair:
    if isinstance(v, (tuple, list, np.ndarray)):
        a, b = v
        return (a, b)
    return (v, v)


def resize_min_size(hw: Sequence[int], s: int) -> tuple[int, int]:
    """Size ``(h, w)`` with the short side scaled to ``s``; the long side is truncated.

    Reference: ``resize_min_dry`` (``_util/twodee_v0.py``): ``w < h -> (int(h*s/w), s)``,
    else ``(s, int(w*s/h))``.
    """
    h, w = hw
    return (int(h * s / w), s) if w < h else (s, int(w * s / h))


def resize_max_size(hw: Sequence[int], s: int) -> tuple[int, int]:
    """Size ``(h, w)`` with the long side scaled to ``s``; the short side is truncated.

    Reference: ``resize_max_dry``: ``h < w -> (int(h*s/w), s)``, else ``(s, int(w*s/h))``.
    """
    h, w = hw
    return (int(h * s / w), s) if h < w else (s, int(w * s / h))


def square_cropbox(hw: Sequence[int], s: int) -> Cropbox:
    """Cropbox that centres an ``(h, w)`` image in a square of side ``max(h, w)`` and scales it to ``s``.

    The centring offset uses Python floor division of a negative number, as the reference's
    ``resize_square_dry`` does (so an odd difference puts the extra pixel on the far side).
    """
    h, w = hw
    corner = (-(w - h) // 2, 0) if h < w else (0, -(h - w) // 2)
    m = max(h, w)
    return Cropbox(corner, (m, m), (s, s))


def compose_cropboxes(first: Cropbox, second: Cropbox) -> Cropbox:
    """The cropbox equal to applying ``first`` then ``second`` (reference ``cropbox_compose``)."""
    fca, fsa, tsa = (_pair(q) for q in first)
    fcb, fsb, tsb = (_pair(q) for q in second)
    sfr = fsa[0] / tsa[0]
    sfc = fsa[1] / tsa[1]
    return Cropbox(
        (fca[0] + fcb[0] * sfr, fca[1] + fcb[1] * sfc),
        (fsb[0] * sfr, fsb[1] * sfc),
        tuple(tsb),
    )


def pose_cropbox(bbox_rc_hw: Sequence[int], size: int = 256, padding: float = 0.1) -> Cropbox:
    """The pose estimator's input crop for a character bbox.

    Reference: ``_scripts/pose_estimator.py infer_pose``: crop to the bbox, centre it in a
    square and scale to ``size``, then pad by ``size * padding`` split over both sides, keeping
    the output at ``size``.  In closed form the source is a ``(1 + padding) * max(h, w)`` square
    centred on the bbox (it may extend outside the image).

    Args:
        bbox_rc_hw: ``(row0, col0, h, w)`` in pixels, integers from :func:`bbox_from_mask`.
        size: output side in pixels (``largs.danbooru_coco.size`` of the checkpoint, 256).
        padding: fraction of ``size`` added as a border (``largs.danbooru_coco.padding``, 0.1).

    Returns:
        The forward cropbox (float64 values, unrounded).
    """
    r0, c0, h, w = bbox_rc_hw
    p = size * padding
    pad_factor = 1  # the reference's infer_pose default
    steps = [
        Cropbox((r0, c0), (h, w), (h, w)),
        square_cropbox((h, w), size),
        Cropbox(_pair(-p * pad_factor / 2), _pair(size + p * pad_factor), _pair(size)),
    ]
    out = steps[-1]
    for cb in reversed(steps[:-1]):
        out = compose_cropboxes(cb, out)
    return out


def heatmap_cell_xy(cb: Cropbox, heatmap_size: int) -> np.ndarray:
    """Size of one heatmap cell of a pose crop in original-image pixels, as float64 ``(x, y)``.

    The crop's ``from_size`` (image pixels) maps onto the ``heatmap_size`` cells of the pose
    head (128 released), so a keypoint moved by one cell moves by ``from_size / heatmap_size``.
    """
    return np.asarray(cb.from_size[::-1], dtype=np.float64) / heatmap_size


def invert_cropbox(image_hw: Sequence[int], cb: Cropbox) -> Cropbox:
    """The cropbox that maps target (crop) pixels back to the source image.

    Reference ``cropbox_inverse``: with ``k = to_size / from_size`` per axis, returns
    ``((-from_corner * k), (image_hw * k), image_hw)``.  Applying it with
    :func:`cropbox_points` gives ``source = target * from_size / to_size + from_corner``.
    """
    fc, fs, ts = (_pair(q) for q in cb)
    hh, ww = _pair(image_hw)
    sr, sc = ts[0] / fs[0], ts[1] / fs[1]
    return Cropbox((-fc[0] * sr, -fc[1] * sc), (hh * sr, ww * sc), (hh, ww))


def cropbox_points(points_rc: np.ndarray, cb: Cropbox) -> np.ndarray:
    """Map points through a cropbox: ``(points - from_corner) * to_size / from_size``.

    Args:
        points_rc: array-like of shape (N, 2), (row, col) pixels, any float dtype.

    Returns:
        float64 array (N, 2), (row, col) pixels of the target frame (may lie outside it).

    Raises:
        ValueError: if ``points_rc`` is not (N, 2).
    """
    pts = np.asarray(points_rc)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2), got {pts.shape}")
    fc, fs, ts = (_pair(q) for q in cb)
    scale = np.asarray([ts[0] / fs[0], ts[1] / fs[1]])[None]
    return (pts - np.asarray(fc)[None]) * scale


def bbox_from_mask(mask_u8: np.ndarray, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """Character bbox from an 8-bit mask, by the reference's ``abbox(thresh, allow_empty=True)``.

    A pixel counts when ``value / 255 > threshold`` (so 128 and up at 0.5).  The box spans
    the first to last counted row/column, grown by one pixel on the top/left side only
    (``row0 = max(rmin - 1, 0)``, ``row_end = min(rmax + 1, H)``).  An empty mask gives the
    whole image.

    Args:
        mask_u8: uint8 array (H, W), 0..255.
        threshold: in [0, 1).

    Returns:
        ``(row0, col0, h, w)`` as Python ints, pixels.
    """
    a = np.asarray(mask_u8).astype(np.float64) / 255.0 > threshold
    rows = np.flatnonzero(a.any(axis=1))
    cols = np.flatnonzero(a.any(axis=0))
    hh, ww = a.shape
    if rows.size == 0:
        rows = np.asarray([0, hh])
    if cols.size == 0:
        cols = np.asarray([0, ww])
    r0, r1 = max(int(rows.min()) - 1, 0), min(int(rows.max()) + 1, hh)
    c0, c1 = max(int(cols.min()) - 1, 0), min(int(cols.max()) + 1, ww)
    return (r0, c0, r1 - r0, c1 - c0)


def bbox_rc_to_xywh(bbox_rc_hw: Sequence[float]) -> list:
    """``(row0, col0, h, w)`` -> COCO ``[x, y, w, h]`` (same numbers, reordered)."""
    r0, c0, h, w = bbox_rc_hw
    return [c0, r0, w, h]


def bbox_xywh_to_rc(bbox_xywh: Sequence[float]) -> tuple:
    """COCO ``[x, y, w, h]`` -> ``(row0, col0, h, w)``."""
    x, y, w, h = bbox_xywh
    return (y, x, h, w)


def rc_to_xy(points_rc: np.ndarray) -> np.ndarray:
    """(row, col) -> (x, y): swap the last axis.  No half-pixel shift: the reference's
    keypoints are cell top-left corners (``argmax * stride``) and stay so."""
    return np.asarray(points_rc)[..., ::-1].copy()


def xy_to_rc(points_xy: np.ndarray) -> np.ndarray:
    """(x, y) -> (row, col): swap the last axis."""
    return np.asarray(points_xy)[..., ::-1].copy()
