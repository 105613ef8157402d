"""Keypoint datasets: read COCO keypoint JSON and the authors' dataset, write COCO JSON.

Everything returned is in the library's convention: keypoints ``(x, y)`` pixels of the image
(x right, y down) in COCO-17 order (:data:`illustpose.keypoints.COCO_KEYPOINTS`), COCO
visibility flags (0 unlabelled, 1 labelled but not visible, 2 visible) and COCO bboxes
``[x, y, w, h]`` pixels.

Formats read:

* plain COCO keypoint JSON (:func:`read_coco`): ``images``, ``annotations``, ``categories``;
  several annotations per image; keypoints matched to COCO-17 by the category's keypoint
  *names* (COCO spelling ``left_eye`` or the reference's ``eye_left``), so a file from CVAT or
  Label Studio whose skeleton lists the joints in another order reads correctly;
* the authors' bizarre pose dataset (:func:`read_bizarre_pose`).  The reference README says
  only that ``bizarre_pose_dataset.zip`` extracts to ``_data/bizarre_pose_dataset/raw`` with
  "the images and annotations"; the reference repo ships no reader for it.  What is read here
  is an assumption, documented in :func:`read_bizarre_pose`.

:func:`coco_document` builds COCO keypoint JSON (e.g. of predictions from
:func:`illustpose.keypoints.to_coco_annotation`), the one builder of the library, and
:func:`write_coco` writes it atomically, streamed, so predictions can be corrected in an
annotation tool and read back with :func:`read_coco`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .fileio import atomic_path
from .keypoints import COCO_KEYPOINTS, coco_categories

__all__ = [
    "load_json",
    "KeypointAnnotation",
    "ImageRecord",
    "BIZARRE_SPLITS",
    "read_coco",
    "read_bizarre_pose",
    "records_to_coco",
    "coco_document",
    "merge_coco",
    "write_coco",
]




#: Splits of the authors' dataset, each listed in ``_filters/accountably_<split>.csv``.
BIZARRE_SPLITS: tuple[str, ...] = ("train", "val", "test")

_SIDES = ("left", "right")


@dataclass(frozen=True)
class KeypointAnnotation:
    """One character's COCO-17 keypoints.

    Attributes:
        id: the annotation id.
        image_id: the id of the image it belongs to.
        xy: float64 (17, 2) ``(x, y)`` pixels, COCO order; rows with ``visibility == 0``
            carry no meaning (COCO stores 0, 0).
        visibility: int64 (17,) COCO flags 0 / 1 / 2.
        bbox: float64 (4,) COCO ``[x, y, w, h]`` pixels.
        score: detection score of a prediction; None for ground truth.
        keypoint_scores: float64 (17,) per-joint scores of a prediction, or None.
    """

    id: int
    image_id: int
    xy: np.ndarray
    visibility: np.ndarray
    bbox: np.ndarray
    score: float | None = None
    keypoint_scores: np.ndarray | None = None


@dataclass(frozen=True)
class ImageRecord:
    """One image and its keypoint annotations.

    Attributes:
        id: the image id.
        file_name: as stored in the file (for :func:`read_bizarre_pose`, relative to the
            directory of ``annotations.json``).
        width, height: image size in pixels.
        annotations: the image's annotations in file order (possibly none).
    """

    id: int
    file_name: str
    width: int
    height: int
    annotations: tuple[KeypointAnnotation, ...]


# --------------------------------------------------------------------------- field checks


def _fail(where: str, problem: str, fix: str = "correct that field (COCO keypoint format)") -> DatasetError:
    """A DatasetError ``"<where>: <problem>; <fix>"``."""
    return DatasetError(f"{where}: {problem}; {fix}")


def _integer(value, where: str, minimum: int | None = None) -> int:
    """``value`` as int (an integral float such as 640.0 is accepted)."""
    ok = isinstance(value, Integral) or (isinstance(value, Real) and math.isfinite(value) and value == int(value))
    if isinstance(value, bool) or not ok or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise _fail(where, f"expected an integer{bound}, got {value!r}")
    return int(value)


def _numbers(value, count: int, where: str) -> np.ndarray:
    """``value`` as a float64 vector of ``count`` finite numbers."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, (str, bytes))
        or any(isinstance(v, bool) or not isinstance(v, Real) for v in value)
    ):
        raise _fail(where, f"expected a list of {count} numbers, got {type(value).__name__}")
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (count,):
        raise _fail(where, f"expected {count} numbers, got {arr.size}")
    if not np.isfinite(arr).all():
        raise _fail(where, "holds NaN or infinity")
    return arr


def _mapping(value, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a JSON object, got {type(value).__name__}")
    return value


def _list(value, where: str) -> Sequence:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise _fail(where, f"expected a JSON list, got {type(value).__name__}")
    return value


def _field(obj: Mapping, key: str, where: str):
    if key not in obj:
        raise _fail(where, f"missing field {key!r} (fields: {sorted(obj)})")
    return obj[key]


def _canonical_name(name: str) -> str:
    """A joint name in COCO spelling: ``"eye_left"`` / ``"Left Eye"`` -> ``"left_eye"``."""
    parts = str(name).strip().lower().replace("-", "_").replace(" ", "_").split("_")
    if len(parts) == 2 and parts[1] in _SIDES:
        parts = [parts[1], parts[0]]
    return "_".join(parts)


def _coco_order(names, where: str) -> np.ndarray:
    """Positions of the 17 COCO joints in a category's ``keypoints`` name list."""
    canonical = [_canonical_name(n) for n in _list(names, where)]
    missing = [n for n in COCO_KEYPOINTS if n not in canonical]
    if missing:
        raise _fail(where, f"lacks the COCO joints {missing} (has {list(names)})")
    return np.asarray([canonical.index(n) for n in COCO_KEYPOINTS])


# --------------------------------------------------------------------------- COCO parsing


def _parse_image(img, where: str) -> tuple[int, str, int, int]:
    """``(id, file_name, width, height)`` of one COCO image entry."""
    img = _mapping(img, where)
    file_name = _field(img, "file_name", where)
    if not isinstance(file_name, str) or not file_name:
        raise _fail(f"{where}.file_name", f"expected a non-empty string, got {file_name!r}")
    return (
        _integer(_field(img, "id", where), f"{where}.id"),
        file_name,
        _integer(_field(img, "width", where), f"{where}.width", minimum=1),
        _integer(_field(img, "height", where), f"{where}.height", minimum=1),
    )


def _bbox_from_xywh(value, where: str) -> np.ndarray:
    bbox = _numbers(value, 4, where)
    if bbox[2] < 0 or bbox[3] < 0:
        raise _fail(where, f"[x, y, w, h] needs w >= 0 and h >= 0, got {bbox.tolist()}")
    return bbox


def _bbox_from_xyxy(value, where: str) -> np.ndarray:
    """The reference's ``[x0, y0, x1, y1]`` box (kv0:249-252) -> ``[x, y, w, h]``, rounded.

    Corner and size are rounded to integers with ``np.round`` as the reference does.
    """
    x0, y0, x1, y1 = _numbers(value, 4, where)
    if x1 < x0 or y1 < y0:
        raise _fail(where, f"[x0, y0, x1, y1] needs x1 >= x0 and y1 >= y0, got {[x0, y0, x1, y1]}")
    return np.round([x0, y0, x1 - x0, y1 - y0])


def _bbox_from_keypoints(xy: np.ndarray, visibility: np.ndarray, where: str) -> np.ndarray:
    """The extent ``[x, y, w, h]`` of the labelled keypoints (for files without a bbox)."""
    pts = xy[visibility > 0]
    if not len(pts):
        raise _fail(where, "has no 'bbox' and no labelled keypoint to derive one from")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])


def _parse_annotation(ann, where: str, order: np.ndarray, count: int, bbox_reader=None) -> KeypointAnnotation:
    """One COCO keypoint annotation of ``count`` joints, reordered to COCO-17 by ``order``."""
    ann = _mapping(ann, where)
    raw = _list(_field(ann, "keypoints", where), f"{where}.keypoints")
    if len(raw) != 3 * count:
        problem = f"expected {3 * count} numbers ({count} keypoints as x, y, v), got {len(raw)}"
        raise _fail(f"{where}.keypoints", problem)
    triples = _numbers(raw, 3 * count, f"{where}.keypoints").reshape(count, 3)[order]
    if not np.isin(triples[:, 2], (0, 1, 2)).all():
        flags = sorted(set(triples[:, 2].tolist()))
        raise _fail(f"{where}.keypoints", f"visibility flags must be 0, 1 or 2, got {flags}")
    xy, visibility = triples[:, :2].copy(), triples[:, 2].astype(np.int64)
    if "bbox" in ann:
        bbox = (bbox_reader or _bbox_from_xywh)(ann["bbox"], f"{where}.bbox")
    else:
        bbox = _bbox_from_keypoints(xy, visibility, where)
    score = ann.get("score")
    if score is not None:
        score = float(_numbers([score], 1, f"{where}.score")[0])
    kp_scores = ann.get("keypoint_scores")
    if kp_scores is not None:
        kp_scores = _numbers(kp_scores, count, f"{where}.keypoint_scores")[order]
    return KeypointAnnotation(
        id=_integer(_field(ann, "id", where), f"{where}.id"),
        image_id=_integer(_field(ann, "image_id", where), f"{where}.image_id"),
        xy=xy,
        visibility=visibility,
        bbox=bbox,
        score=score,
        keypoint_scores=kp_scores,
    )


def _keypoint_categories(data: Mapping, where: str) -> dict[int, tuple[np.ndarray, int]]:
    """Category id -> (COCO-17 joint order, joint count), for each category with ``keypoints``."""
    out = {}
    for i, cat in enumerate(_list(_field(data, "categories", where), f"{where}: categories")):
        cat = _mapping(cat, f"{where}: categories[{i}]")
        if "keypoints" in cat:
            cid = _integer(_field(cat, "id", f"{where}: categories[{i}]"), f"{where}: categories[{i}].id")
            names = cat["keypoints"]
            out[cid] = (_coco_order(names, f"{where}: categories[{i}].keypoints"), len(names))
    if not out:
        raise _fail(f"{where}: categories", "no category has a 'keypoints' list; this is not a COCO keypoint file")
    return out


def _records_from_coco(data, where: str, bbox_reader=None) -> list[ImageRecord]:
    """Image records of a parsed COCO keypoint dict (``where`` names the file in errors)."""
    data = _mapping(data, where)
    categories = _keypoint_categories(data, where)
    images: dict[int, tuple[int, str, int, int]] = {}
    for i, img in enumerate(_list(_field(data, "images", where), f"{where}: images")):
        parsed = _parse_image(img, f"{where}: images[{i}]")
        if parsed[0] in images:
            raise _fail(f"{where}: images[{i}].id", f"duplicate image id {parsed[0]}")
        images[parsed[0]] = parsed
    per_image: dict[int, list[KeypointAnnotation]] = {i: [] for i in images}
    for i, ann in enumerate(_list(_field(data, "annotations", where), f"{where}: annotations")):
        at = f"{where}: annotations[{i}]"
        cid = _mapping(ann, at).get("category_id", next(iter(categories)))
        if cid not in categories:
            continue  # an annotation of a non-keypoint category (e.g. a plain box)
        parsed = _parse_annotation(ann, at, *categories[cid], bbox_reader)
        if parsed.image_id not in per_image:
            raise _fail(f"{at}.image_id", f"refers to image {parsed.image_id}, which is not in 'images'")
        per_image[parsed.image_id].append(parsed)
    return [ImageRecord(i, f, w, h, tuple(per_image[i])) for i, f, w, h in images.values()]


def load_json(path: Path, error: type[Exception] | None = None, what: str = "file"):
    """The parsed JSON of ``path``; otherwise ``error`` (default :class:`DatasetError`) naming the
    file, ``what`` it was meant to be, and the parse position."""
    error = error or DatasetError
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}; check the path") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({exc})") from None


def read_coco(path: str | os.PathLike) -> list[ImageRecord]:
    """Read a COCO keypoint JSON file (ground truth or corrected predictions).

    Annotations are kept when their ``category_id`` names a category with a ``keypoints``
    list (others, e.g. plain boxes, are skipped; no ``category_id`` means the first such
    category); that list must contain the 17 COCO joint
    names (COCO or reference spelling, any order, extra joints ignored).  An annotation
    without ``bbox`` gets the extent of its labelled keypoints; ``score`` and
    ``keypoint_scores`` (prediction files) are kept when present.

    Args:
        path: the JSON file.

    Returns:
        one :class:`ImageRecord` per entry of ``images``, in file order, each with its
        annotations in file order.

    Raises:
        DatasetError: naming the file and the field: missing file, invalid JSON, a missing
            field, a keypoint list of the wrong length or with v not in {0, 1, 2}, a
            negative box size, a duplicate image id or an annotation of an unknown image.
    """
    path = Path(path)
    return _records_from_coco(load_json(path), str(path))


# --------------------------------------------------------------------------- authors' dataset


def _annotations_file(root: Path) -> Path:
    """``root/raw/annotations.json`` or ``root/annotations.json``."""
    candidates = (root / "raw" / "annotations.json", root / "annotations.json")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"{root}: no annotations.json (looked for {[str(c) for c in candidates]}); extract "
        "bizarre_pose_dataset.zip so that <root>/raw/annotations.json exists (reference README)"
    )


def _split_ids(dataset_dir: Path, split: str) -> set[str]:
    """Sample basenames of ``split`` from ``_filters/accountably_<split>.csv``."""
    if split not in BIZARRE_SPLITS:
        raise DatasetError(f"split must be one of {BIZARRE_SPLITS} or None, got {split!r}")
    path = dataset_dir / "_filters" / f"accountably_{split}.csv"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        raise DatasetError(f"{path}: split file not found; pass split=None to read every sample") from None
    return {line.split(",")[0].strip() for line in lines if line.strip()}


def _bizarre_sample(key: str, entry, index: int, where: str) -> ImageRecord:
    """One ``{"keypoints": {name: [row, col]}, "bbox": [[r0, c0], [r1, c1]], "size": [h, w]}``."""
    at = f"{where}: [{key!r}]"
    entry = _mapping(entry, at)
    if not key.isdigit():
        raise _fail(at, "expected the key to be a Danbooru post id (digits)")
    image_id = int(key)
    named = {_canonical_name(n): p for n, p in _mapping(_field(entry, "keypoints", at), f"{at}.keypoints").items()}
    xy = np.zeros((17, 2))
    visibility = np.zeros(17, dtype=np.int64)
    for j, name in enumerate(COCO_KEYPOINTS):
        if name in named:
            row, col = _numbers(named[name], 2, f"{at}.keypoints.{name}")
            xy[j], visibility[j] = (col, row), 2
    corners = _list(_field(entry, "bbox", at), f"{at}.bbox")
    if len(corners) != 2:
        raise _fail(f"{at}.bbox", f"expected two corners [[row0, col0], [row1, col1]], got {corners}")
    (r0, c0), (r1, c1) = (_numbers(c, 2, f"{at}.bbox") for c in corners)
    if r1 < r0 or c1 < c0:
        raise _fail(f"{at}.bbox", f"expected corners [[row0, col0], [row1, col1]] with row1 >= row0 and "
                                  f"col1 >= col0, got {corners}")
    height, width = _numbers(_field(entry, "size", at), 2, f"{at}.size")
    ann = KeypointAnnotation(index + 1, image_id, xy, visibility, np.array([c0, r0, c1 - c0, r1 - r0]))
    return ImageRecord(
        image_id,
        f"images/{key}.png",
        _integer(width, f"{at}.size[1]", minimum=1),
        _integer(height, f"{at}.size[0]", minimum=1),
        (ann,),
    )


def read_bizarre_pose(root: str | os.PathLike, split: str | None = None) -> list[ImageRecord]:
    """Read the authors' bizarre pose dataset (``bizarre_pose_dataset.zip``).

    The layout is not documented by the authors beyond "images and annotations at
    ``_data/bizarre_pose_dataset/raw``" (reference README).  Two layouts are accepted,
    told apart by the top level of ``annotations.json``:

    * **a dict keyed by Danbooru post id** (what the released zip holds according to two
      independent public converters, not the authors): ``{"<id>": {"keypoints": {name:
      [row, col]}, "bbox": [[row0, col0], [row1, col1]], "size": [h, w]}}`` with reference
      joint names (``eye_left`` ...) plus extras that are ignored, images at
      ``raw/images/<id>.png`` and splits in ``_filters/accountably_<split>.csv`` (one id per
      line) next to ``raw/``.  No visibility is stored: present joints get v = 2, absent ones
      v = 0.  ``size`` is read as ``(h, w)``, the reference's order for sizes everywhere
      (one of the converters comments it as ``[w, h]``; neither is verified on the data);
      ``bbox`` as two (row, col) corners, converted to ``[x, y, w, h]``;
    * **a COCO-like dict** (``images``, ``annotations``, ``categories``): what the reference
      code itself reads for its datasets (``DatabackendADDSKeypoints``, kv0:216-257 of
      ``_util/keypoints_v0.py``): keypoint triples ``(x, y, v)`` matched by the category's
      names, and ``bbox`` as ``[x0, y0, x1, y1]`` whose corner and size are rounded to
      integers as the reference does.

    Args:
        root: the ``bizarre_pose_dataset`` directory (holding ``raw/``), or ``raw/`` itself.
        split: None for every sample, or "train" / "val" / "test" (dict layout: needs
            ``<root>/_filters/accountably_<split>.csv``; COCO-like layout: filters by the
            ``file_name`` stem).

    Returns:
        :class:`ImageRecord` list, one annotation each, sorted by image id for the dict
        layout and in file order for the COCO-like one; ``file_name`` is relative to the
        directory holding ``annotations.json``.

    Raises:
        DatasetError: naming the file and field: no ``annotations.json``, invalid JSON, an
            unknown split or a missing split file, a malformed sample.
    """
    root = Path(root)
    path = _annotations_file(root)
    data = load_json(path)
    where = str(path)
    if isinstance(data, Mapping) and "annotations" in data and "images" in data:
        records = _records_from_coco(data, where, bbox_reader=_bbox_from_xyxy)
    else:
        samples = _mapping(data, where)
        records = [_bizarre_sample(str(k), v, i, where) for i, (k, v) in enumerate(samples.items())]
        records.sort(key=lambda r: r.id)
    if split is None:
        return records
    wanted = _split_ids(path.parent.parent, split)
    return [r for r in records if Path(r.file_name).stem in wanted]


# --------------------------------------------------------------------------- writing


def records_to_coco(records: Sequence[ImageRecord]) -> tuple[list[dict], list[dict]]:
    """Turn records (e.g. from :func:`read_coco`) back into ``(images, annotations)`` dicts.

    Args:
        records: :class:`ImageRecord` sequence.

    Returns:
        ``(images, annotations)`` ready for :func:`write_coco`: COCO image dicts and COCO
        keypoint annotation dicts (``score`` / ``keypoint_scores`` included when set).
    """
    images, annotations = [], []
    for rec in records:
        images.append({"id": rec.id, "file_name": rec.file_name, "width": rec.width, "height": rec.height})
        for ann in rec.annotations:
            entry = {
                "id": ann.id,
                "image_id": ann.image_id,
                "category_id": 1,
                "keypoints": [v for (x, y), f in zip(ann.xy.tolist(), ann.visibility.tolist()) for v in (x, y, f)],
                "bbox": ann.bbox.tolist(),
            }
            if ann.score is not None:
                entry["score"] = ann.score
            if ann.keypoint_scores is not None:
                entry["keypoint_scores"] = ann.keypoint_scores.tolist()
            annotations.append(entry)
    return images, annotations


def _image_entry(img, where: str, image_ids: set[int]) -> dict:
    """A validated copy of one image dict (``id`` required and unique; ``file_name``, ``width``
    and ``height`` checked when present: images from a graph or an index may lack them)."""
    img = _mapping(img, where)
    image_id = _integer(_field(img, "id", where), f"{where}.id")
    if image_id in image_ids:
        raise _fail(f"{where}.id", f"duplicate image id {image_id}", "give every image its own id")
    image_ids.add(image_id)
    out = {**img, "id": image_id}
    if "file_name" in img and not (isinstance(img["file_name"], str) and img["file_name"]):
        raise _fail(f"{where}.file_name", f"expected a non-empty string, got {img['file_name']!r}")
    for key in ("width", "height"):
        if key in img:
            out[key] = _integer(img[key], f"{where}.{key}", minimum=1)
    return out


def _annotation_entry(ann, where: str, image_ids: set[int], ann_ids: set[int]) -> dict:
    """A validated copy of one annotation dict with COCO's derived fields filled in."""
    ann = _mapping(ann, where)
    parsed = _parse_annotation(ann, where, np.arange(17), 17)
    if ann.get("category_id", 1) != 1:
        raise _fail(f"{where}.category_id", f"expected 1 (the 'person' category), got {ann['category_id']!r}",
                    "use category_id 1")
    if parsed.image_id not in image_ids:
        raise _fail(f"{where}.image_id", f"refers to image {parsed.image_id}, which is not among the images",
                    "pass the image too")
    if parsed.id in ann_ids:
        raise _fail(f"{where}.id", f"duplicate annotation id {parsed.id}", "give every annotation its own id")
    ann_ids.add(parsed.id)
    out = dict(ann)
    flags = parsed.visibility.tolist()
    out.update(
        id=parsed.id,
        image_id=parsed.image_id,
        category_id=1,
        keypoints=[v for (x, y), f in zip(parsed.xy.tolist(), flags) for v in ((x, y, f) if f else (0, 0, 0))],
        bbox=parsed.bbox.tolist(),
        num_keypoints=sum(1 for f in flags if f > 0),
    )
    out.setdefault("area", float(parsed.bbox[2] * parsed.bbox[3]))
    out.setdefault("iscrowd", 0)
    return out


def _document_parts(images: Iterable[Mapping], annotations: Iterable[Mapping], description: str,
                    info: Mapping | None, where: str):
    """``(head, image entries, annotation entries)`` of a COCO document; the entries are
    generators that validate each item as it is consumed (images first)."""
    head = {"info": {"description": description, **(info or {})}, "licenses": []}
    image_ids: set[int] = set()
    ann_ids: set[int] = set()
    image_entries = (_image_entry(img, f"{where}: images[{i}]", image_ids) for i, img in enumerate(images))
    ann_entries = (_annotation_entry(ann, f"{where}: annotations[{i}]", image_ids, ann_ids)
                   for i, ann in enumerate(annotations))
    return head, image_entries, ann_entries


def coco_document(images: Iterable[Mapping], annotations: Iterable[Mapping], *,
                  description: str = "keypoints written by illustpose", info: Mapping | None = None,
                  where: str = "COCO document") -> dict:
    """A COCO keypoint document, every entry validated and completed: the one COCO builder.

    The layout is that of COCO's own ``person_keypoints_*.json``: ``info``, ``licenses``
    (empty), ``images``, ``annotations`` and the one ``person`` category of
    :func:`illustpose.keypoints.coco_categories`; it is what COCO-keypoint importers of
    annotation tools (CVAT, Label Studio) and pycocotools read, and what :func:`read_coco`
    reads back.  :func:`write_coco` writes the same document to a file.

    Args:
        images: COCO image dicts ``{"id": int, "file_name": str, "width": int, "height": int}``;
            only ``id`` is required (unique); other keys are kept.
        annotations: COCO keypoint annotation dicts (e.g. from
            :func:`illustpose.keypoints.to_coco_annotation` or :func:`records_to_coco`): ``id``
            (unique), ``image_id`` (of one of ``images``), ``keypoints`` (51 numbers ``[x, y,
            v] * 17``, COCO order, pixels, v in {0, 1, 2}), optional ``bbox`` ``[x, y, w, h]``
            (default: extent of the labelled keypoints), ``category_id`` (must be 1),
            ``score``, ``keypoint_scores``; other keys are kept.  ``num_keypoints`` is
            recomputed, ``area`` (w*h) and ``iscrowd`` (0) filled in when absent, and
            unlabelled joints written as ``0, 0, 0``.
        description: ``info.description``.
        info: more ``info`` fields (e.g. ``{"version": ...}``).
        where: names the document in errors (the file when writing one).

    Returns:
        the document as a dict of plain JSON types.

    Raises:
        DatasetError: naming ``where``, the entry and the field (e.g.
            ``annotations[2].keypoints``): malformed or non-finite values, duplicate ids, an
            annotation of an unknown image.
    """
    head, image_entries, ann_entries = _document_parts(images, annotations, description, info, where)
    return {**head, "images": list(image_entries), "annotations": list(ann_entries),
            "categories": [coco_categories()]}


def merge_coco(documents: Sequence[Mapping], *, description: str = "keypoints written by illustpose") -> dict:
    """Several COCO keypoint documents as one :func:`coco_document`, in order; image ids and
    annotation ids are renumbered from 1 (each annotation keeps its image).

    Raises:
        DatasetError: a document without ``images`` / ``annotations`` lists, an annotation of
            an image its document lacks, or any error of :func:`coco_document`.
    """
    images, annotations = [], []
    for n, doc in enumerate(documents):
        where = f"document {n}"
        doc = _mapping(doc, where)
        ids = {}
        for i, img in enumerate(_list(_field(doc, "images", where), f"{where}: images")):
            img = _mapping(img, f"{where}: images[{i}]")
            ids[_field(img, "id", f"{where}: images[{i}]")] = len(images) + 1
            images.append({**img, "id": len(images) + 1})
        for i, ann in enumerate(_list(_field(doc, "annotations", where), f"{where}: annotations")):
            ann = _mapping(ann, f"{where}: annotations[{i}]")
            image_id = _field(ann, "image_id", f"{where}: annotations[{i}]")
            if image_id not in ids:
                raise _fail(f"{where}: annotations[{i}].image_id", f"refers to image {image_id!r}, which is not "
                            "among its document's images")
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": ids[image_id]})
    return coco_document(images, annotations, description=description, where="merged COCO document")


def _json(value, path: Path) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DatasetError(
            f"{path}: an extra field cannot be written as JSON ({exc}); use plain numbers and strings"
        ) from None


def write_coco(
    path: str | os.PathLike,
    images: Iterable[Mapping],
    annotations: Iterable[Mapping],
    *,
    description: str = "keypoints written by illustpose",
    info: Mapping | None = None,
) -> Path:
    """Write a COCO keypoint JSON file atomically: :func:`coco_document`, streamed.

    ``images`` and ``annotations`` may be any iterables (consumed once, images first), so an
    export of millions of entries never holds the document in memory; one entry per line.

    Args:
        path: the JSON file to create or replace; its directory must exist.
        images, annotations, description, info: as :func:`coco_document`.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DatasetError: as :func:`coco_document` (naming ``path``), a value JSON cannot hold, or a
            missing directory.  Nothing is written then.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise DatasetError(f"{path}: directory {path.parent} does not exist; create it first")
    head, image_entries, ann_entries = _document_parts(images, annotations, description, info, str(path))
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write(_json(head, path)[:-1])  # the head without its closing brace
        for key, entries in (("images", image_entries), ("annotations", ann_entries)):
            out.write(f', "{key}": [')
            for n, entry in enumerate(entries):
                out.write(("," if n else "") + "\n" + _json(entry, path))
            out.write("]")
        out.write(', "categories": ' + json.dumps([coco_categories()]) + "}\n")
    return path
