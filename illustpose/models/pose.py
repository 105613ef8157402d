"""Pose estimator, feature-matching variant (reference ``_train/character_pose_estim/models/fermat.py``).

At inference (``inference=True`` in the reference) feat_match never runs the Detectron2
R-CNN: ``matcher_rcnn`` predicts the R-CNN keypoint-head features from the ResNet features,
so the model is exactly reproducible with torchvision.  Keys: ``resnet.*`` (tagger ResNet-50
conv1..layer3, frozen; taken from *this* checkpoint) and ``keypoint_head.*``; the file's
``rcnn.*`` tensors are unused here.

Also :func:`decode_heatmaps`, the reference's heatmap -> keypoint step (sigmoid, kornia
0.6.2 separable Gaussian blur, argmax).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50

from ._common import ImageNetNormalize, resize_short_side

__all__ = ["FeatMatchPoseNet", "ResnetTrunk", "ResBlock", "heatmap_head", "decode_heatmaps", "NUM_HEATMAPS"]

NUM_HEATMAPS = 17 + 8  # COCO-17 + the model's 8 extra channels


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


def heatmap_head() -> nn.Sequential:
    """The pose head shared by feat_match and feat_concat (reference ``fermat.py`` / ``passup.py``):
    [crop (3) + ResNet features (128) + R-CNN features (32)] -> conv 3x3 128, LeakyReLU, BN,
    ResBlock(64), ResBlock(32), conv 3x3 -> 25 heatmap logits; replicate padding."""
    return nn.Sequential(
        nn.Conv2d(128 + 32 + 3, 128, kernel_size=3, padding=1, padding_mode="replicate"),
        nn.LeakyReLU(),
        nn.BatchNorm2d(128),
        ResBlock(3, 64, 3, channels_in=128),
        ResBlock(3, 32, 3, channels_in=64),
        nn.Conv2d(32, NUM_HEATMAPS, kernel_size=3, padding=1, padding_mode="replicate"),
    )


class FeatMatchPoseNet(nn.Module):
    """feat_match pose network (inference path).

    Args:
        heatmap_size: ``margs.size`` (128 released): the head's working resolution.
        trunk_input_size: the tagger's ``largs.danbooru_sfw.size`` (256 released).

    Forward:
        x: float32 (B, 3, S, S) in [0, 1], the pose crop (S = ``largs.danbooru_coco.size``).
        returns: float32 (B, 25, heatmap_size, heatmap_size) heatmap logits
            (channels 0..16 COCO-17, 17..24 extra).
    """

    def __init__(self, heatmap_size: int = 128, trunk_input_size: int = 256):
        super().__init__()
        self.heatmap_size = heatmap_size
        self.resnet = ResnetTrunk(trunk_input_size)
        self.resizer = Resize(heatmap_size)
        self.keypoint_head = nn.ModuleDict({
            "converter_resnet": ResnetFeatureConverter(heatmap_size),
            "matcher_rcnn": nn.Sequential(
                Resize(14),
                nn.Conv2d(128, 512, kernel_size=3, padding=1, padding_mode="replicate"),
                nn.ReLU(),
                nn.BatchNorm2d(512),
            ),
            "converter_rcnn": nn.Sequential(nn.Conv2d(512, 32, kernel_size=1), Resize(heatmap_size)),
            "head": heatmap_head(),
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.keypoint_head
        converted = self.resizer(head["converter_resnet"](self.resnet(x)))
        matched = head["matcher_rcnn"](converted)
        feats = torch.cat([self.resizer(x), converted, head["converter_rcnn"](matched)], dim=1)
        return head["head"](feats)


def _gaussian_kernel1d(window: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    # kornia 0.6.2 filters.kernels.gaussian: offsets centred on window // 2, normalised to sum 1
    x = torch.arange(window, dtype=torch.float32, device=device) - window // 2
    if window % 2 == 0:
        x = x + 0.5
    g = torch.exp(-x.pow(2.0) / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype)


def _filter_reflect(x: torch.Tensor, kernel_hw: torch.Tensor) -> torch.Tensor:
    # kornia 0.6.2 filter2d: reflect-pad to 'same' size, then a depthwise conv2d
    kh, kw = kernel_hw.shape
    b, c, h, w = x.shape
    x = F.pad(x, [(kw - 1) // 2 if kw % 2 == 0 else kw // 2, kw // 2,
                  (kh - 1) // 2 if kh % 2 == 0 else kh // 2, kh // 2], mode="reflect")
    weight = kernel_hw.expand(c, 1, kh, kw)
    return F.conv2d(x, weight, groups=c).view(b, c, h, w)


def decode_heatmaps(
    logits: torch.Tensor, input_size: tuple[int, int], smoothing: float | None = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmap logits -> keypoints in crop pixels, as the reference's ``forward(smoothing=...)``.

    ``p = sigmoid(logits)``; with smoothing, a Gaussian of ``sigma = max(h, w) * smoothing``
    (12.8 at 128) and window ``max(3, 2 * int(sigma) + 1)`` (25) is applied separably, x
    first then y, with reflect borders, exactly as kornia 0.6.2's ``gaussian_blur2d``.  The
    argmax (first index on ties) of each channel gives ``row = idx // w * (H / h)`` and
    ``col = idx % w * (W / w)``: the winning cell's top-left corner in crop pixels (no +0.5).
    Without smoothing the raw logits' argmax is used.

    Args:
        logits: float (B, K, h, w) heatmap logits.
        input_size: ``(H, W)`` of the network input crop in pixels (256, 256).
        smoothing: the reference's smoothing factor (0.1 in ``infer_pose``) or None.

    Returns:
        ``keypoints_rc`` float32 (B, K, 2) (row, col) crop pixels; ``scores`` float32 (B, K):
        the peak of the *unsmoothed* sigmoid map (an illustpose addition; positions are
        unaffected); ``smoothed_max`` float32 (B, K): the maximum of the map the argmax ran on.
    """
    logits = logits.float()
    b, k, h, w = logits.shape
    prob = torch.sigmoid(logits)
    scores = prob.amax(dim=(2, 3))
    if smoothing is None:
        target = logits
    else:
        sigma = max(h, w) * smoothing
        window = max(3, int(sigma) * 2 + 1)
        g = _gaussian_kernel1d(window, sigma, prob.dtype, prob.device)
        target = _filter_reflect(_filter_reflect(prob, g[None, :]), g[:, None])
    flat = target.reshape(b, k, -1)
    idx = flat.argmax(-1)
    rows = idx // w * (input_size[0] / h)
    cols = idx % w * (input_size[1] / w)
    return torch.stack([rows, cols], dim=2).float(), scores, flat.amax(-1)
