"""Score pose predictions against COCO keypoint ground truth (what ``illustpose eval`` runs).

The metrics are the reference's (:mod:`illustpose.metrics`: PDJ@0.2, PCKh@0.5/0.2, the
reference's per-joint OKS@0.5/0.75, PCP@0.5), computed with the *ground-truth* bbox as the
normalising box, as the reference does, plus standard COCO keypoint AP through pycocotools
when it is installed (:func:`coco_ap`).

Predictions are COCO keypoint results, the field's exchange format: dicts ``{"image_id":
int, "keypoints": 51 numbers [x, y, v] * 17 (COCO order, pixels), "score": float}`` (other
keys are ignored; the third number of each triple is ignored too, so files that store a
confidence there read fine).  :func:`predict` makes them by running a pipeline,
:func:`read_predictions` loads them from a file, :func:`save_predictions` writes them as a
COCO keypoint file that annotation tools (CVAT, Label Studio) import.

Matching rule (several characters per image, matched as COCO matches them):

* every ground-truth annotation of a scored image is one sample; the predictions of its
  image are matched to its annotations by :func:`illustpose.metrics.match_poses` (highest
  score first, each to the unmatched annotation with the highest COCO OKS);
* an annotation no prediction is matched to counts as missed: all its joints wrong;
  predictions left over (characters the ground truth does not have) are not scored by the
  reference's metrics, but are false positives in COCO AP (:func:`coco_ap`);
* with one annotation and one prediction per image this is the one-to-one pairing of the
  single-character case;
* images without annotations are not scored; annotated images without any prediction are
  an error unless ``skip_missing=True`` (then they are left out of every mean);
* ground-truth joints with ``v = 0`` are left out of every mean, ``v = 1`` and ``v = 2``
  count (COCO's rule); the prediction's own flags are ignored, as COCO ignores them.

``"images"`` in the summary therefore counts scored annotations, which equals the number of
scored images when each has one character.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .datasets import (ImageRecord, KeypointAnnotation, coco_document, load_json, read_coco, records_to_coco,
                       write_coco)
from .errors import EvaluationError, IllustposeError
from .keypoints import to_coco_annotation
from .metrics import coco_keypoint_ap, evaluate, match_poses, summarize

__all__ = [
    "PredictionFile",
    "predict",
    "read_predictions",
    "evaluate_predictions",
    "coco_ap",
    "save_predictions",
    "file_names",
]




_LISTED = 5  # names shown when reporting many images


class _Prediction(NamedTuple):
    """One parsed prediction: image id, float64 (17, 2) ``(x, y)`` pixels, score or None."""

    image_id: int
    xy: np.ndarray
    score: float | None


class PredictionFile(NamedTuple):
    """What :func:`read_predictions` found in a file.

    Attributes:
        predictions: COCO result dicts whose ``image_id`` is the ground truth's id of the
            image, in file order.
        ignored: one description per image of the file that is not in the ground truth
            (``"image_id 17"`` or ``"file 'x.png'"``); their predictions are dropped.
    """

    predictions: list[dict]
    ignored: list[str]


# --------------------------------------------------------------------------- parsing


def _parse_prediction(det, where: str) -> _Prediction:
    """Validate one COCO result dict; EvaluationError naming ``where`` and the field otherwise."""
    if not isinstance(det, Mapping) or "image_id" not in det or "keypoints" not in det:
        got = sorted(det) if isinstance(det, Mapping) else type(det).__name__
        raise EvaluationError(
            f"{where}: expected a COCO keypoint result {{'image_id', 'keypoints': 51 numbers, 'score'}}, "
            f"got {got}; give every prediction an image_id and its keypoints"
        )
    image_id = det["image_id"]
    if isinstance(image_id, bool) or not isinstance(image_id, Integral):
        raise EvaluationError(f"{where}.image_id: expected an integer image id, got {image_id!r}")
    raw = det["keypoints"]
    numeric = isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)) and all(
        isinstance(v, Real) and not isinstance(v, bool) for v in raw
    )
    if not numeric or len(raw) != 51 or not np.isfinite(np.asarray(raw, dtype=np.float64)).all():
        size = len(raw) if numeric else type(raw).__name__
        raise EvaluationError(
            f"{where}.keypoints: expected 51 finite numbers (17 COCO joints as x, y, v), got {size}"
        )
    score = det.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(score)):
        raise EvaluationError(f"{where}.score: expected a finite number or no score, got {score!r}")
    xy = np.asarray(raw, dtype=np.float64).reshape(17, 3)[:, :2].copy()
    return _Prediction(int(image_id), xy, None if score is None else float(score))


def _per_image(predictions: Sequence[Mapping]) -> dict[int, list[_Prediction]]:
    """image id -> its predictions, in file order."""
    found: dict[int, list[_Prediction]] = {}
    for i, det in enumerate(predictions):
        pred = _parse_prediction(det, f"predictions[{i}]")
        found.setdefault(pred.image_id, []).append(pred)
    return found


def file_names(records: Sequence[ImageRecord]) -> str:
    """The first few file names of ``records`` (``'a.png', 'b.png' and 3 more``), for messages."""
    shown = ", ".join(repr(r.file_name) for r in records[:_LISTED])
    return shown + (f" and {len(records) - _LISTED} more" if len(records) > _LISTED else "")


def _match(records: Sequence[ImageRecord], predictions: Sequence[Mapping],
           skip_missing: bool) -> list[tuple[ImageRecord, list[_Prediction]]]:
    """(annotated record, its predictions) pairs, in record order, for the images that have some."""
    best = _per_image(predictions)
    annotated = [r for r in records if r.annotations]
    pairs = [(r, best[r.id]) for r in annotated if r.id in best]
    if not pairs:
        raise EvaluationError(
            f"no annotated image has a prediction: the predictions name image ids {sorted(best)[:_LISTED]}, "
            f"the ground truth's annotated images have ids {[r.id for r in annotated][:_LISTED]}; "
            "check that both use the same image ids"
        )
    missing = [r for r in annotated if r.id not in best]
    if missing and not skip_missing:
        raise EvaluationError(
            f"{len(missing)} of {len(annotated)} annotated images have no prediction ({file_names(missing)}); "
            "predict them, or pass skip_missing=True to score only the images that have one"
        )
    return pairs


def _checked_box(record: ImageRecord, ann: KeypointAnnotation) -> np.ndarray:
    """The annotation's ``[x, y, w, h]`` bbox; EvaluationError if it has no area."""
    if not (ann.bbox[2] > 0 and ann.bbox[3] > 0):
        raise EvaluationError(
            f"ground truth of image {record.file_name!r} (id {record.id}), annotation {ann.id}: bbox "
            f"{ann.bbox.tolist()} has zero width or height, but every metric is normalised by the "
            "ground-truth box; give the annotation a bbox enclosing the character"
        )
    return ann.bbox


# --------------------------------------------------------------------------- scoring


def evaluate_predictions(records: Sequence[ImageRecord], predictions: Sequence[Mapping], *,
                         skip_missing: bool = False) -> dict:
    """The reference's metrics of ``predictions`` against ``records``, as :func:`~illustpose.metrics.summarize` gives them.

    Matching follows the module docstring: the predictions of an image are matched to its
    ground-truth annotations as COCO does, an unmatched annotation counts as missed; the
    ground-truth bbox normalises every distance; ground-truth joints with ``v = 0`` are not
    scored.

    Args:
        records: ground truth, e.g. ``read_coco("gt.json")`` or ``read_bizarre_pose(root,
            "test")``; images without annotations are ignored.
        predictions: COCO keypoint results (see the module docstring), ``(x, y)`` pixels of
            the same images, ``image_id`` = the record's ``id``.  Predictions of images not
            in ``records`` are ignored.
        skip_missing: score only the annotated images that have a prediction instead of
            raising when some have none.

    Returns:
        ``{"metrics": {"pdj@0.2": {"mean": m, "per_joint": {joint: v}}, "pckh@0.5": ...,
        "pckh@0.2": ..., "oks@0.5": ..., "oks@0.75": ..., "pcp@0.5": {"mean": m, "per_part":
        {part: v}}}, "images": n}``: fractions in [0, 1], None where nothing was scored, ``n``
        the number of scored annotations.

    Raises:
        EvaluationError: a malformed prediction (naming its index and field), an annotated
            image without prediction (unless ``skip_missing``), no image matched at all, or a
            ground-truth bbox of zero width or height.
    """
    samples = []
    for rec, preds in _match(records, predictions, skip_missing):
        boxes = [_checked_box(rec, ann) for ann in rec.annotations]
        matched = match_poses(np.stack([ann.xy for ann in rec.annotations]),
                              np.stack([ann.visibility for ann in rec.annotations]), [b[2] * b[3] for b in boxes],
                              np.stack([p.xy for p in preds]), [np.nan if p.score is None else p.score for p in preds])
        missed = np.full((17, 2), np.nan)  # metrics count an all-NaN prediction as a missed character
        samples += [(ann, box, missed if m is None else preds[m].xy)
                    for ann, box, m in zip(rec.annotations, boxes, matched)]
    gt = np.stack([ann.xy for ann, _, _ in samples])
    bbox = np.stack([box for _, box, _ in samples])
    visible = np.stack([ann.visibility for ann, _, _ in samples])
    pred = np.stack([xy for _, _, xy in samples])
    return summarize(evaluate(gt, bbox, pred, visible=visible))


def _result_keypoints(xy: np.ndarray) -> list[float]:
    """(17, 2) ``(x, y)`` -> COCO's flat ``[x, y, 2] * 17``."""
    return [v for x, y in xy.tolist() for v in (x, y, 2)]


def coco_ap(records: Sequence[ImageRecord], predictions: Sequence[Mapping], *,
            skip_missing: bool = False) -> dict[str, float]:
    """Standard COCO keypoint AP / AR (pycocotools) of the same matched pairs as :func:`evaluate_predictions`.

    The ground truth handed to pycocotools holds the scored images and all their
    annotations (renumbered 1..n, ``area`` = bbox w*h); every prediction of those images is
    a detection, score 1.0 when it has none.

    Args:
        records, predictions, skip_missing: as :func:`evaluate_predictions`.

    Returns:
        ``{"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}`` -> float
        in [0, 1], -1.0 where COCO has nothing to score (see
        :func:`illustpose.metrics.coco_keypoint_ap`).

    Raises:
        EvaluationError: as :func:`evaluate_predictions`.
        MetricInputError: pycocotools is not installed.
    """
    pairs = _match(records, predictions, skip_missing)
    images, annotations = records_to_coco([rec for rec, _ in pairs])
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number
    results = [
        {"image_id": rec.id, "category_id": 1, "keypoints": _result_keypoints(pred.xy),
         "score": 1.0 if pred.score is None else pred.score}
        for rec, preds in pairs for pred in preds
    ]
    return coco_keypoint_ap(coco_document(images, annotations, where="ground truth"), results)


# --------------------------------------------------------------------------- running the models


def _poses(pipeline, loaded: list[tuple[ImageRecord, object]]) -> list[tuple[ImageRecord, object]]:
    """(record, its PoseResults or an error message) per loaded image; a failing batch is retried one by one."""
    try:
        annotations = pipeline.annotate([image for _, image in loaded])
    except IllustposeError as exc:
        if len(loaded) == 1:
            return [(loaded[0][0], str(exc))]
        return [item for one in loaded for item in _poses(pipeline, [one])]
    return [(rec, ann.poses) for (rec, _), ann in zip(loaded, annotations)]


def _predict_batch(pipeline, batch: Sequence[ImageRecord], images_dir: Path,
                   first_id: int) -> tuple[list[dict], list[tuple[ImageRecord, str]]]:
    """COCO results of one batch of records, and (record, message) for each image that failed."""
    from .images import load_image

    loaded, failures = [], []
    for rec in batch:
        try:
            loaded.append((rec, load_image(images_dir / rec.file_name)))
        except IllustposeError as exc:
            failures.append((rec, str(exc)))
    results = []
    for rec, poses in _poses(pipeline, loaded) if loaded else ():
        if isinstance(poses, str):
            failures.append((rec, poses))
            continue
        if not poses:
            failures.append((rec, "no character found (its character mask is empty)"))
            continue
        try:
            results += [to_coco_annotation(p.keypoints, p.scores, p.bbox_xywh, image_id=rec.id,
                                           ann_id=first_id + len(results) + k)
                        for k, p in enumerate(poses)]
        except IllustposeError as exc:
            failures.append((rec, f"unusable pose ({exc})"))
    return results, failures


def predict(pipeline, records: Sequence[ImageRecord], images_dir: str | os.PathLike, *, batch_size: int = 1,
            progress: bool = False,
            report: Callable[[str], None] | None = None) -> tuple[list[dict], list[tuple[ImageRecord, str]]]:
    """Run ``pipeline`` on every annotated image of ``records`` and return COCO keypoint results.

    Each image is read from ``images_dir / record.file_name`` (:func:`illustpose.images.load_image`).
    An image that cannot be read, or on which the pipeline raises an
    :class:`~illustpose.errors.IllustposeError`, is skipped (a batch that fails is retried one
    image at a time, so one bad image does not sink its neighbours).

    Args:
        pipeline: an object with ``annotate(list of PIL images) -> [Annotation]`` whose
            ``.poses`` (one per character found) have ``keypoints`` (25 or 17, 2) ``(x, y)``
            pixels, ``scores`` (K,) and ``bbox_xywh`` (e.g. :class:`illustpose.pipeline.Pipeline`
            with a pose model).
        records: ground truth; images without annotations are not run.
        images_dir: the folder the records' ``file_name`` entries are relative to.
        batch_size: images per ``annotate`` call, >= 1.
        progress: show a tqdm progress bar (on stderr, terminals only).
        report: called with one line per failed image as it happens (e.g. ``print``).

    Returns:
        ``(results, failures)``: one :func:`illustpose.keypoints.to_coco_annotation` dict per
        character found (``image_id`` = the record's id, ``score`` = mean joint score,
        ``keypoint_scores``, ``bbox`` = the crop box, ``extra_keypoints``; every joint with
        its position, as the paper scores them: absent joints are not marked here), and
        ``(record, message)`` for each image that gave none (unreadable, refused, or no
        character found).

    Raises:
        EvaluationError: ``batch_size`` < 1.
    """
    from tqdm import tqdm

    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    todo = [r for r in records if r.annotations]
    results, failures = [], []
    with tqdm(total=len(todo), unit="img", disable=None if progress else True) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            done, failed = _predict_batch(pipeline, batch, Path(images_dir), len(results) + 1)
            results += done
            failures += failed
            if report:
                for rec, message in failed:
                    report(f"skipped {rec.file_name}: {message}")
            bar.update(len(batch))
    return results, failures


# --------------------------------------------------------------------------- files


def _results_list(path: Path, data: list, records: Sequence[ImageRecord]) -> PredictionFile:
    """A COCO results list, matched to ``records`` by ``image_id``."""
    known = {r.id for r in records}
    kept, ignored = [], {}
    for i, det in enumerate(data):
        pred = _parse_prediction(det, f"{path}: [{i}]")
        if pred.image_id in known:
            kept.append(dict(det))
        else:
            ignored.setdefault(pred.image_id, f"image_id {pred.image_id}")
    return PredictionFile(kept, list(ignored.values()))


def _annotation_file(path: Path, records: Sequence[ImageRecord]) -> PredictionFile:
    """A COCO keypoint file (any joint order), matched to ``records`` by ``file_name``."""
    by_name = {r.file_name: r.id for r in records}
    kept, ignored = [], []
    for rec in read_coco(path):
        if rec.file_name not in by_name:
            ignored.append(f"file {rec.file_name!r}")
            continue
        _, annotations = records_to_coco([rec])
        kept += [{**ann, "image_id": by_name[rec.file_name]} for ann in annotations]
    return PredictionFile(kept, ignored)


def read_predictions(path: str | os.PathLike, records: Sequence[ImageRecord]) -> PredictionFile:
    """Load predictions saved as a COCO results list or as a COCO keypoint file.

    * a JSON **list** is a COCO results file (what pycocotools' ``loadRes`` reads): each entry
      ``{"image_id", "keypoints": 51 numbers, "score"}``, matched to ``records`` by
      ``image_id``;
    * a JSON **object** is a COCO keypoint file (``images``, ``annotations``, ``categories``,
      e.g. written by ``--save-predictions`` and corrected in CVAT or Label Studio), read with
      :func:`illustpose.datasets.read_coco` (joints matched by name, any order) and matched
      to ``records`` by ``file_name``, because annotation tools renumber image ids on export.

    Args:
        path: the JSON file.
        records: the ground truth the predictions are for.

    Returns:
        :class:`PredictionFile`: the matched predictions as COCO result dicts carrying the
        ground truth's image ids, and the file's images that are not in ``records``.

    Raises:
        EvaluationError: a missing or unreadable file, invalid JSON, JSON that is neither
            form, or a malformed result (naming its index and field).
        DatasetError: a malformed COCO keypoint file (naming the field).
    """
    path = Path(path)
    data = load_json(path, EvaluationError, "predictions file")
    if isinstance(data, list):
        return _results_list(path, data, records)
    if isinstance(data, Mapping) and "annotations" in data:
        return _annotation_file(path, records)
    got = sorted(data)[:8] if isinstance(data, Mapping) else type(data).__name__
    raise EvaluationError(
        f"{path}: expected a COCO results list [{{'image_id', 'keypoints', 'score'}}, ...] or a COCO keypoint "
        f"file with 'images', 'annotations' and 'categories'; got {got}"
    )


def save_predictions(path: str | os.PathLike, records: Sequence[ImageRecord], predictions: Sequence[Mapping]) -> Path:
    """Write ``predictions`` as a COCO keypoint file (atomically), ready for an annotation tool.

    The file lists the images of ``records`` that have a prediction (id, file name, size as
    in the ground truth) and one annotation per prediction (ids renumbered 1..n, other keys
    such as ``score``, ``keypoint_scores``, ``extra_keypoints`` kept), in the layout of
    :func:`illustpose.datasets.write_coco`.  Import it into CVAT or Label Studio as COCO
    keypoints, correct it, export it, and read it back with :func:`read_predictions` or, as
    new ground truth, :func:`illustpose.datasets.read_coco`.

    Args:
        path: the JSON file to create or replace; its folder must exist.
        records: the ground truth (for the image entries).
        predictions: COCO keypoint results whose ``image_id`` is a record's id and whose
            ``v`` flags are 0, 1 or 2 (as :func:`predict` writes them).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DatasetError: a prediction of an image not in ``records``, a ``v`` outside {0, 1, 2},
            a missing folder (naming the file and the entry); nothing is written then.
    """
    wanted = {det.get("image_id") for det in predictions if isinstance(det, Mapping)}
    images, _ = records_to_coco([r for r in records if r.id in wanted])
    annotations = [{**det, "id": number, "category_id": 1} for number, det in enumerate(predictions, start=1)]
    return write_coco(path, images, annotations, description="pose predictions written by illustpose eval")
