"""Pose estimation: COCO-17 (+8 extra) keypoints of the character inside a bbox."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from PIL import Image

from .checkpoints import Checkpoint
from .detector import Detector
from .errors import CheckpointError
from .geometry import bbox_xywh_to_rc, cropbox_points, invert_cropbox, pose_cropbox, rc_to_xy
from .loading import expect_kind, hparam, load_strict
from .models.feat_concat import IGNORED_CHECKPOINT_KEYS, RCNN_PREFIX, FeatConcatPoseNet
from .models.keypoint_rcnn import check_pixel_statistics, load_model_zoo_pkl
from .models.pose import FeatMatchPoseNet, decode_heatmaps
from .preprocess import pose_input
from .results import PoseResult
from .weights import POSE_MODELS

__all__ = ["PoseEstimator"]


class PoseEstimator(Detector):
    """The paper's pose estimator (reference ``_scripts/pose_estimator.py``), feat_match or feat_concat.

    Args:
        net: a loaded :class:`~illustpose.models.pose.FeatMatchPoseNet` or
            :class:`~illustpose.models.feat_concat.FeatConcatPoseNet`.
        crop_size: crop side in pixels (``largs.danbooru_coco.size``, 256 released).
        padding: crop padding as a fraction of ``crop_size`` (``largs.danbooru_coco.padding``, 0.1).
        smoothing: heatmap smoothing factor of :func:`~illustpose.models.pose.decode_heatmaps`
            (0.1 as ``infer_pose``; None = raw argmax).

    Call ``estimator(image, bbox_xywh)``; the bbox normally comes from the segmenter.
    """

    default_weights = "feat_match+data"

    def __init__(self, net: FeatMatchPoseNet | FeatConcatPoseNet, *, crop_size: int = 256, padding: float = 0.1,
                 smoothing: float | None = 0.1, **kw):
        kw.setdefault("kind", "feat_concat" if isinstance(net, FeatConcatPoseNet) else "feat_match")
        super().__init__(net, **kw)
        self.crop_size = int(crop_size)
        self.padding = float(padding)
        self.smoothing = smoothing

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, *, rcnn_weights: str | os.PathLike | None = None,
                        **kwargs) -> "PoseEstimator":
        """Build from a pose checkpoint; the trunk is taken from this file (never from the tagger).

        Args:
            ckpt: a feat_match or feat_concat checkpoint of any format.
            rcnn_weights: for a feat_concat file without ``rcnn.*`` tensors (a head-only
                repackaging), the Detectron2 model-zoo ``model_final_997cc7.pkl`` of
                ``keypoint_rcnn_R_101_FPN_3x``; read with a restricted unpickler.

        Raises:
            WrongModelError: not a pose checkpoint.
            CheckpointError: a feat_concat head without R-CNN weights, or wrong keys/shapes.
        """
        kwargs.pop("search_dirs", None)
        kind = expect_kind(ckpt, POSE_MODELS)
        # the reference prefers largs.adds_keypoints and falls back to largs.danbooru_coco
        crop = "largs.adds_keypoints" if "adds_keypoints" in ckpt.hparams.get("largs", {}) else "largs.danbooru_coco"
        sizes = dict(heatmap_size=int(hparam(ckpt, kind, "margs.size")),
                     trunk_input_size=int(hparam(ckpt, kind, "largs.danbooru_sfw.size")))
        sd = ckpt.state_dict
        if kind == "feat_match":
            net = load_strict(lambda: FeatMatchPoseNet(**sizes), sd, ckpt.path, ignore_prefixes=("rcnn.",))
        else:
            if rcnn_weights is not None:
                sd = {k: v for k, v in sd.items() if not k.startswith(RCNN_PREFIX)}
                sd.update(load_model_zoo_pkl(rcnn_weights, prefix=RCNN_PREFIX))
            elif not any(k.startswith(RCNN_PREFIX) for k in sd):
                raise CheckpointError(
                    f"{ckpt.path}: a feat_concat pose head without the Keypoint R-CNN weights (no "
                    f"'{RCNN_PREFIX}*' tensors); pass the Detectron2 model-zoo file of "
                    "keypoint_rcnn_R_101_FPN_3x (model_final_997cc7.pkl) as rcnn_weights / --rcnn-weights."
                )
            check_pixel_statistics(sd, ckpt.path, prefix=RCNN_PREFIX)
            net = load_strict(lambda: FeatConcatPoseNet(**sizes), sd, ckpt.path, ignore_prefixes=IGNORED_CHECKPOINT_KEYS)
        return cls(net, crop_size=hparam(ckpt, kind, f"{crop}.size"), padding=hparam(ckpt, kind, f"{crop}.padding"),
                   source=ckpt.path, kind=kind, **kwargs)

    def heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, S, S) crops in [0, 1] -> float32 (B, 25, h, w) heatmap logits on the CPU."""
        return self.forward(crops)

    def __call__(self, image: Image.Image, bbox_xywh: Sequence[int], **kw) -> PoseResult:
        """Estimate the pose of the character inside ``bbox_xywh`` (COCO ``[x, y, w, h]`` pixels)."""
        return self.estimate([image], [bbox_xywh], **kw)[0]

    def estimate(self, images: Sequence[Image.Image], bboxes_xywh: Sequence[Sequence[int]], *,
                 return_heatmaps: bool = False) -> list[PoseResult]:
        """Estimate poses for images with one character bbox each, as one batch.

        Returns:
            one :class:`PoseResult` per image: keypoints (25, 2) float64 (x, y) input pixels,
            scores (25,) float32, and the heatmap logits when ``return_heatmaps``.
        """
        if len(images) != len(bboxes_xywh):
            raise ValueError(f"got {len(images)} images but {len(bboxes_xywh)} bboxes")
        if not images:
            return []
        cropboxes = [pose_cropbox(bbox_xywh_to_rc(b), self.crop_size, self.padding) for b in bboxes_xywh]
        crops = torch.stack([pose_input(im, cb) for im, cb in zip(images, cropboxes)])
        logits = self.heatmaps(crops)
        kps_rc, scores, _ = decode_heatmaps(logits, crops.shape[-2:], self.smoothing)
        out = []
        for i, (im, cb) in enumerate(zip(images, cropboxes)):
            hw = (im.height, im.width)
            # crop (row, col) -> image (row, col) through the unrounded inverse cropbox, in
            # float64 as the reference; then the one (row, col) -> (x, y) swap.
            xy = rc_to_xy(cropbox_points(kps_rc[i].numpy(), invert_cropbox(hw, cb)))
            out.append(PoseResult(
                keypoints=xy, scores=scores[i].numpy(), bbox_xywh=tuple(int(v) for v in bboxes_xywh[i]),
                cropbox=cb, image_size_hw=hw, heatmaps=logits[i].numpy() if return_heatmaps else None,
            ))
        return out
