"""Keypoint schemas and the two exchange formats: ComfyUI's POSE_KEYPOINT and COCO keypoints.

Pure numpy; nothing here draws (see :mod:`illustpose.render`) or runs a model.

Conventions used throughout:

* coordinates are ``(x, y)`` in pixels of the image the pose belongs to, x to the right and
  y down, origin at the top-left corner of the top-left pixel (the frame of
  :mod:`illustpose.geometry`; convert the reference's ``(row, col)`` with
  ``geometry.rc_to_xy`` first);
* "left" / "right" are the *character's* own sides (COCO convention);
* schemas: COCO-17 (:data:`COCO_KEYPOINTS`), the model's 25 channels (:data:`ALL_KEYPOINTS`
  = COCO-17 + 8 extras) and OpenPose-18 (:data:`OPENPOSE18_KEYPOINTS`).

Sources: the reference ``_util/keypoints_v0.py`` (names, parts, OKS sigmas) and
comfyui_controlnet_aux (``src/custom_controlnet_aux/dwpose/__init__.py``
``encode_poses_as_dict`` / ``decode_json_as_poses``, ``dwpose/util.py is_normalized``,
``dwpose/wholebody.py`` for the COCO-17 -> OpenPose-18 mapping).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np

from .errors import KeypointError, PoseFormatError

__all__ = [
    "COCO_KEYPOINTS",
    "EXTRA_KEYPOINTS",
    "ALL_KEYPOINTS",
    "COCO_SKELETON",
    "EXTRA_SKELETON",
    "COCO_OKS_SIGMAS",
    "OPENPOSE18_KEYPOINTS",
    "OPENPOSE18_FROM_COCO17",
    "OpenPosePerson",
    "PoseFrame",
    "as_openpose_person",
    "coco17_to_openpose18",
    "to_pose_keypoint",
    "parse_pose_keypoint",
    "coco_categories",
    "to_coco_annotation",
    "from_coco_annotation",
    "coco_to_pose_keypoint",
    "flip_permutation",
    "mirror_keypoints",
]






# --------------------------------------------------------------------------- schemas

#: The 17 COCO body keypoints in COCO order, COCO's official spelling.
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: The model's extra output channels 17..24.  The reference (``coco_keypoints_ext``) names
#: 17..22 nose_root, body_upper, thumb_left, thumb_right, toe_left, toe_right (respelled
#: here COCO-style); channels 23 and 24 are unnamed there.
EXTRA_KEYPOINTS: tuple[str, ...] = (
    "nose_root",
    "body_upper",
    "left_thumb",
    "right_thumb",
    "left_toe",
    "right_toe",
    "extra_23",
    "extra_24",
)

#: All 25 heatmap channels of the pose model, in channel order.
ALL_KEYPOINTS: tuple[str, ...] = COCO_KEYPOINTS + EXTRA_KEYPOINTS

#: The reference's 14 ``coco_parts`` (0-based index pairs into COCO-17).
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (4, 2), (2, 0), (0, 1), (1, 3),
    (10, 8), (8, 6), (6, 5), (5, 7), (7, 9),
    (16, 14), (14, 12), (12, 11), (11, 13), (13, 15),
)

#: The reference's extra parts (0-based pairs into :data:`ALL_KEYPOINTS`): nose-nose_root,
#: wrists-thumbs, ankles-toes.
EXTRA_SKELETON: tuple[tuple[int, int], ...] = ((0, 17), (9, 19), (10, 20), (15, 21), (16, 22))

#: Per-keypoint OKS sigmas of COCO-17 (reference ``coco_oks_sigmas`` = COCO's values / 10).
COCO_OKS_SIGMAS: tuple[float, ...] = tuple(
    s / 10.0
    for s in (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72,
              0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89)
)

#: OpenPose-18 (COCO-18) body order, as drawn by ControlNet's OpenPose preprocessors.
OPENPOSE18_KEYPOINTS: tuple[str, ...] = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)

#: For each OpenPose-18 slot, the COCO-17 index it is copied from; ``None`` for the neck,
#: which is the midpoint of the shoulders (cn_aux ``wholebody.py`` mmpose_idx/openpose_idx).
OPENPOSE18_FROM_COCO17: tuple[int | None, ...] = tuple(
    None if name == "neck" else COCO_KEYPOINTS.index(name) for name in OPENPOSE18_KEYPOINTS
)

# The official COCO person skeleton (1-based), as in person_keypoints_*.json.
_COCO_OFFICIAL_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

_SCHEMAS = {17: COCO_KEYPOINTS, 18: OPENPOSE18_KEYPOINTS, 25: ALL_KEYPOINTS}
_NECK = OPENPOSE18_KEYPOINTS.index("neck")
_SHOULDERS = (COCO_KEYPOINTS.index("left_shoulder"), COCO_KEYPOINTS.index("right_shoulder"))


# --------------------------------------------------------------------------- validation


def _as_float(value, name: str) -> np.ndarray:
    """``value`` as a new float64 array; KeypointError if it is not numeric."""
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KeypointError(f"{name} must be an array of numbers; could not read it ({exc})") from None


def _float_array(value, shape: tuple, name: str) -> np.ndarray:
    """``value`` as a new float64 array of exactly ``shape``."""
    arr = _as_float(value, name)
    if arr.shape != shape:
        raise KeypointError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr


def _bool_vector(value, n: int, name: str) -> np.ndarray:
    """``value`` as a new bool array (n,); accepts bools or the integers 0/1."""
    arr = np.array(value)
    if arr.shape != (n,):
        raise KeypointError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.dtype != np.bool_:
        if arr.dtype.kind not in "iu" or not np.isin(arr, (0, 1)).all():
            raise KeypointError(f"{name} must be bool (or 0/1 integers), got dtype {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def _keypoint_count(xy: np.ndarray, allowed: tuple[int, ...], name: str) -> int:
    """Number of keypoints K of an (..., K, 2) array, checked against ``allowed``."""
    if xy.ndim < 2 or xy.shape[-1] != 2 or xy.shape[-2] not in allowed:
        raise KeypointError(
            f"{name} must have shape (..., K, 2) with K in {allowed} (x, y pixels), got {xy.shape}"
        )
    return xy.shape[-2]


def _require_finite(xy: np.ndarray, mask: np.ndarray, name: str) -> None:
    """Raise if any row of ``xy`` selected by ``mask`` holds NaN or infinity."""
    bad = np.flatnonzero(mask & ~np.isfinite(xy).all(axis=-1))
    if bad.size:
        raise KeypointError(f"{name}: keypoints {bad.tolist()} are not finite (NaN or inf)")


# --------------------------------------------------------------------------- OpenPose-18


class OpenPosePerson(NamedTuple):
    """One person's OpenPose-18 body.

    Attributes:
        xy: float64 (18, 2), ``(x, y)`` pixels in :data:`OPENPOSE18_KEYPOINTS` order.
            Rows of absent joints hold no meaning (0.0 where this module writes them).
        present: bool (18,), True where the joint exists.
    """

    xy: np.ndarray
    present: np.ndarray


class PoseFrame(NamedTuple):
    """One decoded POSE_KEYPOINT frame.

    Attributes:
        people: list of :class:`OpenPosePerson`, pixel coordinates.
        canvas_hw: ``(canvas_height, canvas_width)`` in pixels, Python ints.
    """

    people: list
    canvas_hw: tuple[int, int]


def as_openpose_person(person) -> OpenPosePerson:
    """Validate one person given as an ``(xy, present)`` pair.

    Args:
        person: a pair ``(xy, present)``: ``xy`` array-like (18, 2) of ``(x, y)`` pixels,
            ``present`` array-like (18,) of bool (or 0/1).  Present joints must be finite;
            absent rows may hold anything (NaN included) and are ignored.

    Returns:
        :class:`OpenPosePerson` with fresh float64 / bool arrays; absent rows of ``xy`` set to 0.

    Raises:
        KeypointError: if ``person`` is not a pair, or on a wrong shape, dtype or a
            non-finite present joint.
    """
    try:
        xy, present = person
    except (TypeError, ValueError):
        raise KeypointError(
            f"a person must be a pair (xy (18, 2), present (18,)), got {type(person).__name__}"
        ) from None
    xy = _float_array(xy, (18, 2), "person xy")
    present = _bool_vector(present, 18, "person present")
    _require_finite(xy, present, "person xy")
    xy[~present] = 0.0
    return OpenPosePerson(xy, present)


def coco17_to_openpose18(keypoints_xy, present) -> OpenPosePerson:
    """Reorder COCO-17 (or the model's 25 channels) into OpenPose-18, adding the neck.

    Slot ``i`` takes COCO index :data:`OPENPOSE18_FROM_COCO17` ``[i]``; slots 14..17 are the
    right eye, left eye, right ear, left ear (COCO 2, 1, 4, 3).  The neck (slot 1) is the
    midpoint of the two shoulders and is present only when both shoulders are (the rule of
    cn_aux ``dwpose/wholebody.py``, where "present" means score > 0.3).  Extras 17..24 are
    dropped: OpenPose-18 has no slot for them.

    Args:
        keypoints_xy: array-like (17, 2) or (25, 2), ``(x, y)`` pixels.
        present: array-like (17,) or (25,) bool (or 0/1), e.g. ``scores >= threshold``.

    Returns:
        :class:`OpenPosePerson` ``(xy float64 (18, 2), present bool (18,))``, absent rows 0.0.

    Raises:
        KeypointError: on wrong shapes, a non-bool ``present`` or a non-finite present joint.
    """
    xy = _as_float(keypoints_xy, "keypoints_xy")
    k = _keypoint_count(xy, (17, 25), "keypoints_xy")
    if xy.ndim != 2:
        raise KeypointError(f"keypoints_xy must be one pose (K, 2), got {xy.shape}")
    xy, present = xy[:17], _bool_vector(present, k, "present")[:17]
    _require_finite(xy, present, "keypoints_xy")
    out_xy = np.zeros((18, 2), dtype=np.float64)
    out_present = np.zeros(18, dtype=bool)
    for slot, src in enumerate(OPENPOSE18_FROM_COCO17):
        if src is not None and present[src]:
            out_xy[slot], out_present[slot] = xy[src], True
    left, right = _SHOULDERS
    if present[left] and present[right]:
        out_xy[_NECK], out_present[_NECK] = (xy[left] + xy[right]) / 2.0, True
    return OpenPosePerson(out_xy, out_present)


# --------------------------------------------------------------------------- POSE_KEYPOINT


def _canvas_size(height, width, where: str) -> tuple[int, int]:
    """Positive Python ints ``(height, width)``; PoseFormatError otherwise."""
    for name, v in (("canvas_height", height), ("canvas_width", width)):
        if isinstance(v, bool) or not isinstance(v, Integral) or v <= 0:
            raise PoseFormatError(
                f"{where}: {name} must be a positive integer (pixels), got {v!r} ({type(v).__name__})"
            )
    return int(height), int(width)


def _encode_person(person) -> dict:
    """One cn_aux people entry: flat 18*[x, y, c] body, c = 1.0 / absent [0, 0, 0]."""
    xy, present = as_openpose_person(person)
    flat = []
    for (x, y), p in zip(xy.tolist(), present.tolist()):
        flat += [x, y, 1.0] if p else [0.0, 0.0, 0.0]
    return {
        "pose_keypoints_2d": flat,
        "face_keypoints_2d": None,
        "hand_left_keypoints_2d": None,
        "hand_right_keypoints_2d": None,
    }


def to_pose_keypoint(people_per_frame, canvas_hw_per_frame) -> list[dict]:
    """Build a ComfyUI POSE_KEYPOINT value (comfyui_controlnet_aux's format).

    Follows cn_aux ``dwpose/__init__.py encode_poses_as_dict``: one dict per frame
    ``{"people": [...], "canvas_height": H, "canvas_width": W}``; each person has a flat
    ``pose_keypoints_2d`` list ``[x0, y0, c0, ..., x17, y17, c17]`` (OpenPose-18 order) with
    ``c = 1.0`` for a present joint and ``[0.0, 0.0, 0.0]`` for an absent one, and
    ``face_keypoints_2d`` / ``hand_left_keypoints_2d`` / ``hand_right_keypoints_2d`` = None.
    Coordinates are written in pixels, as cn_aux's DWPose node does.  Caveat of the format:
    a person whose present joints all have ``|x| <= 1`` and ``|y| <= 1`` reads back as
    *normalised* (see :func:`parse_pose_keypoint`), in cn_aux as here.

    Args:
        people_per_frame: sequence (one entry per frame) of sequences of people, each an
            ``(xy (18, 2) pixels, present (18,) bool)`` pair (e.g. :class:`OpenPosePerson`).
        canvas_hw_per_frame: sequence of ``(height, width)`` positive ints, one per frame:
            the size of the image the coordinates refer to.

    Returns:
        list of JSON-serialisable dicts (Python floats and ints only).

    Raises:
        KeypointError: on a malformed person (see :func:`as_openpose_person`).
        PoseFormatError: if the two sequences differ in length or a canvas size is not two
            positive integers.
    """
    frames = list(people_per_frame)
    sizes = list(canvas_hw_per_frame)
    if len(frames) != len(sizes):
        raise PoseFormatError(
            f"people_per_frame has {len(frames)} frames but canvas_hw_per_frame has {len(sizes)}; "
            "give one (height, width) per frame"
        )
    out = []
    for i, (people, hw) in enumerate(zip(frames, sizes)):
        if len(np.shape(hw)) != 1 or len(hw) != 2:
            raise PoseFormatError(f"canvas_hw_per_frame[{i}] must be (height, width), got {hw!r}")
        h, w = _canvas_size(*hw, f"canvas_hw_per_frame[{i}]")
        out.append({
            "people": [_encode_person(p) for p in people],
            "canvas_height": h,
            "canvas_width": w,
        })
    return out


def _load_frames(value) -> list:
    """The list of frame dicts inside a POSE_KEYPOINT value (list, one dict, or JSON text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise PoseFormatError(f"POSE_KEYPOINT string is not valid JSON: {exc}") from None
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    raise PoseFormatError(
        "POSE_KEYPOINT must be a list of frame dicts, one frame dict, or their JSON text; "
        f"got {type(value).__name__}"
    )


def _decode_body(numbers, canvas_hw: tuple[int, int], where: str) -> OpenPosePerson:
    """A flat 54-number body list -> pixel OpenPosePerson, by cn_aux's decoding rules."""
    if not isinstance(numbers, (Sequence, type(None))) or isinstance(numbers, (str, bytes)) or any(
        isinstance(v, bool) or not isinstance(v, Real) for v in numbers or ()
    ):
        raise PoseFormatError(f"{where}.pose_keypoints_2d must be a flat list of numbers or None")
    if not numbers:  # None or [] (cn_aux: the part is absent)
        return OpenPosePerson(np.zeros((18, 2)), np.zeros(18, dtype=bool))
    if len(numbers) != 54:
        raise PoseFormatError(
            f"{where}.pose_keypoints_2d must hold 18 OpenPose body points as 54 numbers "
            f"[x, y, c, ...], got {len(numbers)} numbers (BODY_25 and nested lists are not supported)"
        )
    triples = np.asarray(numbers, dtype=np.float64).reshape(18, 3)
    if not np.isfinite(triples).all():
        raise PoseFormatError(f"{where}.pose_keypoints_2d holds NaN or infinity")
    present = triples[:, 2] >= 1.0  # cn_aux decode_json_as_poses: c < 1.0 -> absent
    xy = np.where(present[:, None], triples[:, :2], 0.0)
    if present.any() and (np.abs(xy[present]) <= 1.0).all():  # cn_aux util.is_normalized
        xy = xy * np.array([float(canvas_hw[1]), float(canvas_hw[0])])
    return OpenPosePerson(xy, present)


def _decode_frame(frame, index: int) -> PoseFrame:
    """One frame dict -> PoseFrame (pixel coordinates)."""
    where = f"POSE_KEYPOINT frame {index}"
    if not isinstance(frame, Mapping):
        raise PoseFormatError(f"{where} must be a dict, got {type(frame).__name__}")
    for key in ("canvas_height", "canvas_width"):
        if key not in frame:
            raise PoseFormatError(f"{where} has no {key!r} key (keys: {sorted(frame)})")
    canvas_hw = _canvas_size(frame["canvas_height"], frame["canvas_width"], where)
    if frame.get("animals") and not frame.get("people"):
        raise PoseFormatError(
            f"{where} holds animal poses ({frame.get('version', 'ap10k')}); only human "
            "OpenPose bodies (a 'people' list) are supported"
        )
    people = frame.get("people")
    people = [] if people is None else people
    if not isinstance(people, Sequence) or isinstance(people, (str, bytes)):
        raise PoseFormatError(f"{where}: 'people' must be a list, got {type(people).__name__}")
    decoded = []
    for j, person in enumerate(people):
        if not isinstance(person, Mapping):
            raise PoseFormatError(f"{where}.people[{j}] must be a dict, got {type(person).__name__}")
        decoded.append(_decode_body(person.get("pose_keypoints_2d"), canvas_hw, f"{where}.people[{j}]"))
    return PoseFrame(decoded, canvas_hw)


def parse_pose_keypoint(value) -> list[PoseFrame]:
    """Decode a ComfyUI POSE_KEYPOINT value into pixel-space OpenPose-18 bodies.

    Follows cn_aux ``dwpose/__init__.py decode_json_as_poses`` and ``dwpose/util.py``, so that
    rendering the result matches cn_aux's ``RenderPeopleKps`` / ``draw_poses`` body output:

    * confidence: a joint is present iff its ``c >= 1.0``; any ``c < 1.0`` (a real score such
      as 0.7 included) means absent, and its x, y are ignored;
    * normalisation, per person: if every present joint has ``|x| <= 1`` and ``|y| <= 1`` the
      person is normalised and x, y are multiplied by ``canvas_width`` / ``canvas_height``;
      otherwise they are already pixels (cn_aux ``is_normalized``);
    * ``pose_keypoints_2d`` None or empty means a person with no body joints (cn_aux would fail
      on it); ``people`` missing means no people;
    * face and hand keypoints are accepted and ignored (OpenPose-18 bodies only).

    Args:
        value: a list of frame dicts (one per batch image), a single frame dict, or the JSON
            text of either (e.g. a file written by cn_aux's "Save Pose Keypoints").

    Returns:
        list of :class:`PoseFrame` ``(people, (canvas_height, canvas_width))``, one per frame;
        each person an :class:`OpenPosePerson` with float64 pixel ``xy`` (absent rows 0.0).

    Raises:
        PoseFormatError: naming the frame / person and what was wrong: invalid JSON, a frame
            that is not a dict, a missing or non-positive-integer canvas size, an animal
            (ap10k) frame, a body list that is not 54 finite numbers.
    """
    return [_decode_frame(frame, i) for i, frame in enumerate(_load_frames(value))]


# --------------------------------------------------------------------------- COCO


def coco_categories() -> dict:
    """COCO's "person" keypoint category, as in ``person_keypoints_*.json``.

    Returns:
        a fresh dict ``{"supercategory", "id": 1, "name": "person", "keypoints": 17 names,
        "skeleton": 19 official COCO 1-based pairs}`` (the official skeleton, not the
        reference's 14 :data:`COCO_SKELETON` parts); put it in a list as the file's
        ``"categories"``.
    """
    return {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(COCO_KEYPOINTS),
        "skeleton": [list(pair) for pair in _COCO_OFFICIAL_SKELETON],
    }


def to_coco_annotation(
    keypoints_xy,
    scores,
    bbox_xywh,
    *,
    image_id: int = 0,
    ann_id: int = 1,
    visibility_threshold: float = 0.0,
    present=None,
) -> dict:
    """One COCO keypoint annotation (usable as ground truth and as a detection result).

    The model predicts a position for every joint, so every COCO joint is *labelled*:
    ``v = 2`` (visible) when its score ``>= visibility_threshold``, else ``v = 1`` (labelled,
    not visible).  Joints marked absent in ``present`` (outside the image or far from their
    character, :func:`illustpose.characters.joints_present`; absent in a pose file) get
    ``v = 0`` and keep their ``x, y`` (COCO readers ignore them; pass 0 for a joint without a
    position); ``num_keypoints`` counts the others.

    Args:
        keypoints_xy: array-like (17, 2) or (25, 2) of ``(x, y)`` pixels (:data:`COCO_KEYPOINTS`
            or :data:`ALL_KEYPOINTS` order), finite.
        scores: array-like (K,) of finite per-joint scores (any range; e.g. heatmap peaks in
            [0, 1]), or None for all 1.0.
        bbox_xywh: COCO box ``[x, y, w, h]`` in pixels, ``w, h >= 0``.
        image_id: the image's id.
        ann_id: the annotation id, ``>= 1`` (pycocotools treats id 0 as "unmatched").
        visibility_threshold: the score at and above which a joint gets ``v = 2``.
        present: array-like (K,) bool, False for an absent joint (``v = 0``); None = all present.

    Returns:
        dict with ``id``, ``image_id``, ``category_id`` (1), ``bbox``, ``area`` (w*h),
        ``iscrowd`` (0), ``keypoints`` (51 numbers ``[x, y, v]*17``, v an int),
        ``num_keypoints``, ``keypoint_scores`` (17), ``score`` (mean of the 17) and, for 25
        channels, ``extra_keypoints`` = ``{name: [x, y, score]}`` for :data:`EXTRA_KEYPOINTS`.

    Raises:
        KeypointError: on wrong shapes, non-finite values, a negative box size or ann_id < 1.
    """
    xy = _as_float(keypoints_xy, "keypoints_xy")
    k = _keypoint_count(xy, (17, 25), "keypoints_xy")
    if xy.ndim != 2:
        raise KeypointError(f"keypoints_xy must be one pose (K, 2), got {xy.shape}")
    score = np.ones(k) if scores is None else _float_array(scores, (k,), "scores")
    bbox = _float_array(bbox_xywh, (4,), "bbox_xywh [x, y, w, h]")
    if not (np.isfinite(xy).all() and np.isfinite(score).all() and np.isfinite(bbox).all()):
        raise KeypointError("keypoints_xy, scores and bbox_xywh must be finite (no NaN or inf)")
    if bbox[2] < 0 or bbox[3] < 0:
        raise KeypointError(f"bbox_xywh width and height must be >= 0, got {bbox.tolist()}")
    if ann_id < 1:
        raise KeypointError(f"ann_id must be >= 1 (pycocotools ignores id 0), got {ann_id}")
    vis = np.where(score[:17] >= visibility_threshold, 2, 1)
    if present is not None:
        vis = np.where(_bool_vector(present, k, "present")[:17], vis, 0)
    ann = {
        "id": int(ann_id),
        "image_id": int(image_id),
        "category_id": 1,
        "bbox": bbox.tolist(),
        "area": float(bbox[2] * bbox[3]),
        "iscrowd": 0,
        "keypoints": [v for (x, y), s in zip(xy[:17].tolist(), vis.tolist()) for v in (x, y, s)],
        "num_keypoints": int(np.count_nonzero(vis)),
        "keypoint_scores": score[:17].tolist(),
        "score": float(score[:17].mean()),
    }
    if k == 25:
        ann["extra_keypoints"] = {
            name: [*xy[17 + i].tolist(), float(score[17 + i])] for i, name in enumerate(EXTRA_KEYPOINTS)
        }
    return ann


def from_coco_annotation(ann) -> tuple[np.ndarray, np.ndarray]:
    """Read the 17 COCO keypoints of one annotation.

    Args:
        ann: a COCO annotation dict with ``"keypoints"``: 51 numbers ``[x, y, v] * 17`` in
            :data:`COCO_KEYPOINTS` order, pixels; v in {0 unlabelled, 1 labelled not
            visible, 2 visible}.  Other keys are ignored.

    Returns:
        ``(xy, visibility)``: float64 (17, 2) ``(x, y)`` pixels, and int64 (17,) v values.
        Rows with v = 0 hold whatever the file has (COCO writes 0, 0).

    Raises:
        KeypointError: if ``ann`` is not a dict, has no ``keypoints``, or they are not 51
            finite numbers with v in {0, 1, 2}.
    """
    if not isinstance(ann, Mapping) or "keypoints" not in ann:
        raise KeypointError("a COCO annotation must be a dict with a 'keypoints' list")
    triples = _float_array(ann["keypoints"], (51,), "annotation 'keypoints'").reshape(17, 3)
    if not np.isfinite(triples).all() or not np.isin(triples[:, 2], (0, 1, 2)).all():
        raise KeypointError(
            "annotation 'keypoints' must be finite [x, y, v] triples with v in {0, 1, 2}"
        )
    return triples[:, :2].copy(), triples[:, 2].astype(np.int64)


# --------------------------------------------------------------------------- mirroring


def _mirror_name(name: str) -> str:
    """``left_*`` <-> ``right_*``; other names map to themselves."""
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a):]
    return name


def flip_permutation(num_keypoints: int) -> tuple[int, ...]:
    """Index permutation that swaps left and right joints of a schema.

    Args:
        num_keypoints: 17 (COCO), 18 (OpenPose) or 25 (model channels, extras included:
            thumbs and toes swap; nose_root, body_upper, extra_23, extra_24 stay).

    Returns:
        tuple ``perm`` of length K with ``mirrored[i] = original[perm[i]]``; it is its own
        inverse.  Apply it to per-joint scores / presence alongside :func:`mirror_keypoints`.

    Raises:
        KeypointError: for any other count.
    """
    if num_keypoints not in _SCHEMAS:
        raise KeypointError(f"num_keypoints must be one of {sorted(_SCHEMAS)}, got {num_keypoints}")
    names = _SCHEMAS[num_keypoints]
    return tuple(names.index(_mirror_name(n)) for n in names)


def mirror_keypoints(xy, width: float) -> np.ndarray:
    """Mirror poses horizontally: reflect x and swap left/right joints.

    ``x' = width - x`` (reflection about ``x = width / 2`` in the library's pixel frame, whose
    origin is the top-left corner of the top-left pixel), ``y' = y``, then joints are
    reordered by :func:`flip_permutation` so "left_wrist" is again the character's left wrist
    in the mirrored image.  Applying it twice gives back ``xy`` (up to float rounding).

    Args:
        xy: array-like (..., K, 2) with K in {17, 18, 25}, ``(x, y)`` pixels.
        width: the image width in pixels (> 0).

    Returns:
        a new float64 array of the same shape.

    Raises:
        KeypointError: on a wrong shape or a non-positive / non-finite width.
    """
    arr = _as_float(xy, "xy")
    k = _keypoint_count(arr, tuple(_SCHEMAS), "xy")
    if not (isinstance(width, Real) and math.isfinite(width) and width > 0):
        raise KeypointError(f"width must be a positive number of pixels, got {width!r}")
    out = arr[..., list(flip_permutation(k)), :]
    out[..., 0] = width - out[..., 0]
    return out


def coco_to_pose_keypoint(document) -> list[dict]:
    """A COCO keypoint document as a POSE_KEYPOINT value: one frame per image, in order.

    Each annotation of an image becomes one OpenPose-18 person (:func:`coco17_to_openpose18`)
    whose visible joints (``v = 2``) are present; the canvas is the image's ``height`` x ``width``.

    Args:
        document: a COCO dict with ``images`` (``id``, ``height``, ``width``) and
            ``annotations`` (``image_id``, ``keypoints``: 51 numbers ``[x, y, v] * 17``, pixels).

    Raises:
        PoseFormatError: a missing or malformed field (named).
        KeypointError: malformed keypoints.
    """
    try:
        frames, canvases = [], []
        for im in document["images"]:
            anns = [a for a in document["annotations"] if a["image_id"] == im["id"]]
            frames.append([coco17_to_openpose18(xy, v == 2) for xy, v in map(from_coco_annotation, anns)])
            canvases.append((im["height"], im["width"]))
    except (KeyError, TypeError) as e:
        raise PoseFormatError(f"not a COCO keypoints document: images need id, height and width, annotations "
                              f"image_id and keypoints ({type(e).__name__}: {e})") from None
    return to_pose_keypoint(frames, canvases)
