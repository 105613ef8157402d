"""Fine-tuning a pose model on a few annotated drawings (``python -m illustpose finetune``).

What is trained, and how, is the reference's training (``_train/character_pose_estim/models/``
``fermat.py`` for feat_match, ``passup.py`` for feat_concat; docs/finetune.md lists the lines):

* only ``keypoint_head`` learns; the tagger trunk (``resnet``) and the Keypoint R-CNN stay
  frozen in eval mode (their BatchNorms keep their statistics), the head's BatchNorms are in
  training mode (Lightning's ``model.train()``, then ``self.resnet.eval()`` in ``forward``);
* the loss is ``mean(w * BCEWithLogits(logits, targets))`` over (B, 25, h, h), ``w`` the
  per-joint weight (0 for a joint the data marks ``v = 0``, for the 8 extra channels, which
  COCO-17 files do not annotate, and for a joint the augmentation moved off the heatmap);
  feat_match adds ``lambda_match * MSE(matcher_rcnn features, R-CNN features_last)``;
* Adam over the head's parameters at ``margs.lr``; feat_concat (``passup.py``) also anneals
  the rate with a cosine over the epochs (``fermat.py`` does not).

The reference does not publish its data module, so the targets are the field's standard:
a Gaussian of ``sigma`` heatmap cells (default ``heatmap_size / 32``: 4 cells of the released
128 heatmap, 8 pixels of the 256 crop) peaking at 1 on each labelled joint, on the grid the
decoder reads (cell ``i`` is crop pixel ``i * crop / heatmap``).  Crops are the inference
crop (:func:`~illustpose.geometry.pose_cropbox` of the annotation's bbox,
:func:`~illustpose.preprocess.pose_input`); augmentation then flips (left/right joints
swapped), scales and rotates each crop about its centre (:func:`augment_batch`), with draws
from ``numpy.random.default_rng([seed, epoch])``, so a run is repeatable and a resumed run
equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .datasets import ImageRecord, read_coco
from .errors import FinetuneError, IllustposeError
from .fileio import atomic_path, sha256_file
from .geometry import bbox_xywh_to_rc, cropbox_points, pose_cropbox, xy_to_rc
from .keypoints import flip_permutation

__all__ = ["FinetuneConfig", "Sample", "FinetuneResult", "AUGMENT_SCALE", "AUGMENT_ROTATION", "AUGMENT_FLIP",
           "BEST_METRIC", "METADATA_KEY", "MATCH_IOU", "segmenter_boxes", "load_samples", "data_hash", "augment_batch", "target_heatmaps",
           "heatmap_loss", "state_path", "finetune", "finetune_metadata", "describe"]

#: scale jitter: each crop is zoomed by a factor drawn uniformly from this range
AUGMENT_SCALE = (0.75, 1.25)
#: rotation jitter: degrees drawn uniformly from [-AUGMENT_ROTATION, AUGMENT_ROTATION]
AUGMENT_ROTATION = 30.0
#: probability of a horizontal flip (left and right joints swapped)
AUGMENT_FLIP = 0.5
#: the validation metric the best epoch is chosen by (its mean over joints)
BEST_METRIC = "pdj@0.2"
#: the safetensors metadata key holding the fine-tuning record (JSON)
METADATA_KEY = "finetune"
#: a segmenter box stands for an annotation when their IoU is at least this (``--boxes segmenter``)
MATCH_IOU = 0.3
_VAL_METRICS = ("pdj@0.2", "pckh@0.5", "pckh@0.2", "oks@0.5")
_STATE_VERSION = 1


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of a fine-tuning run.

    Attributes:
        epochs: passes over the training set (>= 1).
        batch_size: crops per optimiser step (>= 1).
        lr: Adam's learning rate; None = the base file's ``margs.lr``.
        lambda_match: weight of feat_match's matching loss; None = the file's
            ``margs.lambda_match``; 0 skips the Keypoint R-CNN (much faster, not the reference).
        seed: seeds the order and the augmentation (numpy ``default_rng([seed, epoch])``).
        augment: flip / scale / rotation jitter (module docstring); False trains on the
            inference crops as they are.
        sigma: Gaussian target width in heatmap cells; None = ``heatmap_size / 32``.
        device: ``cpu``, ``cuda``, ``cuda:1``...  Training is float32 throughout.
    """

    epochs: int = 10
    batch_size: int = 4
    lr: float | None = None
    lambda_match: float | None = None
    seed: int = 0
    augment: bool = True
    sigma: float | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class Sample:
    """One annotated character, cropped as at inference.

    Attributes:
        crop: float32 (3, S, S) in [0, 1], the reference pose crop of the annotation's bbox.
        keypoints_rc: float64 (17, 2) ``(row, col)`` crop pixels, COCO order.
        visibility: int64 (17,) COCO flags (0 = not labelled).
        file_name: the image, as the annotation file names it.
        annotation_id: the annotation's id.
        segmenter_box: cropped by the segmenter's box (``load_samples(boxes=...)``), not the
            annotation's.
    """

    crop: torch.Tensor
    keypoints_rc: np.ndarray
    visibility: np.ndarray
    file_name: str
    annotation_id: int
    segmenter_box: bool = False


@dataclass
class FinetuneResult:
    """What :func:`finetune` did.

    Attributes:
        out: the fine-tuned weights (best epoch with ``--val``, else the last).
        epochs: epochs trained in all (a resumed run counts the earlier ones).
        best_epoch: the epoch whose weights ``out`` holds (1-based), 0 if none finished.
        history: one dict per epoch: ``epoch``, ``loss``, ``loss_heatmap``, ``loss_match``,
            ``lr`` and, with validation, ``val`` = ``{metric: mean}``.
        metadata: the fine-tuning record stored in ``out`` (:func:`finetune_metadata`).
    """

    out: Path
    epochs: int
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- data


def _annotated(records: Sequence[ImageRecord], where: str) -> list[ImageRecord]:
    """The records with annotations; FinetuneError when none, or an annotation without labelled joints."""
    kept = [r for r in records if r.annotations]
    if not kept:
        raise FinetuneError(f"{where}: no image has a keypoint annotation; annotate some drawings first "
                            "(docs/finetune.md)")
    for rec in kept:
        for ann in rec.annotations:
            if not (ann.visibility > 0).any():
                raise FinetuneError(f"{where}: annotation {ann.id} of {rec.file_name!r} has no labelled keypoint "
                                    "(every v is 0); label its joints or delete the annotation")
            if not (np.isfinite(ann.bbox).all() and ann.bbox[2] > 0 and ann.bbox[3] > 0):
                raise FinetuneError(f"{where}: annotation {ann.id} of {rec.file_name!r} has bbox "
                                    f"{ann.bbox.tolist()}; give it a box around the character (w, h > 0)")
    return kept


def _image(images_dir: Path, rec: ImageRecord, where: str):
    from .images import load_image

    path = images_dir / rec.file_name
    if not path.is_file():
        raise FinetuneError(f"{where}: image {rec.file_name!r} is not in {images_dir}; pass the folder the "
                            "annotations' file_name entries are relative to")
    try:
        return load_image(path)
    except IllustposeError as e:
        raise FinetuneError(f"{where}: {e}") from None


def segmenter_boxes(segmenter) -> Callable:
    """``boxes(image) -> [[x, y, w, h], ...]``: the character boxes ``annotate`` finds in an 8-bit
    PIL image with ``segmenter`` (a :class:`~illustpose.models.segmenter.CharacterSegmenter`;
    mask split by :func:`~illustpose.characters.split_mask`, ``auto``), pixels, largest first."""
    from .characters import MIN_AREA, split_mask

    def boxes(image) -> list[list[float]]:
        seg = segmenter.segment([image])[0]
        return [list(c.bbox_xywh) for c in split_mask(seg.mask, "auto", MIN_AREA, segmenter.bbox_threshold)]

    return boxes


def _matched_box(box_xywh: np.ndarray, candidates: Sequence) -> list | None:
    """The candidate ``[x, y, w, h]`` overlapping ``box_xywh`` most, if its IoU >= :data:`MATCH_IOU`."""
    from torchvision.ops import box_convert, box_iou

    if not candidates:
        return None
    xyxy = box_convert(torch.as_tensor(np.asarray([box_xywh, *candidates], np.float64)), "xywh", "xyxy")
    iou = box_iou(xyxy[:1], xyxy[1:])[0]
    best = int(iou.argmax())
    return list(candidates[best]) if float(iou[best]) >= MATCH_IOU else None


def load_samples(records: Sequence[ImageRecord], images_dir: str | os.PathLike, crop_size: int, padding: float,
                 where: str = "annotations", boxes: Callable | None = None) -> list[Sample]:
    """The training samples of COCO records: one per annotation, cropped as the pose estimator crops.

    Args:
        records: e.g. ``read_coco(path)``; images without annotations are skipped.
        images_dir: the folder the records' ``file_name`` entries are relative to.
        crop_size, padding: the checkpoint's crop (``largs.danbooru_coco.size`` / ``.padding``).
        where: names the annotations in messages.
        boxes: None crops each annotation's bbox; else ``boxes(image)`` gives the character
            boxes inference would use (:func:`segmenter_boxes`) and each annotation is cropped
            by the one overlapping its bbox most (IoU >= :data:`MATCH_IOU`), or by its own
            bbox when none does (:attr:`Sample.segmenter_box` tells which).

    Returns:
        the samples, in file order.

    Raises:
        FinetuneError: no annotation at all, an annotation without a labelled keypoint or
            without a box, an image missing from ``images_dir`` or unreadable.
    """
    from .preprocess import pose_input

    samples = []
    for rec in _annotated(records, where):
        image = _image(Path(images_dir), rec, where)
        found = boxes(image) if boxes else []
        for ann in rec.annotations:
            matched = _matched_box(ann.bbox, found)
            cb = pose_cropbox(bbox_xywh_to_rc(matched or ann.bbox.tolist()), crop_size, padding)
            samples.append(Sample(pose_input(image, cb), cropbox_points(xy_to_rc(ann.xy), cb),
                                  ann.visibility.copy(), rec.file_name, ann.id, matched is not None))
    return samples


def data_hash(records: Sequence[ImageRecord], images_dir: str | os.PathLike) -> str:
    """sha256 of a training set: each annotated image's file name and content hash, and its
    annotations' boxes, keypoints and flags (the same drawings and labels give the same hash)."""
    rows = []
    for rec in records:
        if rec.annotations:
            anns = [[a.bbox.tolist(), a.xy.tolist(), a.visibility.tolist()] for a in rec.annotations]
            rows.append([rec.file_name, sha256_file(Path(images_dir) / rec.file_name), anns])
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- augmentation and targets


def augment_batch(crops: torch.Tensor, keypoints_rc: np.ndarray, visibility: np.ndarray, flips: np.ndarray,
                  scales: np.ndarray, angles: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Flip, zoom and rotate crops about their centre, and their keypoints with them.

    Args:
        crops: float32 (B, 3, S, S).
        keypoints_rc: float (B, 17, 2) ``(row, col)`` crop pixels.
        visibility: int (B, 17) COCO flags.
        flips: bool (B,): mirror left-right (then left and right joints swap places).
        scales: (B,) zoom factors (> 1 enlarges the character).
        angles: (B,) rotations in degrees.

    Returns:
        the new crops (bilinear, black outside the old crop), keypoints float64 (B, 17, 2)
        and flags int64 (B, 17) in the new crops' frame.
    """
    size = crops.shape[-1]
    a = np.deg2rad(np.asarray(angles, dtype=np.float64))
    f = np.where(flips, -1.0, 1.0)
    s = np.asarray(scales, dtype=np.float64)
    # output (x, y) in [-1, 1] -> input: rotate(a) @ diag(f, 1) @ out / s
    m = np.stack([np.stack([np.cos(a) * f, -np.sin(a)], -1), np.stack([np.sin(a) * f, np.cos(a)], -1)], -2)
    m = m / s[:, None, None]
    theta = torch.from_numpy(np.concatenate([m, np.zeros((len(s), 2, 1))], -1)).to(crops.dtype)
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    out = F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    kp = np.asarray(keypoints_rc, dtype=np.float64)
    norm_xy = np.stack([kp[..., 1], kp[..., 0]], -1) * (2.0 / size) - 1.0
    moved = np.einsum("bij,bkj->bki", np.linalg.inv(m), norm_xy)
    kp_new = np.stack([moved[..., 1], moved[..., 0]], -1).__add__(1.0) * (size / 2.0)
    vis_new = np.array(visibility, dtype=np.int64)
    perm = list(flip_permutation(kp.shape[1]))
    kp_new[flips] = kp_new[flips][:, perm]
    vis_new[flips] = vis_new[flips][:, perm]
    return out, kp_new, vis_new


def target_heatmaps(keypoints_rc: np.ndarray, visibility: np.ndarray, crop_size: int, heatmap_size: int,
                    sigma: float, channels: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian target heatmaps and per-channel loss weights.

    Args:
        keypoints_rc: float (B, J, 2) ``(row, col)`` crop pixels (J <= channels; COCO-17 first).
        visibility: int (B, J) COCO flags.
        crop_size, heatmap_size: the crop side and the head's heatmap side (pixels, cells).
        sigma: Gaussian width in heatmap cells.
        channels: heatmap channels of the model (25: COCO-17 then 8 extra).

    Returns:
        targets float32 (B, channels, h, h) in [0, 1], ``exp(-d^2 / (2 sigma^2))`` with ``d``
        the distance from cell ``(i, j)`` to the joint at ``crop * h / S`` cells; weights
        float32 (B, channels): 1 for a labelled joint whose peak lies on the heatmap, else 0
        (channels past J: 0).
    """
    kp = np.asarray(keypoints_rc, dtype=np.float64) * (heatmap_size / crop_size)
    b, j = kp.shape[:2]
    grid = np.arange(heatmap_size, dtype=np.float64)
    rows = np.exp(-((grid[None, None] - kp[..., 0:1]) ** 2) / (2 * sigma**2))  # (B, J, h)
    cols = np.exp(-((grid[None, None] - kp[..., 1:2]) ** 2) / (2 * sigma**2))
    inside = ((kp >= 0) & (kp < heatmap_size)).all(-1) & (np.asarray(visibility) > 0)
    targets = np.zeros((b, channels, heatmap_size, heatmap_size), dtype=np.float32)
    targets[:, :j] = rows[..., :, None] * cols[..., None, :] * inside[..., None, None]
    weights = np.zeros((b, channels), dtype=np.float32)
    weights[:, :j] = inside
    return torch.from_numpy(targets), torch.from_numpy(weights)


def heatmap_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The reference's heatmap loss: ``mean(weights[:, :, None, None] * BCEWithLogits(logits, targets))``
    over every element (zero-weight channels included in the count, as ``loss['loss'].mean()``)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return (weights[:, :, None, None] * bce).mean()


# --------------------------------------------------------------------------- the run


def state_path(out: str | os.PathLike) -> Path:
    """Where a run writing ``out`` keeps what ``--resume`` needs: ``<out>.resume.pt`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".resume.pt")


def _setting(value, ckpt, dotted: str, flag: str):
    """An explicit setting, else the checkpoint's hyper-parameter; FinetuneError when neither."""
    from .registry import dotted_get

    if value is not None:
        return float(value)
    found = dotted_get(ckpt.hparams, dotted)
    if found is None:
        raise FinetuneError(f"{ckpt.path} has no '{dotted}' hyper-parameter (a file without the training "
                            f"settings); pass {flag}")
    return float(found)


def _rcnn_branch(ckpt, rcnn_weights, lambda_match: float):
    """feat_match's frozen Keypoint R-CNN (from the file's ``rcnn.model.*``, else ``rcnn_weights``)."""
    from .checkpoints import read_model_zoo_pkl
    from .loading import load_strict
    from .models.feat_concat import RCNN_PREFIX
    from .models.keypoint_rcnn import KeypointRCNNBranch, branch_weights

    if rcnn_weights is not None:
        sd, source = branch_weights(read_model_zoo_pkl(rcnn_weights), str(rcnn_weights)), str(rcnn_weights)
    else:
        own = {k[len(RCNN_PREFIX):]: v for k, v in ckpt.state_dict.items() if k.startswith(RCNN_PREFIX)}
        if not own:
            raise FinetuneError(
                f"{ckpt.path} has no Keypoint R-CNN tensors ('{RCNN_PREFIX}*'; a converted .safetensors leaves "
                f"them out), but feat_match's matching loss (lambda_match {lambda_match:g}) needs them: pass the "
                "authors' .ckpt as --pose, or --rcnn-weights model_final_997cc7.pkl, or --lambda-match 0")
        sd, source = branch_weights(own, ckpt.path), ckpt.path
    return load_strict(KeypointRCNNBranch, sd, source).eval()


def _trainable(head: nn.Module) -> None:
    """Give the head its own trainable copies (loaded tensors may be memory-mapped and are frozen)."""
    for m in head.modules():
        for k, p in m._parameters.items():
            if p is not None:
                m._parameters[k] = nn.Parameter(p.detach().clone(), requires_grad=True)
        for k, b in m._buffers.items():
            if b is not None:
                m._buffers[k] = b.clone()


def _train_mode(net: nn.Module) -> None:
    """As the reference in training: everything in train mode, then the frozen parts back in eval."""
    net.train()
    for name in ("resnet", "rcnn"):
        if hasattr(net, name):
            getattr(net, name).eval()


def _epoch_draws(seed: int, epoch: int, n: int):
    """The order and augmentation of epoch ``epoch`` (0-based): the same for every run with ``seed``."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    flips = rng.random(n) < AUGMENT_FLIP
    scales = rng.uniform(*AUGMENT_SCALE, n)
    angles = rng.uniform(-AUGMENT_ROTATION, AUGMENT_ROTATION, n)
    return order, flips, scales, angles


def _validate(estimator, val, batch_size: int) -> dict:
    """``{metric: mean}`` of the model on the validation annotations, each cropped from its own bbox."""
    from .evaluation import evaluate_predictions
    from .keypoints import to_coco_annotation

    records, images = val
    items = [(rec, ann, images[rec.id]) for rec in records for ann in rec.annotations]
    predictions = []
    estimator.net.eval()
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        poses = estimator.estimate([im for _, _, im in chunk], [ann.bbox.tolist() for _, ann, _ in chunk])
        predictions += [to_coco_annotation(p.keypoints, p.scores, ann.bbox, image_id=rec.id, ann_id=ann.id)
                        for (rec, ann, _), p in zip(chunk, poses)]
    summary = evaluate_predictions(records, predictions)
    return {name: summary["metrics"][name]["mean"] for name in _VAL_METRICS}


def finetune_metadata(path: str | os.PathLike) -> dict | None:
    """The fine-tuning record of a weight file (``weights list``, ``index info``), None for any
    other file (not safetensors, unreadable, or not fine-tuned)."""
    if Path(path).suffix not in (".safetensors", ".sft") or not Path(path).is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            text = (f.metadata() or {}).get(METADATA_KEY)
        return json.loads(text) if text else None
    except (SafetensorError, OSError, ValueError):
        return None


def describe(record: dict) -> str:
    """One line about a fine-tuning record (:func:`finetune_metadata`), for listings."""
    metrics = "  ".join(f"{k} " + (f"{100 * v:.1f}" if k != "loss" and v is not None else f"{v}")
                        for k, v in (record.get("metrics") or {}).items())
    return (f"fine-tuned {record.get('base_architecture', '?')} from {record.get('base', '?')} (sha256 "
            f"{str(record.get('base_sha256', '?'))[:12]}...) on {record.get('annotations', '?')} annotations of "
            f"{record.get('images', '?')} images (data sha256 {str(record.get('data_sha256', '?'))[:12]}...), "
            f"{record.get('epochs', '?')} epochs, kept epoch {record.get('best_epoch', '?')}"
            + (f": {metrics}" if metrics else ""))


def _save(out: Path, estimator, ckpt, weights, record: dict) -> None:
    from .checkpoints import save_safetensors

    extra = {"source": record["base"], "source_sha256": record["base_sha256"],
             "hparams_source": "checkpoint" if ckpt.hparams else "released-defaults",
             METADATA_KEY: json.dumps(record, allow_nan=False)}
    save_safetensors(out, estimator.net.state_dict(), model=weights.architecture,
                     hparams=ckpt.hparams or weights.hparams, extra=extra)


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, expected: dict) -> dict:
    """A ``--resume`` state; FinetuneError when missing, unreadable or of another run."""
    if not path.is_file():
        raise FinetuneError(f"--resume: {path} not found (no earlier run wrote this --out); drop --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file: any unpickling error
        raise FinetuneError(f"--resume: {path} cannot be read ({type(e).__name__}); delete it and start over") from None
    if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
        raise FinetuneError(f"--resume: {path} is not a fine-tuning state of this illustpose; delete it")
    differs = [k for k, v in expected.items() if state["run"].get(k) != v]
    if differs:
        shown = ", ".join(f"{k} {state['run'].get(k)!r} then, {expected[k]!r} now" for k in differs)
        raise FinetuneError(f"--resume: {path} belongs to another run ({shown}); use the same settings, "
                            "or drop --resume to start over")
    return state


def finetune(base: str | os.PathLike, annotations: str | os.PathLike, images_dir: str | os.PathLike,
             out: str | os.PathLike, *, config: FinetuneConfig = FinetuneConfig(),
             val_annotations: str | os.PathLike | None = None, val_images_dir: str | os.PathLike | None = None,
             resume: bool = False, rcnn_weights: str | os.PathLike | None = None, segmenter=None,
             report: Callable[[str], None] | None = None, progress: bool = False) -> FinetuneResult:
    """Fine-tune a pose model's head on COCO keypoint annotations (module docstring).

    After each epoch the weights are written to ``out`` (atomically; with validation only when
    the epoch is the best so far by :data:`BEST_METRIC`) as an illustpose safetensors file
    that loads wherever a pose file does, with the fine-tuning record as metadata
    (:func:`finetune_metadata`), and the run's state to :func:`state_path` (``resume=True``
    continues from it).  Ctrl-C (KeyboardInterrupt) is re-raised after a line saying what
    ``out`` holds: the best weights so far stay there.

    Args:
        base: the pose weights to start from (any format a pose loader reads).
        annotations: COCO keypoint JSON of the training drawings.
        images_dir: the folder their ``file_name`` entries are relative to.
        out: the ``.safetensors`` to write.
        config: the settings (:class:`FinetuneConfig`).
        val_annotations, val_images_dir: held-out COCO annotations and their folder (default
            ``images_dir``), scored after every epoch with the annotations' boxes.
        resume: continue the run whose state is beside ``out`` (same base, data and settings).
        rcnn_weights: Detectron2 ``model_final_997cc7.pkl``: a feat_concat head without its
            R-CNN, or feat_match's matching loss when ``base`` has no ``rcnn.model.*``.
        segmenter: a :class:`~illustpose.models.segmenter.CharacterSegmenter` whose character
            boxes crop the training drawings, as at inference (:func:`load_samples`); None
            crops the annotations' boxes.  Validation always uses the annotations' boxes.
        report: called with one line per epoch (and on interruption).
        progress: a tqdm bar per epoch with the running loss (stderr, terminals only).

    Returns:
        :class:`FinetuneResult`.

    Raises:
        FinetuneError: unusable annotations or settings, or a state of another run.
        DatasetError: an annotation file that is not COCO keypoint JSON.
        CheckpointError, WrongModelError: ``base`` is not usable pose weights.
        DeviceError: ``config.device`` is not here.
    """
    from tqdm import tqdm

    from .checkpoints import read_checkpoint
    from .detector import check_device
    from .loading import expect_architecture
    from .models.pose import PoseEstimator
    from .weights import file_sha256

    if config.epochs < 1 or config.batch_size < 1:
        raise FinetuneError(f"epochs and batch_size must be >= 1, got {config.epochs} and {config.batch_size}")
    say = report or (lambda line: None)
    device = check_device(config.device)
    out = Path(out)
    ckpt = read_checkpoint(base)
    weights = expect_architecture(ckpt, "pose")
    estimator = PoseEstimator.from_checkpoint(ckpt, rcnn_weights=rcnn_weights)
    net = estimator.net
    crop_size, heatmap_size = estimator.crop_size, int(net.heatmap_size)
    lr = _setting(config.lr, ckpt, "margs.lr", "--lr")
    feat_match = hasattr(net, "heatmaps_and_match")
    lambda_match = _setting(config.lambda_match, ckpt, "margs.lambda_match", "--lambda-match") if feat_match else 0.0
    sigma = float(config.sigma) if config.sigma is not None else heatmap_size / 32
    if not (math.isfinite(lr) and lr > 0 and math.isfinite(lambda_match) and lambda_match >= 0 and sigma > 0):
        raise FinetuneError(f"need lr > 0, lambda_match >= 0 and sigma > 0; got {lr}, {lambda_match}, {sigma}")

    train_records = read_coco(annotations)
    samples = load_samples(train_records, images_dir, crop_size, estimator.padding, str(annotations),
                           boxes=segmenter_boxes(segmenter) if segmenter else None)
    if segmenter:
        used = sum(x.segmenter_box for x in samples)
        say(f"{used} of {len(samples)} annotations cropped by the segmenter's box, {len(samples) - used} by their "
            f"own (no character box overlapped them with IoU >= {MATCH_IOU})")
    val = None
    if val_annotations is not None:
        val_dir = Path(val_images_dir or images_dir)
        records = _annotated(read_coco(val_annotations), str(val_annotations))
        val = (records, {r.id: _image(val_dir, r, str(val_annotations)) for r in records})

    rcnn = _rcnn_branch(ckpt, rcnn_weights, lambda_match).to(device) if lambda_match > 0 else None
    estimator.to(device)
    _trainable(net.keypoint_head)
    head_params = list(net.keypoint_head.parameters())
    optimizer = torch.optim.Adam(head_params, lr=lr)
    cosine = weights.architecture == "feat_concat"  # passup.py's CosineAnnealingLR(T_max=max_epochs)

    run = {"base_sha256": file_sha256(base), "data_sha256": data_hash(train_records, images_dir),
           "lr": lr, "lambda_match": lambda_match, "sigma": sigma, "seed": config.seed,
           "batch_size": config.batch_size, "augment": config.augment,
           "boxes": f"segmenter {file_sha256(segmenter.source)}" if segmenter else "annotations"}
    record = {"base": Path(base).name, "base_architecture": weights.architecture, **run,
              "images": len({s.file_name for s in samples}), "annotations": len(samples),
              "epochs": 0, "best_epoch": 0, "metrics": {}, "best_metric": BEST_METRIC if val else "last epoch"}
    spath = state_path(out)
    start, best_score, history, best_epoch, best_head = 0, -math.inf, [], 0, None
    if resume:
        state = _load_state(spath, run)
        net.keypoint_head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        start, best_score, history = state["epoch"], state["best_score"], state["history"]
        best_epoch, best_head = state["best_epoch"], state["best_head"]
        record.update(epochs=start, best_epoch=best_epoch, metrics=state["metrics"], history=history)
        if start >= config.epochs:
            say(f"{spath}: {start} epochs already trained; raise --epochs to train more")
        else:
            say(f"resuming after epoch {start} of {config.epochs}")

    n = len(samples)
    epoch = start
    try:
        for epoch in range(start, config.epochs):
            order, flips, scales, angles = _epoch_draws(config.seed, epoch, n)
            if cosine:
                for g in optimizer.param_groups:
                    g["lr"] = lr * (1 + math.cos(math.pi * epoch / config.epochs)) / 2
            _train_mode(net)
            sums = np.zeros(3)
            bar = tqdm(total=n, unit="crop", desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       disable=None if progress else True)
            with bar:
                for begin in range(0, n, config.batch_size):
                    idx = order[begin:begin + config.batch_size]
                    crops = torch.stack([samples[i].crop for i in idx])
                    kps = np.stack([samples[i].keypoints_rc for i in idx])
                    vis = np.stack([samples[i].visibility for i in idx])
                    if config.augment:
                        crops, kps, vis = augment_batch(crops, kps, vis, flips[idx], scales[idx], angles[idx])
                    targets, wts = target_heatmaps(kps, vis, crop_size, heatmap_size, sigma,
                                                   len(weights.keypoint_names))
                    x = crops.to(device)
                    if feat_match:
                        logits, matched = net.heatmaps_and_match(x)
                    else:
                        logits, matched = net(x), None
                    loss_hm = heatmap_loss(logits, targets.to(device), wts.to(device))
                    loss_match = torch.zeros((), device=device)
                    if rcnn is not None:
                        with torch.no_grad():
                            wanted = rcnn.features_last(x)
                        loss_match = F.mse_loss(matched, wanted)
                    loss = loss_hm + lambda_match * loss_match
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    sums += [loss.item() * len(idx), loss_hm.item() * len(idx), loss_match.item() * len(idx)]
                    bar.update(len(idx))
                    bar.set_postfix(loss=f"{sums[0] / (begin + len(idx)):.4f}")
            entry = {"epoch": epoch + 1, "loss": float(sums[0] / n), "loss_heatmap": float(sums[1] / n),
                     "loss_match": float(sums[2] / n), "lr": float(optimizer.param_groups[0]["lr"])}
            line = (f"epoch {epoch + 1}/{config.epochs}: loss {entry['loss']:.5f} (heatmap "
                    f"{entry['loss_heatmap']:.5f}, match {entry['loss_match']:.5f})")
            score = epoch  # without validation the last epoch is kept
            if val is not None:
                entry["val"] = _validate(estimator, val, config.batch_size)
                got = entry["val"][BEST_METRIC]
                score = -math.inf if got is None else got
                line += "  val " + "  ".join(f"{k} " + ("-" if v is None else f"{100 * v:.1f}")
                                             for k, v in entry["val"].items())
            history.append(entry)
            record.update(epochs=epoch + 1, history=history)
            if score > best_score or best_epoch == 0:
                best_score, best_epoch = score, epoch + 1
                best_head = {k: v.detach().to("cpu", copy=True) for k, v in net.keypoint_head.state_dict().items()}
                record.update(best_epoch=best_epoch, metrics=entry.get("val") or {"loss": entry["loss"]})
                line += "  [kept]"
                _save(out, estimator, ckpt, weights, record)
            _save_state(spath, {"version": _STATE_VERSION, "run": run, "epoch": epoch + 1,
                                "head": net.keypoint_head.state_dict(), "optimizer": optimizer.state_dict(),
                                "best_score": best_score, "best_epoch": best_epoch, "best_head": best_head,
                                "history": history, "metrics": record["metrics"]})
            say(line)
    except KeyboardInterrupt:
        kept = f"{out} holds epoch {best_epoch}" if best_epoch else f"nothing was written to {out}"
        say(f"interrupted in epoch {epoch + 1}: {kept}; --resume continues after epoch {len(history)}")
        raise
    if best_head is not None:  # the kept epoch's weights, with the record of the whole run
        net.keypoint_head.load_state_dict(best_head)
        _save(out, estimator, ckpt, weights, record)
    net.eval()
    return FinetuneResult(out, record["epochs"], best_epoch, history, record)
