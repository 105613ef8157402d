"""The characters of an image: split from a mask or given as boxes, and which joints are absent.

The paper's models see one full-body character: the reference takes one bbox around the whole
thresholded segmentation mask (:func:`illustpose.geometry.bbox_from_mask`) and reports all 17
joints.  Here an image holds any number of characters, each with its own box (and, when it
comes from a mask, its own pixels); the pose model then runs once per character, on the
reference's crop of that box.

**Split rule** (:func:`split_mask`), on the mask thresholded as the reference does
(``value / 255 > 0.5``):

1. *parts* are the 8-connected components of the thresholded mask;
2. parts are joined into *groups*: two groups (at first, the parts) join when the gap
   between their boxes (the larger of the horizontal and the vertical gap, 0 when the boxes
   overlap or touch) is at most :data:`GROUP_GAP` (5 %) of the long side of the larger box,
   a joined group's box being the union of its parts' boxes, until no two groups are that
   near.  Only the :data:`MAX_PARTS` largest parts are grouped (a bounded cost on noisy
   masks); the others are handled as in step 4;
3. the *characters* are the groups whose pixel area is at least ``min_area`` (default
   :data:`MIN_AREA`, 10 %) of the largest group's, at most the ``N`` largest with
   ``characters=N``;
4. every other group or part (a detached hat, weapon or tail, specks, a signature) joins the
   character whose box is nearest to its box (the same gap; ties go to the larger character);
5. a character's box is the reference's rule applied to its pixels (first to last row and
   column, grown by one pixel up and left).

So when one character results, all the mask's pixels are its pixels and its box *is* the
reference's box.  ``characters=1`` is the reference itself: one box around the whole mask, the
whole image when the mask is empty.  With ``auto`` or ``N`` an empty mask gives no character.
The rule was tuned on the sample illustrations (``../shared/samples``): their silhouettes are
one large part plus specks, and the synthetic test weights' fragmented masks regroup into one
character at a 5 % gap, where 2 % still leaves fragments apart.

**Absent joints** (:func:`joints_present`): the model places every joint somewhere, so a bust
shot gets legs.  A joint is *absent* when its position lies outside the image (``x < 0``,
``y < 0``, ``x >= W`` or ``y >= H``), or when its character comes from a mask and no pixel of
that mask lies within :data:`ABSENT_DISTANCE` (10 %) of the long side of the character's box
of it (distance to pixel centres).  Positions and scores are never changed.

**Boxes given by the user** (:func:`boxes_per_image`, :func:`read_boxes_file`): see the
functions for the formats read.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np

from .errors import CharacterError
from .geometry import bbox_from_mask, mask_above

__all__ = [
    "MIN_AREA",
    "GROUP_GAP",
    "MAX_PARTS",
    "ABSENT_DISTANCE",
    "BOX_FORMATS",
    "Character",
    "characters_setting",
    "min_area_setting",
    "split_mask",
    "characters_from_masks",
    "joints_present",
    "boxes_per_image",
    "read_boxes_file",
]

#: default least pixel area of a character, as a fraction of the largest group's area
MIN_AREA = 0.1
#: parts whose boxes come this close (fraction of the larger box's long side) are one group
GROUP_GAP = 0.05
#: the largest parts that are grouped; smaller ones join the nearest character
MAX_PARTS = 64
#: a joint farther than this (fraction of its box's long side) from its character's mask is absent
ABSENT_DISTANCE = 0.1
#: how plain lists of four numbers are read: ``[x, y, w, h]`` (COCO) or ``[x0, y0, x1, y1]``
BOX_FORMATS = ("xywh", "xyxy")


@dataclass(frozen=True)
class Character:
    """One character of an image.

    Attributes:
        bbox_xywh: its box, COCO ``[x, y, w, h]`` pixels with ``w, h > 0`` (ints from a mask,
            the numbers given for a box given by the user).
        mask: bool ``(h, w)``, its pixels inside its box (row 0 is the box's top row), or None
            when it comes from a box (then only the image rule marks joints absent).
    """

    bbox_xywh: tuple
    mask: np.ndarray | None = None

    @property
    def area(self) -> float:
        """Its box's area ``w * h`` in px^2 (the COCO annotation's ``area``; characters are
        listed largest first by it)."""
        return float(self.bbox_xywh[2]) * float(self.bbox_xywh[3])


def characters_setting(value) -> str | int:
    """``"auto"`` or a positive int from ``value`` (``"auto"``, an int, or its digits).

    Raises:
        CharacterError: anything else.
    """
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        n = None
    if n is None or n < 1:
        raise CharacterError(f"characters must be 'auto' or a whole number >= 1 (1 = the reference's single box "
                             f"around the whole mask), got {value!r}")
    return n


def min_area_setting(min_area) -> float:
    """``min_area`` as a float, checked to lie in [0, 1].

    Raises:
        CharacterError: anything else.
    """
    if isinstance(min_area, bool) or not isinstance(min_area, Real) or not 0.0 <= min_area <= 1.0:
        raise CharacterError(f"min_area must be a fraction of the largest character's area in [0, 1], "
                             f"got {min_area!r}")
    return float(min_area)


def _gaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) gaps between boxes ``[x0, y0, x1, y1)``: the larger of the horizontal
    and vertical gaps, 0 when they overlap or touch."""
    gx = np.maximum(a[:, None, 0] - b[None, :, 2], b[None, :, 0] - a[:, None, 2])
    gy = np.maximum(a[:, None, 1] - b[None, :, 3], b[None, :, 1] - a[:, None, 3])
    return np.maximum(np.maximum(gx, gy), 0)


def _reference_box(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
    """The reference's box of pixels spanning columns ``x0..x1-1`` and rows ``y0..y1-1``
    (grown one pixel up and left), as ``[x, y, w, h]``."""
    c0, r0 = max(x0 - 1, 0), max(y0 - 1, 0)
    return (c0, r0, x1 - c0, y1 - r0)


def split_mask(mask_u8: np.ndarray, characters: str | int = "auto", min_area: float = MIN_AREA,
               threshold: float = 0.5) -> list[Character]:
    """The characters of an 8-bit character mask, by the module's split rule, largest first.

    Args:
        mask_u8: uint8 ``(H, W)`` character probability (the segmenter's mask, or a user's).
        characters: ``"auto"`` (every character the rule finds), ``1`` (the reference's one box
            around the whole mask; the whole image when it is empty) or ``N`` (at most the
            ``N`` largest; the rest join them as parts).
        min_area: least pixel area of a character as a fraction of the largest group's, in [0, 1].
        threshold: the mask threshold (0.5, the reference's).

    Returns:
        list of :class:`Character` with int boxes and their pixels; empty when the mask is
        (and ``characters`` is not 1).

    Raises:
        CharacterError: a bad ``characters`` or ``min_area``.
    """
    from scipy import ndimage
    from scipy.sparse.csgraph import connected_components

    mode, min_area = characters_setting(characters), min_area_setting(min_area)
    above = mask_above(mask_u8, threshold)
    if mode == 1:
        r0, c0, h, w = bbox_from_mask(mask_u8, threshold)
        return [Character((c0, r0, w, h), above[r0:r0 + h, c0:c0 + w] if above.any() else None)]
    labels, n = ndimage.label(above, structure=np.ones((3, 3), bool))
    if n == 0:
        return []
    boxes = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(labels)])
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    order = np.argsort(-areas, kind="stable")
    big = order[:MAX_PARTS]
    group, group_box = np.arange(len(big)), boxes[big]
    while True:  # join near groups until no two are near (a joined group's box is the union of its parts')
        long_side = (group_box[:, 2:] - group_box[:, :2]).max(axis=1)
        near = _gaps(group_box, group_box) <= GROUP_GAP * np.maximum(long_side[:, None], long_side[None, :])
        count, joined = connected_components(near, directed=False)
        if count == len(group_box):
            break
        group = joined[group]
        group_box = np.array([[*boxes[big][group == g, :2].min(axis=0), *boxes[big][group == g, 2:].max(axis=0)]
                              for g in range(count)])
    group_area = np.bincount(group, weights=areas[big], minlength=count)
    ranked = np.argsort(-group_area, kind="stable")
    kept = ranked[group_area[ranked] >= min_area * group_area[ranked[0]]]
    kept = kept if mode == "auto" else kept[:mode]
    # every part's character: its group's if kept, else the one nearest its group's (or its own) box
    char_of_group = _gaps(group_box, group_box[kept]).argmin(axis=1)
    char_of_group[kept] = np.arange(len(kept))
    owner = np.empty(n, dtype=np.int64)
    owner[big] = char_of_group[group]
    small = order[MAX_PARTS:]
    if small.size:
        owner[small] = _gaps(boxes[small], group_box[kept]).argmin(axis=1)
    found = []
    for k in range(len(kept)):
        parts = np.flatnonzero(owner == k)
        x, y, w, h = _reference_box(*boxes[parts, :2].min(axis=0).tolist(), *boxes[parts, 2:].max(axis=0).tolist())
        found.append(Character((x, y, w, h), np.isin(labels[y:y + h, x:x + w], parts + 1)))
    return sorted(found, key=lambda c: -c.area)


def characters_from_masks(masks: Sequence[np.ndarray], threshold: float = 0.5) -> list[Character]:
    """One character per 8-bit mask (its box by the reference's rule), largest first; a mask
    without any pixel above ``threshold`` gives none.

    Args:
        masks: uint8 ``(H, W)`` masks of one image, one per character.
    """
    found = []
    for m in masks:
        above = mask_above(m, threshold)
        if above.any():
            r0, c0, h, w = bbox_from_mask(m, threshold)
            found.append(Character((c0, r0, w, h), above[r0:r0 + h, c0:c0 + w]))
    return sorted(found, key=lambda c: -c.area)


def joints_present(keypoints_xy, image_hw: tuple[int, int], character: Character | None = None) -> np.ndarray:
    """Which joints of a pose are present, by the module's absent-joint rule.

    Args:
        keypoints_xy: float ``(K, 2)`` ``(x, y)`` image pixels.
        image_hw: ``(H, W)`` of the image.
        character: the character the pose belongs to; with a mask, joints far from it are
            absent too (None: only the image rule).

    Returns:
        bool ``(K,)``, False for an absent joint (outside the image, non-finite, or far from
        the character's mask).
    """
    xy = np.asarray(keypoints_xy, dtype=np.float64)
    h, w = image_hw
    with np.errstate(invalid="ignore"):
        present = np.isfinite(xy).all(axis=1) & (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] < w) & (xy[:, 1] < h)
    if character is None or character.mask is None:
        return present
    bx, by, bw, bh = character.bbox_xywh
    r = ABSENT_DISTANCE * max(bw, bh)
    for j in np.flatnonzero(present):
        lx, ly = xy[j, 0] - bx, xy[j, 1] - by  # box-local, pixel centres at (col + 0.5, row + 0.5)
        c0, r0 = max(int(math.floor(lx - r)), 0), max(int(math.floor(ly - r)), 0)
        rows, cols = np.nonzero(character.mask[r0:max(int(math.ceil(ly + r)), 0), c0:max(int(math.ceil(lx + r)), 0)])
        d2 = (cols + c0 + 0.5 - lx) ** 2 + (rows + r0 + 0.5 - ly) ** 2
        present[j] = d2.size > 0 and d2.min() <= r * r
    return present


# --------------------------------------------------------------------------- boxes given by the user


def _plain(value):
    """Arrays and tensors as nested lists; anything else as it is."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, (str, bytes)) else value


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool)


def _is_box(value) -> bool:
    """Four plain numbers."""
    return isinstance(value, (list, tuple)) and len(value) == 4 and all(_is_number(v) for v in value)


def _is_segs(value) -> bool:
    """An Impact Pack SEGS value: ``((H, W), [SEG, ...])``, each SEG with a ``bbox`` ``[x0, y0, x1, y1]``."""
    return (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (list, tuple))
            and len(value[0]) == 2 and isinstance(value[1], (list, tuple))
            and all(hasattr(s, "bbox") for s in value[1]))


def _check_box(box, where: str) -> tuple[float, float, float, float]:
    """``box`` ``[x, y, w, h]`` as floats, checked to be finite with ``w, h > 0``.

    Raises:
        CharacterError: naming ``where``; the message says how a ``[x0, y0, x1, y1]`` box is given.
    """
    x, y, w, h = (float(v) for v in box)
    if not (math.isfinite(x + y + w + h) and w > 0 and h > 0):
        raise CharacterError(f"{where}: box [x, y, w, h] = {[x, y, w, h]} has no area; give w > 0 and h > 0 (a box "
                             "[x0, y0, x1, y1] needs the xyxy box format)")
    return (x, y, w, h)


def _box(values, fmt: str, where: str) -> list:
    """One box as ``[x, y, w, h]`` pixels, the numbers given (not checked for an area: :func:`_check_box`)."""
    values = _plain(values)
    if not _is_box(values):
        raise CharacterError(f"{where}: a box must be four numbers ([x, y, w, h] or [x0, y0, x1, y1]), "
                             f"got {values!r}")
    x, y, a, b = values
    return [x, y, a - x, b - y] if fmt == "xyxy" else list(values)


def _image_boxes(value, fmt: str, where: str) -> list[list]:
    """The boxes of one image from any accepted form (see :func:`boxes_per_image`)."""
    value = _plain(value)
    if _is_box(value):
        return [_box(value, fmt, where)]
    if _is_segs(value):
        return [_box(s.bbox, "xyxy", f"{where} SEG {j}") for j, s in enumerate(value[1])]
    if isinstance(value, Mapping):
        if "bbox" in value:
            return [_box(value["bbox"], "xywh", f"{where}.bbox")]
        if isinstance(value.get("bboxes"), (list, tuple)) or hasattr(value.get("bboxes"), "tolist"):
            return [_box(b, "xyxy", f"{where}.bboxes[{j}]") for j, b in enumerate(_plain(value["bboxes"]))]
    if isinstance(value, (list, tuple)) and value and all(_is_number(v) for v in value):
        return [_box(value, fmt, where)]  # numbers, but not four: _box says what a box is
    if isinstance(value, (list, tuple)):
        return [b for j, v in enumerate(value) for b in _image_boxes(v, fmt, f"{where}[{j}]")]
    raise CharacterError(f"{where}: cannot read boxes from a {type(value).__name__}; give [x, y, w, h] lists, "
                         "Impact Pack SEGS, COCO annotations or Florence2 data")


def boxes_per_image(value, batch: int, box_format: str = "xywh", what: str = "bbox") -> list[list[list]]:
    """Character boxes for each image of a batch, from the box values ComfyUI nodes pass around.

    Read (the structured forms say their own layout; ``box_format`` decides plain numbers):

    * four numbers: one box, for every image; ``[x, y, w, h]`` (our BBOX, KJNodes' crop
      nodes) or, with ``box_format="xyxy"``, ``[x0, y0, x1, y1]`` (Florence2's ``data``,
      KJNodes' Florence2 to Coordinates, SAM2 box inputs, ultralytics' ``boxes.xyxy``);
    * a list of boxes: one per image when it holds as many as the batch, all of the one image
      when the batch has one image, or one for every image;
    * a list with one entry per image (or one entry for every image), each a list of boxes or
      any form below: several characters per image (an empty list: no character);
    * Impact Pack SEGS ``((H, W), [SEG, ...])``: each SEG's ``bbox`` ``[x0, y0, x1, y1]``;
    * a COCO annotation ``{"bbox": [x, y, w, h], ...}``, or Florence2's grounding dict
      ``{"bboxes": [[x0, y0, x1, y1], ...], "labels": [...]}``;
    * numpy arrays and torch tensors of any of these shapes.

    Args:
        value: the boxes.
        batch: the number of images, >= 1.
        box_format: ``"xywh"`` or ``"xyxy"``, for plain lists of four numbers.
        what: the input's name, for messages.

    Returns:
        ``batch`` lists of ``[x, y, w, h]`` boxes (pixels), in the given order; a box without
        area is left for the pose estimator to refuse (that image alone fails).

    Raises:
        CharacterError: an unknown format, or a count that fits no image count.
    """
    if box_format not in BOX_FORMATS:
        raise CharacterError(f"box format must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")
    value = _plain(value)
    if _is_box(value) or _is_segs(value) or isinstance(value, Mapping):
        return [_image_boxes(value, box_format, what)] * batch
    if not isinstance(value, (list, tuple)):
        raise CharacterError(f"{what}: cannot read boxes from a {type(value).__name__}")
    items = [_plain(v) for v in value]
    single = bool(items) and all(_is_box(v) or (isinstance(v, Mapping) and "bbox" in v) for v in items)
    if single and batch == 1 and len(items) > 1:
        return [_image_boxes(items, box_format, what)]
    if len(items) not in (1, batch):
        unit = "boxes" if single else "entries"
        raise CharacterError(f"{what} holds {len(items)} {unit} for {batch} images; give one per image, one for all, "
                             "or one list of boxes per image")
    per_image = [_image_boxes(v, box_format, f"{what}[{i}]") for i, v in enumerate(items)]
    return per_image * batch if len(per_image) == 1 else per_image


def read_boxes_file(path: str | os.PathLike) -> dict[str, list[tuple]]:
    """Character boxes per image from a COCO JSON file (``annotate --boxes``).

    The file needs ``images`` (``id``, ``file_name``) and ``annotations`` (``image_id``,
    ``bbox`` ``[x, y, w, h]`` pixels); other keys (keypoints, categories) are ignored.  An
    image listed without annotations has no character.

    Returns:
        ``{file_name: [(x, y, w, h), ...]}`` with ``file_name`` as written (``/`` separators).

    Raises:
        CharacterError: unreadable JSON, a missing field, an annotation of an unlisted image,
            or a box without area (the entry named).
    """
    from .datasets import load_json

    data = load_json(path, CharacterError, "boxes file")
    if not isinstance(data, Mapping) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise CharacterError(f"{path}: expected a COCO file with 'images' (id, file_name) and 'annotations' "
                             "(image_id, bbox [x, y, w, h])")
    names = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, Mapping) or not isinstance(im.get("file_name"), str) or "id" not in im:
            raise CharacterError(f"{path}: images[{i}] needs an id and a file_name")
        names[im["id"]] = im["file_name"].replace("\\", "/")
    boxes: dict[str, list[tuple]] = {name: [] for name in names.values()}
    for j, ann in enumerate(data["annotations"]):
        image_id = ann.get("image_id") if isinstance(ann, Mapping) else None
        if image_id not in names:
            raise CharacterError(f"{path}: annotations[{j}] has image_id {image_id!r}, which no entry of "
                                 "'images' has")
        where = f"{path}: annotations[{j}].bbox"
        boxes[names[image_id]].append(_check_box(_box(ann.get("bbox"), "xywh", where), where))
    return boxes
