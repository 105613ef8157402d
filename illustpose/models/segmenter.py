"""Character segmenter: DeepLabv3-ResNet101 plus a final head over [DeepLab output, input].

Reference ``_train/character_bg_seg/models/alaska.py``.  Keys: ``deeplab.backbone.*`` (ResNet-101,
dilated layer3/layer4), ``deeplab.classifier.*`` (ASPP(2048, [12, 24, 36]) -> conv 256->64, BN,
LeakyReLU -> conv 64->16, BN, LeakyReLU) and ``final_head.*`` (conv 19->16, BN, LeakyReLU, conv
16->8, BN, LeakyReLU, conv 8->2).  No ``aux_classifier``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3

from ._common import ImageNetNormalize

__all__ = ["CharacterSegmenterNet"]


def _conv_bn_lrelu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU()]


class CharacterSegmenterNet(nn.Module):
    """Foreground/background segmenter.

    Forward:
        rgb: float32 (B, 3, H, W) in [0, 1], any size (the reference feeds short side 256,
            transparent pixels composited over white).
        returns: float32 (B, 2, H, W) logits; ``softmax(dim=1)[:, 1]`` is the character
            probability.
    """

    def __init__(self):
        super().__init__()
        self.normalize = ImageNetNormalize()
        backbone = resnet101(weights=None, replace_stride_with_dilation=[False, True, True])
        classifier = nn.Sequential(ASPP(2048, [12, 24, 36]), *_conv_bn_lrelu(256, 64), *_conv_bn_lrelu(64, 16))
        self.deeplab = DeepLabV3(IntermediateLayerGetter(backbone, {"layer4": "out"}), classifier, None)
        self.final_head = nn.Sequential(
            *_conv_bn_lrelu(16 + 3, 16),
            *_conv_bn_lrelu(16, 8),
            nn.Conv2d(8, 2, kernel_size=1, stride=1),
        )

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        normed = self.normalize(rgb)
        out = self.deeplab(normed)["out"]  # upsampled bilinear to the input size inside DeepLabV3
        return self.final_head(torch.cat([out, normed], dim=1))
