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
``cropbox_inverse`` to 0.0).  The pose crop exists twice, computed the same way: for one bbox
(:func:`pose_cropbox`, a :class:`Cropbox`) and for a batch (:func:`pose_crop_transforms`,
numpy, for descriptors of millions of poses); :func:`crop_frame_points` maps points with the
batched form.  Its size and padding are the checkpoint's (released values:
:data:`illustpose.registry.POSE_CROP_SIZE` / ``POSE_CROP_PADDING``).  :func:`rc_to_xy` is the
single place where (row, col) becomes (x, y).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .errors import KeypointError

__all__ = [
    "Cropbox",
    "resize_min_size",
    "resize_max_size",
    "segmenter_frame",
    "square_cropbox",
    "compose_cropboxes",
    "pose_cropbox",
    "pose_crop_transforms",
    "apply_crop_transforms",
    "crop_frame_points",
    "crop_to_image_affine",
    "fit_in_square",
    "heatmap_cell_xy",
    "invert_cropbox",
    "cropbox_points",
    "bbox_from_mask",
    "mask_above",
    "bbox_rc_to_xywh",
    "bbox_xywh_to_rc",
    "rc_to_xy",
    "xy_to_rc",
]

Pair = tuple[float, float]

#: ``infer_pose``'s ``pad_factor`` (the reference's default, never changed by its callers)
_PAD_FACTOR = 1


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


def segmenter_frame(hw: Sequence[int], s: int, max_long: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The segmenter's working canvas and where the resized image lies on it.

    The reference's :func:`resize_min_size` whenever its long side is at most ``max_long``
    (the image then fills the canvas).  Beyond, the canvas is ``s`` by ``max_long`` and the
    image, its long side scaled to ``max_long`` and its short side to
    ``max(1, round(short * max_long / long))``, is centred on it (floor division puts an odd
    remainder on the far side).

    Args:
        hw: the image's ``(h, w)`` in pixels, each >= 1.
        s: the working short side (``largs.bg_seg.size``, 256).
        max_long: the largest working long side allowed, >= ``s``.

    Returns:
        ``((canvas_h, canvas_w), (top, left, h, w))`` in working pixels.
    """
    rh, rw = resize_min_size(hw, s)
    if max(rh, rw) <= max_long:
        return (rh, rw), (0, 0, rh, rw)
    h, w = hw
    if w < h:  # tall, as resize_min_size decides
        iw = max(1, round(w * max_long / h))
        return (max_long, s), (0, (s - iw) // 2, max_long, iw)
    ih = max(1, round(h * max_long / w))
    return (s, max_long), ((s - ih) // 2, 0, ih, max_long)


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


def pose_cropbox(bbox_rc_hw: Sequence[int], size: int, padding: float) -> Cropbox:
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
    steps = [
        Cropbox((r0, c0), (h, w), (h, w)),
        square_cropbox((h, w), size),
        Cropbox(_pair(-p * _PAD_FACTOR / 2), _pair(size + p * _PAD_FACTOR), _pair(size)),
    ]
    out = steps[-1]
    for cb in reversed(steps[:-1]):
        out = compose_cropboxes(cb, out)
    return out


def pose_crop_transforms(bbox_xywh: np.ndarray, size: int, padding: float) -> np.ndarray:
    """:func:`pose_cropbox` for a batch of bboxes, as ``(from_row, from_col, scale_row, scale_col)``.

    The same float64 operations in the same order as composing the reference's
    ``cropbox_sequence`` (bbox -> centred square -> padding) one bbox at a time, broadcast
    over the batch, so ``crop = (image - from) * scale`` per axis equals
    :func:`cropbox_points` through :func:`pose_cropbox` bit for bit (tested).

    Args:
        bbox_xywh: float64 (N, 4) COCO ``[x, y, w, h]`` pixels, ``w, h > 0`` (not checked here).
        size, padding: the crop side in pixels and the padding fraction.

    Returns:
        float64 (N, 4).
    """
    x0, y0, w, h = (bbox_xywh[:, i] for i in range(4))
    p = size * padding
    corner_pad = -p * _PAD_FACTOR / 2
    sf = np.maximum(h, w) / size
    # square_cropbox: centre the bbox in a max(h, w) square (floor division, as in Python)
    corner_r = np.where(h < w, np.floor_divide(-(w - h), 2), 0.0)
    corner_c = np.where(h < w, 0.0, np.floor_divide(-(h - w), 2))
    # the (h / h) and (w / w) factors are compose_cropboxes' unit scale of the first step
    return np.stack([
        y0 + (corner_r + corner_pad * sf) * (h / h),
        x0 + (corner_c + corner_pad * sf) * (w / w),
        size / (((size + p * _PAD_FACTOR) * sf) * (h / h)),
        size / (((size + p * _PAD_FACTOR) * sf) * (w / w)),
    ], axis=1)


def apply_crop_transforms(xy: np.ndarray, transforms: np.ndarray, out: np.ndarray) -> None:
    """Map (N, J, 2) ``(x, y)`` points into their crops, in place in ``out`` (N, J, 2) ``(row, col)``.

    ``out[..., 0] = (y - from_row) * scale_row``, ``out[..., 1] = (x - from_col) * scale_col``
    with ``transforms`` from :func:`pose_crop_transforms` (one row per pose).
    """
    np.subtract(xy[..., 1], transforms[:, 0, None], out=out[..., 0])
    np.multiply(out[..., 0], transforms[:, 2, None], out=out[..., 0])
    np.subtract(xy[..., 0], transforms[:, 1, None], out=out[..., 1])
    np.multiply(out[..., 1], transforms[:, 3, None], out=out[..., 1])


def crop_frame_points(keypoints_xy, bbox_xywh, *, size: int, padding: float) -> np.ndarray:
    """Map poses into their pose crop frame, vectorised.

    Equals ``cropbox_points(xy_to_rc(kp), pose_cropbox(bbox_xywh_to_rc(bbox), size, padding))``
    bit for bit, for every pose of the batch.

    Args:
        keypoints_xy: float (N, J, 2) ``(x, y)`` image pixels (NaN allowed, kept).
        bbox_xywh: float (N, 4) COCO ``[x, y, w, h]`` pixels, finite, ``w, h > 0``.
        size, padding: the crop side (pixels) and padding fraction.

    Returns:
        float64 (N, J, 2) ``(row, col)`` crop-frame pixels (``0..size`` inside the crop).

    Raises:
        KeypointError: mismatched shapes, or a bbox that is not finite or has a side <= 0.
    """
    xy = np.asarray(keypoints_xy, dtype=np.float64)
    bbox = np.asarray(bbox_xywh, dtype=np.float64)
    if xy.ndim != 3 or xy.shape[2] != 2 or bbox.shape != (xy.shape[0], 4):
        raise KeypointError(f"expected keypoints (N, J, 2) (x, y pixels) and bbox_xywh (N, 4), "
                            f"got {xy.shape} and {bbox.shape}")
    if not np.isfinite(bbox).all() or (bbox[:, 2:] <= 0).any():
        raise KeypointError(f"bbox_xywh must be finite [x, y, w, h] pixels with w > 0 and h > 0, got {bbox.tolist()}")
    out = np.empty_like(xy)
    apply_crop_transforms(xy, pose_crop_transforms(bbox, size, padding), out)
    return out


def crop_to_image_affine(cb: Cropbox, grid_hw: Sequence[int]) -> np.ndarray:
    """The 2x3 affine map from a ``grid_hw`` grid laid over a crop to image pixels, in (x, y).

    The crop's ``to_size`` target is divided into ``grid_hw`` cells (the pose head's 128 x 128
    heatmap over the 256 px crop); cell ``(x, y)`` maps to image
    ``(x * from_w / grid_w + from_col, y * from_h / grid_h + from_row)``: the inverse cropbox of
    the keypoints (:func:`invert_cropbox`) with the cell scale folded in.

    Returns:
        float64 (2, 3) ``[[sx, 0, tx], [0, sy, ty]]`` (the layout of ``cv2.warpAffine``).
    """
    (r0, c0), (fh, fw), _ = (_pair(q) for q in cb)
    gh, gw = grid_hw
    return np.array([[fw / gw, 0.0, c0], [0.0, fh / gh, r0]], dtype=np.float64)


def fit_in_square(width: float, height: float, size: int) -> tuple[int, int, int, int]:
    """Letterbox placement: a ``width`` x ``height`` picture scaled to fit a ``size`` square, centred.

    Returns:
        ``(w, h, x, y)`` in pixels: the scaled size (each side >= 1, rounded) and the top-left
        corner of the picture inside the square.
    """
    s = size / max(width, height)
    w, h = max(1, round(width * s)), max(1, round(height * s))
    return w, h, (size - w) // 2, (size - h) // 2


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
    a = mask_above(mask_u8, threshold)
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


def mask_above(mask_u8: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Where ``value / 255 > threshold`` (float64, as the reference) in an 8-bit mask.

    Looked up per byte value, so a full-size mask costs one bool per pixel, never a float copy.

    Args:
        mask_u8: uint8 array of any shape, 0..255.
        threshold: any float.

    Returns:
        bool array of the mask's shape.
    """
    table = np.arange(256, dtype=np.float64) / 255.0 > threshold
    return table[np.asarray(mask_u8, dtype=np.uint8)]


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
