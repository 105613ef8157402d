"""The pose estimator (both pose architectures) and the building blocks they share.

Reference ``_scripts/pose_estimator.py`` (inference) and the blocks of
``_train/character_pose_estim/models/fermat.py`` / ``passup.py``: the frozen tagger trunk
(ResNet-50 up to layer3), its feature converter, the residual blocks of
``_util/helper_models_v0.py`` and the 25-channel heatmap head.  The networks are in
:mod:`.feat_match` and :mod:`.feat_concat`; which one a checkpoint holds, and how it is
built, comes from the registry (:mod:`illustpose.registry`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models import resnet50

from ..checkpoints import Checkpoint
from ..detector import Detector
from ..errors import KeypointError
from ..geometry import bbox_xywh_to_rc, cropbox_points, invert_cropbox, pose_cropbox, rc_to_xy
from ..heatmaps import decode_heatmaps
from ..loading import expect_architecture, hparam
from ..preprocess import pose_input
from ..registry import file_options
from ..results import PoseResult
from ..keypoints import ALL_KEYPOINTS
from ._common import ImageNetNormalize, resize_short_side

__all__ = ["NUM_HEATMAPS", "Resize", "ResnetTrunk", "ResnetFeatureConverter", "ResBlock", "heatmap_head",
           "PoseEstimator"]

#: Heatmap channels of the released pose models: COCO-17 + the model's 8 extra channels
#: (the registry's ``keypoint_names``).
NUM_HEATMAPS = len(ALL_KEYPOINTS)


class Resize(nn.Module):
    """Parameter-free ``TT.Resize(size)`` stand-in (2021 semantics, see :func:`resize_short_side`)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize_short_side(x, self.size)


class ResnetTrunk(nn.Module):
    """Tagger ResNet-50 up to layer3 (reference ``ResnetFeatureExtractor``, kate branch).

    Args:
        input_size: the tagger's input side (``largs.danbooru_sfw.size`` of the tagger, 256);
            the crop is resized to it first (a no-op for the released 256 crops).

    Forward: (B, 3, H, W) in [0, 1] -> dict of features: ``conv1`` (B, 64, s/2, s/2),
    ``layer1`` (B, 256, s/4), ``layer2`` (B, 512, s/8), ``layer3`` (B, 1024, s/16).
    """

    def __init__(self, input_size: int = 256):
        super().__init__()
        self.input_size = input_size
        self.normalize = ImageNetNormalize()
        r = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = r.conv1, r.bn1, r.relu, r.maxpool
        self.layer1, self.layer2, self.layer3 = r.layer1, r.layer2, r.layer3

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalize(resize_short_side(x, self.input_size))
        feats = {}
        x = feats["conv1"] = self.relu(self.bn1(self.conv1(x)))
        x = feats["layer1"] = self.layer1(self.maxpool(x))
        x = feats["layer2"] = self.layer2(x)
        feats["layer3"] = self.layer3(x)
        return feats


class ResnetFeatureConverter(nn.Module):
    """1x1 convs of each trunk level to 64 channels, resized to ``size``, then BN, LeakyReLU, 3x3 conv -> 128."""

    def __init__(self, size: int):
        super().__init__()
        self.resizer = Resize(size)
        self.conv1 = nn.Conv2d(64, 64, kernel_size=1)
        self.layer1 = nn.Conv2d(256, 64, kernel_size=1)
        self.layer2 = nn.Conv2d(512, 64, kernel_size=1)
        self.layer3 = nn.Conv2d(1024, 64, kernel_size=1)
        self.head = nn.Conv2d(256, 128, kernel_size=3, padding=1, padding_mode="replicate")
        self.relu = nn.LeakyReLU()
        self.batchnorm = nn.BatchNorm2d(256)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        levels = [self.resizer(getattr(self, name)(feats[name])) for name in ("conv1", "layer1", "layer2", "layer3")]
        return self.head(self.relu(self.batchnorm(torch.cat(levels, dim=1))))


class ResBlock(nn.Module):
    """Residual block of ``depth`` (conv -> ReLU -> BN) steps (reference ``_util/helper_models_v0.py``).

    The skip connection starts *after* the first conv (``head = conv0(x)``), so the input may
    have ``channels_in`` channels; the tail applies ReLU and BN to ``head + body``.
    Replicate padding throughout.
    """

    def __init__(self, depth: int, channels: int, kernel: int, channels_in: int):
        super().__init__()
        layers = OrderedDict()
        for i in range(depth):
            layers[f"conv{i}"] = nn.Conv2d(
                channels_in if i == 0 else channels, channels,
                kernel_size=kernel, padding=kernel // 2, padding_mode="replicate",
            )
            layers[f"act{i}"] = nn.ReLU()
            layers[f"norm{i}"] = nn.BatchNorm2d(channels)
        self.net = nn.Sequential(layers)
        self.net_tail = nn.Sequential(OrderedDict([(f"act{depth}", nn.ReLU()), (f"norm{depth}", nn.BatchNorm2d(channels))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.net[0](x)
        return self.net_tail(head + self.net[1:](head))


def heatmap_head(num_heatmaps: int = NUM_HEATMAPS) -> nn.Sequential:
    """The pose head shared by feat_match and feat_concat (reference ``fermat.py`` / ``passup.py``):
    [crop (3) + ResNet features (128) + R-CNN features (32)] -> conv 3x3 128, LeakyReLU, BN,
    ResBlock(64), ResBlock(32), conv 3x3 -> 25 heatmap logits; replicate padding."""
    return nn.Sequential(
        nn.Conv2d(128 + 32 + 3, 128, kernel_size=3, padding=1, padding_mode="replicate"),
        nn.LeakyReLU(),
        nn.BatchNorm2d(128),
        ResBlock(3, 64, 3, channels_in=128),
        ResBlock(3, 32, 3, channels_in=64),
        nn.Conv2d(32, num_heatmaps, kernel_size=3, padding=1, padding_mode="replicate"),
    )


class PoseEstimator(Detector):
    """The paper's pose estimator (reference ``_scripts/pose_estimator.py``), any pose architecture.

    Args:
        net: a loaded pose network (:class:`~illustpose.models.feat_match.FeatMatchPoseNet`,
            :class:`~illustpose.models.feat_concat.FeatConcatPoseNet`): crops in, heatmap logits out.
        crop_size: crop side in pixels (``largs.danbooru_coco.size``, 256 released).
        padding: crop padding as a fraction of ``crop_size`` (``largs.danbooru_coco.padding``, 0.1).
        smoothing: heatmap smoothing factor of :func:`~illustpose.heatmaps.decode_heatmaps`
            (0.1 as ``infer_pose``; None = raw argmax).
        kind: the architecture (``feat_match``, ``feat_concat``); default: the network's
            ``architecture`` attribute.

    Call ``estimator(image, bbox_xywh)``; the bbox normally comes from the segmenter.
    """

    task = "pose"

    def __init__(self, net: nn.Module, *, crop_size: int = 256, padding: float = 0.1,
                 smoothing: float | None = 0.1, kind: str | None = None, **kw):
        super().__init__(net, kind=kind or getattr(net, "architecture", "pose"), **kw)
        self.crop_size = int(crop_size)
        self.padding = float(padding)
        self.smoothing = smoothing

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, **options) -> "PoseEstimator":
        """Build from a pose checkpoint of any registered architecture; the trunk is taken from
        this file (never from the tagger).

        Args:
            ckpt: a feat_match or feat_concat checkpoint of any format.
            **options: the architecture's further files (its registry ``file_options``, e.g.
                feat_concat's ``rcnn_weights``: the Detectron2 model-zoo
                ``model_final_997cc7.pkl`` for a head-only file); ``search_dirs`` is ignored.

        Raises:
            WrongModelError: not a pose checkpoint.
            CheckpointError: wrong keys or shapes, or a further file missing or bad.
        """
        options.pop("search_dirs", None)
        weights = expect_architecture(ckpt, cls.task)
        files = {o.keyword: options.pop(o.keyword, None) for o in file_options(cls.task)}
        net = weights.build(ckpt, **weights.own_options(files))
        # the reference prefers largs.adds_keypoints and falls back to largs.danbooru_coco
        crop = "largs.adds_keypoints" if "adds_keypoints" in ckpt.hparams.get("largs", {}) else "largs.danbooru_coco"
        return cls(net, crop_size=hparam(ckpt, weights, f"{crop}.size"),
                   padding=hparam(ckpt, weights, f"{crop}.padding"), source=ckpt.path, kind=weights.architecture,
                   **options)

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

        Raises:
            KeypointError: a bbox is not four finite numbers with ``w, h > 0``.
            ImageError: an image has more than :data:`~illustpose.images.MAX_PIXELS` pixels.
        """
        if len(images) != len(bboxes_xywh):
            raise ValueError(f"got {len(images)} images but {len(bboxes_xywh)} bboxes")
        if not images:
            return []
        for i, b in enumerate(bboxes_xywh):
            try:
                v = np.asarray(b, dtype=np.float64)
            except (TypeError, ValueError):
                v = np.zeros(0)
            if v.shape != (4,) or not np.isfinite(v).all() or v[2] <= 0 or v[3] <= 0:
                raise KeypointError(f"bbox {i}: expected [x, y, w, h] pixels with w > 0 and h > 0, got {b!r}")
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
