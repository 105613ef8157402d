"""Drawing poses: ControlNet OpenPose control images and preview overlays (numpy + cv2).

* :func:`draw_openpose` / :func:`render_pose_keypoint` paint the OpenPose-18 body exactly as
  comfyui_controlnet_aux does (``src/custom_controlnet_aux/dwpose/util.py draw_bodypose``,
  ``dwpose/__init__.py draw_poses`` and the DWPose node's final resize), so a ControlNet
  trained on those images sees the same pixels.
* :func:`draw_skeleton` is a deterministic preview of the model's COCO-17 (+ extras) output
  over the input image, after the reference's visualisation (``_util/keypoints_v0.py``:
  ``coco_parts`` lines, dots and a bbox) but with fixed colours instead of random ones.

All images are uint8 ``(H, W, 3)`` RGB; keypoints are ``(x, y)`` pixels, x right, y down.
"""

from __future__ import annotations

import colorsys
import math
from numbers import Integral

import cv2
import numpy as np

from .errors import ImageError, KeypointError, RenderError
from .keypoints import (
    COCO_SKELETON,
    EXTRA_SKELETON,
    _as_float,
    _float_array,
    as_openpose_person,
    parse_pose_keypoint,
)

__all__ = [
    "OPENPOSE_LIMBS",
    "OPENPOSE_COLORS",
    "SKELETON_COLORS",
    "draw_openpose",
    "render_pose_keypoint",
    "draw_skeleton",
    "draw_pose_results",
]




#: The 17 OpenPose limbs as 0-based OpenPose-18 index pairs, in cn_aux's drawing order
#: (its ``limbSeq`` minus one): neck-shoulders, arms, neck-hips, legs, neck-nose, face.
OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)

#: cn_aux's 18 OpenPose colours (RGB): joint ``i`` and limb ``i`` use colour ``i``.
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

#: Fixed RGB colour of each of the 14 :data:`~illustpose.keypoints.COCO_SKELETON` parts in
#: previews: evenly spaced fully saturated hues (the reference's ``ucolors(14)`` without its
#: random lightness / saturation).
SKELETON_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    tuple(round(255 * c) for c in colorsys.hsv_to_rgb(i / len(COCO_SKELETON), 1.0, 1.0))
    for i in range(len(COCO_SKELETON))
)

_EXTRA_COLOR = (255, 255, 255)  # preview colour of the extra parts (nose_root, thumbs, toes)
_MARK_COLOR = (255, 0, 0)  # preview joints and bbox: red, as the reference's visualisation
_SHIFT = 4  # sub-pixel bits for preview drawing (cv2 fixed point: value * 2**_SHIFT)


# --------------------------------------------------------------------------- OpenPose


def _canvas_hw(canvas_hw) -> tuple[int, int]:
    """``(height, width)`` as positive Python ints; RenderError otherwise."""
    try:
        h, w = canvas_hw
    except (TypeError, ValueError):
        raise RenderError(f"canvas_hw must be (height, width), got {canvas_hw!r}") from None
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, Integral) or v <= 0:
            raise RenderError(f"canvas_hw must be two positive integers (pixels), got {canvas_hw!r}")
    return int(h), int(w)


def _positive_int(value, name: str) -> int:
    """``value`` as a positive Python int; RenderError otherwise."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value <= 0:
        raise RenderError(f"{name} must be a positive integer (pixels), got {value!r}")
    return int(value)


def _stick_scale(height: int, width: int, xinsr: bool) -> int:
    """Limb-width factor: 1, or for xinsir's SDXL ControlNet ``min(2 + max_side // 1000, 7)``
    once the canvas' long side reaches 500 px (cn_aux ``draw_bodypose``)."""
    max_side = max(height, width)
    if not xinsr or max_side < 500:
        return 1
    return min(2 + max_side // 1000, 7)


def _draw_limbs(canvas: np.ndarray, xy: np.ndarray, present: np.ndarray, minor_axis: int) -> None:
    """Paint each limb with both ends present as a filled ellipse, colour * 0.6 (cn_aux rule).

    The ellipse is centred on the truncated midpoint, with semi-axes ``int(length / 2)`` and
    ``minor_axis``, rotated by the truncated angle in degrees; all truncations are ``int()``
    (towards zero) as in cn_aux, and the arithmetic is the same float64 sequence.
    """
    for (i, j), color in zip(OPENPOSE_LIMBS, OPENPOSE_COLORS):
        if not (present[i] and present[j]):
            continue
        (x1, y1), (x2, y2) = xy[i].tolist(), xy[j].tolist()
        center = (int((x1 + x2) / 2), int((y1 + y2) / 2))
        length = ((x1 - x2) ** 2 + (y1 - y2) ** 2) ** 0.5
        angle = int(math.degrees(math.atan2(y1 - y2, x1 - x2)))
        polygon = cv2.ellipse2Poly(center, (int(length / 2), minor_axis), angle, 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, [int(float(c) * 0.6) for c in color])


def _draw_joints(canvas: np.ndarray, xy: np.ndarray, present: np.ndarray, radius: int) -> None:
    """Paint each present joint as a filled full-colour circle at ``(int(x), int(y))``."""
    for (x, y), p, color in zip(xy.tolist(), present.tolist(), OPENPOSE_COLORS):
        if p:
            cv2.circle(canvas, (int(x), int(y)), radius, color, thickness=-1)


def draw_openpose(
    people,
    canvas_hw,
    *,
    stick_width: int = 4,
    joint_radius: int = 4,
    xinsr_stick_scaling: bool = False,
) -> np.ndarray:
    """Draw OpenPose-18 bodies as a ControlNet OpenPose control image.

    Pixel-identical to comfyui_controlnet_aux ``dwpose/util.py draw_bodypose`` called through
    ``draw_poses`` for the same pixel keypoints: black canvas; people in order, each with its
    limbs first (filled ellipse polygons from ``cv2.ellipse2Poly``, colour ``int(c * 0.6)``,
    painted opaquely) then its joints (filled ``cv2.circle``, full colour); coordinates
    truncated with ``int()``.  Bodies only (no hands or face).

    Args:
        people: iterable of ``(xy, present)`` pairs (e.g.
            :class:`~illustpose.keypoints.OpenPosePerson`): ``xy`` (18, 2) ``(x, y)`` *pixels*
            of this canvas in OpenPose-18 order, ``present`` (18,) bool.  Normalised
            coordinates must be scaled first (:func:`~illustpose.keypoints.parse_pose_keypoint`
            does so).
        canvas_hw: ``(height, width)`` of the output in pixels.
        stick_width: limb half-width in pixels before xinsr scaling (cn_aux: 4).
        joint_radius: joint circle radius in pixels (cn_aux: 4).
        xinsr_stick_scaling: widen limbs for xinsir's SDXL OpenPose ControlNet (cn_aux's
            "scale_stick_for_xinsr_cn"): x1 below a 500 px long side, else
            ``min(2 + long_side // 1000, 7)``.

    Returns:
        uint8 array (height, width, 3), RGB.

    Raises:
        RenderError: on a bad canvas size, stick width or joint radius.
        KeypointError: on a malformed person.
    """
    height, width = _canvas_hw(canvas_hw)
    minor_axis = _positive_int(stick_width, "stick_width") * _stick_scale(height, width, xinsr_stick_scaling)
    radius = _positive_int(joint_radius, "joint_radius")
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in people:
        xy, present = as_openpose_person(person)
        _draw_limbs(canvas, xy, present, minor_axis)
        _draw_joints(canvas, xy, present, radius)
    return canvas


def _resize_short_side(image: np.ndarray, resolution: int) -> np.ndarray:
    """Resize so the short side is ``resolution``, as cn_aux ``util.resize_image_with_pad``.

    Scale ``k = resolution / min(H, W)``; target sides ``int(np.round(side * k))`` (numpy's
    round-half-to-even); ``cv2.INTER_CUBIC`` when enlarging (the DWPose node's default
    ``upscale_method``), ``cv2.INTER_AREA`` otherwise.  cn_aux's 64-multiple edge padding is
    cropped off again there, so it is not done here.
    """
    h, w = image.shape[:2]
    k = float(resolution) / float(min(h, w))
    size_hw = (int(np.round(float(h) * k)), int(np.round(float(w) * k)))
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    return cv2.resize(image, size_hw[::-1], interpolation=interpolation)


def render_pose_keypoint(value, resolution: int | None = None, *, xinsr_stick_scaling: bool = False) -> list:
    """Render every frame of a POSE_KEYPOINT value as an OpenPose control image.

    Each frame is decoded by :func:`~illustpose.keypoints.parse_pose_keypoint` (its confidence
    and normalisation rules) and drawn at its own canvas size by :func:`draw_openpose`, as
    cn_aux's DWPose node draws before resizing.  Unlike cn_aux's ``RenderPeopleKps`` (first
    frame only, hands and face too) every frame is rendered and only bodies are drawn.

    Args:
        value: POSE_KEYPOINT: a list of frame dicts, one frame dict, or their JSON text.
        resolution: None to keep each canvas size; else the short side in pixels (>= 1) to
            resize the drawn image to, the way the DWPose node does (cn_aux
            ``util.resize_image_with_pad``): sides ``int(np.round(side * k))`` with
            ``k = resolution / min(H, W)``, ``cv2.INTER_CUBIC`` when enlarging (the node's
            default ``upscale_method``), ``cv2.INTER_AREA`` otherwise.  cn_aux silently
            replaces values below 64 with 512; this function uses the value given.
        xinsr_stick_scaling: as in :func:`draw_openpose`, decided at the canvas size.

    Returns:
        list of uint8 (H, W, 3) RGB arrays, one per frame.

    Raises:
        PoseFormatError: on a malformed value.
        RenderError: on a bad resolution.
    """
    images = [
        draw_openpose(frame.people, frame.canvas_hw, xinsr_stick_scaling=xinsr_stick_scaling)
        for frame in parse_pose_keypoint(value)
    ]
    if resolution is None:
        return images
    resolution = _positive_int(resolution, "resolution")
    return [_resize_short_side(image, resolution) for image in images]


# --------------------------------------------------------------------------- preview


def _check_image(image_rgb) -> np.ndarray:
    """A uint8 (H, W, 3) ndarray, else ImageError."""
    if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8 or (
        image_rgb.ndim != 3 or image_rgb.shape[2] != 3
    ):
        desc = f"{image_rgb.dtype} {image_rgb.shape}" if isinstance(image_rgb, np.ndarray) else type(image_rgb).__name__
        raise ImageError(f"image_rgb must be a uint8 (H, W, 3) RGB array, got {desc}; drop alpha first")
    return image_rgb


def _fixed_point(xy: np.ndarray) -> list:
    """(x, y) pixels -> cv2 fixed-point integer pairs with :data:`_SHIFT` fractional bits."""
    return [tuple(p) for p in np.round(xy * (1 << _SHIFT)).astype(np.int64).tolist()]


def draw_skeleton(
    image_rgb,
    keypoints_xy,
    scores=None,
    *,
    bbox_xywh=None,
    threshold: float = 0.0,
    draw_extra: bool = False,
) -> np.ndarray:
    """Preview overlay of one predicted pose on its image (deterministic colours).

    Draws, anti-aliased with sub-pixel precision: the bbox rectangle (red), the 14 reference
    ``coco_parts`` (:data:`~illustpose.keypoints.COCO_SKELETON`) each in its
    :data:`SKELETON_COLORS` colour, optionally the 5 extra parts (white), then the joints as
    red dots.  Line width ``t = max(1, round(min(H, W) / 100))`` (5 px at 512, as the
    reference), dot radius ``t``, bbox width ``max(1, t // 2)``.  A joint is drawn when its
    score ``>= threshold``; a part when both its joints are.

    Args:
        image_rgb: uint8 (H, W, 3) RGB; not modified.
        keypoints_xy: array-like (17, 2) or (25, 2), ``(x, y)`` pixels of ``image_rgb``
            (:data:`~illustpose.keypoints.ALL_KEYPOINTS` order).
        scores: array-like (K,) of per-joint scores, or None to draw every joint.
        bbox_xywh: optional COCO box ``[x, y, w, h]`` in pixels.
        threshold: minimum score of a drawn joint.
        draw_extra: also draw the extra parts and joints 17..24 (needs K = 25).

    Returns:
        a new uint8 (H, W, 3) RGB array.

    Raises:
        ImageError: if ``image_rgb`` is not uint8 (H, W, 3).
        KeypointError: on wrong keypoint / score / bbox shapes, non-finite drawn joints, or
            ``draw_extra`` with 17 keypoints.
    """
    canvas = _check_image(image_rgb).copy()
    xy = _as_float(keypoints_xy, "keypoints_xy")
    if xy.shape not in ((17, 2), (25, 2)):
        raise KeypointError(f"keypoints_xy must have shape (17, 2) or (25, 2) (x, y pixels), got {xy.shape}")
    k = len(xy)
    if draw_extra and k != 25:
        raise KeypointError("draw_extra needs the 25 model channels, got 17 keypoints")
    score = np.ones(k) if scores is None else _float_array(scores, (k,), "scores")
    shown = (score >= threshold) & (np.arange(k) < (25 if draw_extra else 17))
    if not np.isfinite(xy[shown]).all():
        raise KeypointError("keypoints_xy holds NaN or inf for a joint that would be drawn")
    t = max(1, round(min(canvas.shape[:2]) / 100))
    if bbox_xywh is not None:
        x, y, w, h = _float_array(bbox_xywh, (4,), "bbox_xywh [x, y, w, h]")
        if not math.isfinite(x + y + w + h):
            raise KeypointError(f"bbox_xywh must be finite, got {[x, y, w, h]}")
        p0, p1 = _fixed_point(np.array([[x, y], [x + w, y + h]]))
        cv2.rectangle(canvas, p0, p1, _MARK_COLOR, max(1, t // 2), cv2.LINE_AA, _SHIFT)
    points = _fixed_point(np.where(np.isfinite(xy), xy, 0.0))
    parts = list(zip(COCO_SKELETON, SKELETON_COLORS))
    if draw_extra:
        parts += [(pair, _EXTRA_COLOR) for pair in EXTRA_SKELETON]
    for (i, j), color in parts:
        if shown[i] and shown[j]:
            cv2.line(canvas, points[i], points[j], color, t, cv2.LINE_AA, _SHIFT)
    for point, visible in zip(points, shown.tolist()):
        if visible:
            cv2.circle(canvas, point, t << _SHIFT, _MARK_COLOR, -1, cv2.LINE_AA, _SHIFT)
    return canvas


def draw_pose_results(rgb: np.ndarray, poses, threshold: float = 0.0, draw_extra: bool = False) -> np.ndarray:
    """Each pose's box and skeleton (its :meth:`~illustpose.results.PoseResult.visible` joints)
    drawn over ``rgb`` (uint8 (H, W, 3), not modified) by :func:`draw_skeleton`;
    a new array, a copy of ``rgb`` when there is no pose."""
    out = rgb.copy()
    for p in poses:
        # draw_skeleton draws the joints whose score reaches its threshold: 1/0 says which
        out = draw_skeleton(out, p.keypoints, p.visible(threshold).astype(np.float64), bbox_xywh=list(p.bbox_xywh),
                            threshold=0.5, draw_extra=draw_extra)
    return out
