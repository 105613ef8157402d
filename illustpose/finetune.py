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
with the same settings equals an uninterrupted one.  feat_concat's cosine spans the
``epochs`` of the call that trains (``T_max = max_epochs``): resuming it with another
``epochs`` continues on the new cosine, which no uninterrupted run follows; feat_match's
constant rate has no such catch (``--epochs 3 --resume`` after 2 epochs equals 3 epochs).

Points are in the library's pixel frame (:mod:`illustpose.geometry`: origin at the top-left
corner of the top-left pixel, so pixel ``u`` spans ``[u, u + 1)``), the frame of the crops'
PIL resampling and of :func:`~illustpose.keypoints.mirror_keypoints` (``x' = width - x``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
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
           "BEST_METRIC", "FALLBACKS", "METADATA_KEY", "MATCH_IOU", "segmenter_boxes", "load_samples", "data_hash",
           "augment_batch", "target_heatmaps", "heatmap_loss", "state_path", "finetune", "finetune_metadata",
           "describe"]

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
#: settings for a base file that does not carry them (the reference's own values are in the
#: released checkpoints' ``margs``; these are common fine-tuning values, not the reference's)
FALLBACKS = {"margs.lr": 1e-4, "margs.lambda_match": 1.0}
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
    """The drawing of ``rec``: ``images_dir / rec.file_name`` read by :func:`~illustpose.images.load_image`
    (an 8-bit RGB or RGBA PIL image).

    Raises:
        FinetuneError: the file is not there, or cannot be read as an image (``where`` names the annotations).
    """
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
        keypoints_rc: float (B, 17, 2) ``(row, col)`` crop pixels, origin at the crop's top-left
            corner (a pixel ``u``'s centre is ``u + 0.5``; module docstring).
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
    # align_corners=False: normalised -1 and 1 are the outer edges of the crop, i.e. crop pixel
    # coordinates 0 and S of the library's frame (pixel u spans [u, u + 1)), so n = 2x / S - 1
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


def _setting(value, ckpt, dotted: str, flag: str) -> float:
    """An explicit setting, else the checkpoint's hyper-parameter, else :data:`FALLBACKS` (with a
    warning: a file without its training settings, e.g. converted by another tool)."""
    from .registry import dotted_get

    if value is not None:
        return float(value)
    found = dotted_get(ckpt.hparams, dotted)
    if found is None:
        found = FALLBACKS[dotted]
        warnings.warn(f"{Path(ckpt.path).name} has no '{dotted}' training setting; using {found} ({flag} sets it)",
                      stacklevel=3)
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
    metrics = "  ".join(f"{k} " + ("-" if v is None else f"{v:.5f}" if k == "loss" else f"{100 * v:.1f}")
                        for k, v in (record.get("metrics") or {}).items())
    return (f"fine-tuned {record.get('base_architecture', '?')} from {record.get('base', '?')} (sha256 "
            f"{str(record.get('base_sha256', '?'))[:12]}...) on {record.get('annotations', '?')} annotations of "
            f"{record.get('images', '?')} images (data sha256 {str(record.get('data_sha256', '?'))[:12]}...), "
            f"{record.get('epochs', '?')} epochs, kept epoch {record.get('best_epoch', '?')}"
            + (f": {metrics}" if metrics else ""))


def _save(out: Path, estimator, ckpt, weights, record: dict) -> None:
    """Write the estimator's network to ``out`` as ``weights convert`` does (illustpose safetensors,
    atomically), with the base file's hyper-parameters and source and ``record`` as the
    :data:`METADATA_KEY` metadata.

    Args:
        out: the ``.safetensors`` path.
        estimator: the :class:`~illustpose.models.pose.PoseEstimator` being trained.
        ckpt, weights: the base :class:`~illustpose.checkpoints.Checkpoint` and its registry record.
        record: the fine-tuning record (:func:`finetune_metadata`): JSON, finite numbers only.
    """
    from .checkpoints import save_safetensors

    extra = {"source": record["base"], "source_sha256": record["base_sha256"],
             "hparams_source": "checkpoint" if ckpt.hparams else "released-defaults",
             METADATA_KEY: json.dumps(record, allow_nan=False)}
    save_safetensors(out, estimator.net.state_dict(), model=weights.architecture,
                     hparams=ckpt.hparams or weights.hparams, extra=extra)


@dataclass(frozen=True)
class _Settings:
    """The numbers a run trains with (:func:`_settings`).

    Attributes:
        lr: Adam's (initial) learning rate.
        lambda_match: weight of feat_match's matching loss (0: no Keypoint R-CNN; always 0 for feat_concat).
        sigma: Gaussian target width in heatmap cells.
        feat_match: the network has feat_match's matcher (``heatmaps_and_match``).
        cosine: the rate follows a cosine over the epochs (feat_concat, ``passup.py``).
        crop_size, heatmap_size: the crop side (pixels) and the heatmap side (cells).
        channels: heatmap channels (25).
    """

    lr: float
    lambda_match: float
    sigma: float
    feat_match: bool
    cosine: bool
    crop_size: int
    heatmap_size: int
    channels: int


def _settings(config: FinetuneConfig, ckpt, weights, estimator) -> _Settings:
    """The run's :class:`_Settings`: each value of ``config`` given, else the base file's ``margs``.

    Raises:
        FinetuneError: lr, lambda_match or sigma neither given nor in the file, or not finite,
            ``lr <= 0``, ``lambda_match < 0`` or ``sigma <= 0``.
    """
    net = estimator.net
    heatmap_size = int(net.heatmap_size)
    lr = _setting(config.lr, ckpt, "margs.lr", "--lr")
    feat_match = hasattr(net, "heatmaps_and_match")
    lambda_match = _setting(config.lambda_match, ckpt, "margs.lambda_match", "--lambda-match") if feat_match else 0.0
    sigma = float(config.sigma) if config.sigma is not None else heatmap_size / 32
    if not all(math.isfinite(v) for v in (lr, lambda_match, sigma)) or not (lr > 0 and lambda_match >= 0 and sigma > 0):
        raise FinetuneError(f"need finite lr > 0, lambda_match >= 0 and sigma > 0; got {lr}, {lambda_match}, {sigma}")
    return _Settings(lr, lambda_match, sigma, feat_match, weights.architecture == "feat_concat",
                     estimator.crop_size, heatmap_size, len(weights.keypoint_names))


def _datasets(annotations, images_dir, val_annotations, val_images_dir, crop_size: int, padding: float,
              segmenter, say: Callable[[str], None]):
    """The training data and the validation data of a run.

    Args:
        annotations, images_dir: the training COCO file and its images' folder.
        val_annotations, val_images_dir: the validation COCO file (or None) and its folder
            (None: ``images_dir``).
        crop_size, padding: the model's crop.
        segmenter: crops the training drawings by its character boxes (:func:`load_samples`), or None.
        say: told how many annotations the segmenter's boxes cropped.

    Returns:
        ``(train_records, samples, val)``: the training :class:`~illustpose.datasets.ImageRecord`
        list, its :class:`Sample` list, and ``(records, {image id: PIL image})`` of the annotated
        validation images, or None.

    Raises:
        FinetuneError, DatasetError: as :func:`load_samples` and :func:`~illustpose.datasets.read_coco`.
    """
    train_records = read_coco(annotations)
    samples = load_samples(train_records, images_dir, crop_size, padding, str(annotations),
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
    return train_records, samples, val


#: what a ``--resume`` file holds besides ``version``, and the type each entry must have
_STATE_FIELDS = {"run": dict, "epoch": int, "head": dict, "optimizer": dict, "best_score": (int, float),
                 "best_epoch": int, "best_head": (dict, type(None)), "history": list, "metrics": dict}


@dataclass
class _RunState:
    """What a run has done so far; with the head's and Adam's state it is the ``--resume`` file.

    Attributes:
        path: the ``--resume`` file (:func:`state_path`).
        run: the settings a resumed run must share (base and data sha256, lr, seed, ...).
        epoch: epochs finished.
        best_score: the kept epoch's score (its :data:`BEST_METRIC` with validation, else its
            0-based index, so the last epoch wins).
        best_epoch: the kept epoch, 1-based; 0 before any.
        best_head: CPU copies of the kept epoch's head tensors; None before any.
        history: one entry per finished epoch (:attr:`FinetuneResult.history`).
        metrics: the kept epoch's validation means, else ``{"loss": ...}``.
    """

    path: Path
    run: dict
    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    best_head: dict | None = None
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def save(self, head: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Write the state with ``head``'s tensors and ``optimizer``'s state to :attr:`path`
        (``torch.save``, atomically)."""
        state = {"version": _STATE_VERSION, "run": self.run, "epoch": self.epoch, "head": head.state_dict(),
                 "optimizer": optimizer.state_dict(), "best_score": self.best_score, "best_epoch": self.best_epoch,
                 "best_head": self.best_head, "history": self.history, "metrics": self.metrics}
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    @classmethod
    def resume(cls, path: Path, run: dict, head: nn.Module, optimizer: torch.optim.Optimizer) -> _RunState:
        """The state at ``path``, its head and Adam state loaded into ``head`` and ``optimizer``.

        Read with the allow-list unpickler of :func:`~illustpose.checkpoints.read_torch_zip`
        (tensors and plain data only; nothing in the file runs).

        Raises:
            FinetuneError: the file is missing, unreadable, not a state of this version, lacks an
                entry or has one of the wrong type, belongs to a run with other ``run`` settings,
                or does not fit ``head`` / ``optimizer``.
        """
        from .checkpoints import read_torch_zip
        from .errors import CheckpointError

        if not path.is_file():
            raise FinetuneError(f"--resume: {path} not found (no earlier run wrote this --out); drop --resume")
        try:
            state = read_torch_zip(path)
        except CheckpointError as e:  # truncated, damaged, or a pickle asking for other globals
            raise FinetuneError(f"--resume: {path} cannot be read ({type(e).__name__}); delete it and start over") \
                from None
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise FinetuneError(f"--resume: {path} is not a fine-tuning state of this illustpose; delete it")
        wrong = [k for k, kind in _STATE_FIELDS.items() if not isinstance(state.get(k), kind)]
        if wrong:
            raise FinetuneError(f"--resume: {path} is damaged (missing or malformed: {', '.join(wrong)}); "
                                "delete it and start over")
        differs = [k for k, v in run.items() if state["run"].get(k) != v]
        if differs:
            shown = ", ".join(f"{k} {state['run'].get(k)!r} then, {run[k]!r} now" for k in differs)
            raise FinetuneError(f"--resume: {path} belongs to another run ({shown}); use the same settings, "
                                "or drop --resume to start over")
        try:
            head.load_state_dict(state["head"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            raise FinetuneError(f"--resume: {path} does not fit this model ({type(e).__name__}); delete it and "
                                "start over") from None
        return cls(path, run, state["epoch"], state["best_score"], state["best_epoch"], state["best_head"],
                   state["history"], state["metrics"])

    def into(self, record: dict) -> None:
        """Copy the progress into the fine-tuning record (``epochs``, ``best_epoch``, ``metrics``, ``history``)."""
        record.update(epochs=self.epoch, best_epoch=self.best_epoch, metrics=self.metrics, history=self.history)


def _batch(samples: Sequence[Sample], idx: np.ndarray, draws, config: FinetuneConfig, settings: _Settings):
    """The crops ``idx`` of ``samples``, augmented by ``draws`` = ``(flips, scales, angles)`` (indexed
    like ``samples``) when ``config.augment``, and their targets.

    Returns:
        crops float32 (B, 3, S, S), targets float32 (B, channels, h, h), weights float32
        (B, channels) (:func:`target_heatmaps`), all on the CPU.
    """
    crops = torch.stack([samples[i].crop for i in idx])
    kps = np.stack([samples[i].keypoints_rc for i in idx])
    vis = np.stack([samples[i].visibility for i in idx])
    if config.augment:
        flips, scales, angles = draws
        crops, kps, vis = augment_batch(crops, kps, vis, flips[idx], scales[idx], angles[idx])
    targets, wts = target_heatmaps(kps, vis, settings.crop_size, settings.heatmap_size, settings.sigma,
                                   settings.channels)
    return crops, targets, wts


def _train_epoch(net: nn.Module, optimizer: torch.optim.Optimizer, rcnn, samples: Sequence[Sample], epoch: int,
                 config: FinetuneConfig, settings: _Settings, device: str, progress: bool) -> dict:
    """One pass over ``samples`` in epoch ``epoch``'s order and augmentation (0-based,
    :func:`_epoch_draws`): one Adam step of the head per batch (feat_concat: at the cosine's rate).

    Args:
        net: the pose network (its head trainable).
        rcnn: feat_match's frozen :class:`~illustpose.models.keypoint_rcnn.KeypointRCNNBranch`
            for the matching loss, or None.
        device: where ``net`` and ``rcnn`` are.
        progress: show a tqdm bar (stderr, terminals only).

    Returns:
        the history entry: ``epoch`` (1-based), ``loss``, ``loss_heatmap``, ``loss_match`` (means
        over the crops) and ``lr``.
    """
    from tqdm import tqdm

    n = len(samples)
    order, *draws = _epoch_draws(config.seed, epoch, n)
    if settings.cosine:  # passup.py's CosineAnnealingLR(T_max=max_epochs), in closed form
        for g in optimizer.param_groups:
            g["lr"] = settings.lr * (1 + math.cos(math.pi * epoch / config.epochs)) / 2
    _train_mode(net)
    sums = np.zeros(3)
    bar = tqdm(total=n, unit="crop", desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=None if progress else True)
    with bar:
        for begin in range(0, n, config.batch_size):
            idx = order[begin:begin + config.batch_size]
            crops, targets, wts = _batch(samples, idx, draws, config, settings)
            x = crops.to(device)
            if settings.feat_match:
                logits, matched = net.heatmaps_and_match(x)
            else:
                logits, matched = net(x), None
            loss_hm = heatmap_loss(logits, targets.to(device), wts.to(device))
            loss_match = torch.zeros((), device=device)
            if rcnn is not None:
                with torch.no_grad():
                    wanted = rcnn.features_last(x)
                loss_match = F.mse_loss(matched, wanted)
            loss = loss_hm + settings.lambda_match * loss_match
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += [loss.item() * len(idx), loss_hm.item() * len(idx), loss_match.item() * len(idx)]
            bar.update(len(idx))
            bar.set_postfix(loss=f"{sums[0] / (begin + len(idx)):.4f}")
    return {"epoch": epoch + 1, "loss": float(sums[0] / n), "loss_heatmap": float(sums[1] / n),
            "loss_match": float(sums[2] / n), "lr": float(optimizer.param_groups[0]["lr"])}


def _kept_by(scores: dict) -> str:
    """The metric the best epoch is chosen by: :data:`BEST_METRIC`, or the first of the others
    that the validation annotations can score (PDJ needs both the left hip and the right
    shoulder labelled, PCKh the head; ``-`` in the epoch lines marks what cannot be scored)."""
    return next((m for m in (BEST_METRIC, *_VAL_METRICS) if scores.get(m) is not None), BEST_METRIC)


def _end_epoch(entry: dict, state: _RunState, record: dict, estimator, optimizer: torch.optim.Optimizer, val,
               config: FinetuneConfig, save_weights: Callable[[], None]) -> str:
    """Finish an epoch: validate it (``val`` from :func:`_datasets`, or None), keep it in ``state``
    if it is the best so far (then ``save_weights()`` writes ``--out``), bring ``record`` up to
    date and write the ``--resume`` state.

    Args:
        entry: the epoch's history entry (:func:`_train_epoch`); gains ``val`` with validation.

    Returns:
        the epoch's report line.
    """
    line = (f"epoch {entry['epoch']}/{config.epochs}: loss {entry['loss']:.5f} (heatmap "
            f"{entry['loss_heatmap']:.5f}, match {entry['loss_match']:.5f})")
    score = entry["epoch"] - 1  # without validation the last epoch is kept
    if val is not None:
        entry["val"] = _validate(estimator, val, config.batch_size)
        record["best_metric"] = metric = _kept_by(entry["val"])
        got = entry["val"][metric]
        score = -math.inf if got is None else got
        line += "  val " + "  ".join(f"{k} " + ("-" if v is None else f"{100 * v:.1f}")
                                     for k, v in entry["val"].items())
    state.history.append(entry)
    state.epoch = entry["epoch"]
    kept = score > state.best_score or state.best_epoch == 0
    if kept:
        head = estimator.net.keypoint_head
        state.best_score, state.best_epoch = score, state.epoch
        state.best_head = {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}
        state.metrics = entry.get("val") or {"loss": entry["loss"]}
        line += "  [kept]"
    state.into(record)
    if kept:
        save_weights()
    state.save(estimator.net.keypoint_head, optimizer)
    return line


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
        FinetuneError: unusable annotations or settings; with ``resume``, a missing or damaged
            state, or one of another run.
        DatasetError: an annotation file that is not COCO keypoint JSON.
        CheckpointError, WrongModelError: ``base`` is not usable pose weights.
        DeviceError: ``config.device`` is not here.
    """
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
    settings = _settings(config, ckpt, weights, estimator)
    train_records, samples, val = _datasets(annotations, images_dir, val_annotations, val_images_dir,
                                            settings.crop_size, estimator.padding, segmenter, say)
    rcnn = _rcnn_branch(ckpt, rcnn_weights, settings.lambda_match).to(device) if settings.lambda_match > 0 else None
    estimator.to(device)
    _trainable(net.keypoint_head)
    optimizer = torch.optim.Adam(list(net.keypoint_head.parameters()), lr=settings.lr)

    run = {"base_sha256": file_sha256(base), "data_sha256": data_hash(train_records, images_dir),
           "lr": settings.lr, "lambda_match": settings.lambda_match, "sigma": settings.sigma, "seed": config.seed,
           "batch_size": config.batch_size, "augment": config.augment,
           "boxes": f"segmenter {file_sha256(segmenter.source)}" if segmenter else "annotations"}
    record = {"base": Path(base).name, "base_architecture": weights.architecture, **run,
              "images": len({s.file_name for s in samples}), "annotations": len(samples),
              "epochs": 0, "best_epoch": 0, "metrics": {}, "best_metric": BEST_METRIC if val else "last epoch"}
    state = _RunState(state_path(out), run)
    if not resume and state.path.is_file():
        say(f"starting over: {state.path} (an earlier run's state) will be replaced; --resume continues it instead")
    if resume:
        state = _RunState.resume(state.path, run, net.keypoint_head, optimizer)
        state.into(record)
        cosine = " (the learning-rate cosine spans the --epochs given now)" if settings.cosine else ""
        if state.epoch >= config.epochs:
            say(f"{state.path}: {state.epoch} epochs already trained; raise --epochs to train more{cosine}")
        else:
            say(f"resuming after epoch {state.epoch} of {config.epochs}{cosine}")

    epoch = state.epoch
    try:
        for epoch in range(state.epoch, config.epochs):
            entry = _train_epoch(net, optimizer, rcnn, samples, epoch, config, settings, device, progress)
            say(_end_epoch(entry, state, record, estimator, optimizer, val, config,
                           lambda: _save(out, estimator, ckpt, weights, record)))
    except KeyboardInterrupt:
        kept = f"{out} holds epoch {state.best_epoch}" if state.best_epoch else f"nothing was written to {out}"
        say(f"interrupted in epoch {epoch + 1}: {kept}; --resume continues after epoch {state.epoch}")
        raise
    if state.best_head is not None:  # the kept epoch's weights, with the record of the whole run
        net.keypoint_head.load_state_dict(state.best_head)
        _save(out, estimator, ckpt, weights, record)
    net.eval()
    return FinetuneResult(out, record["epochs"], state.best_epoch, state.history, record)
