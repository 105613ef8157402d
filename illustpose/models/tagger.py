"""Danbooru tagger: ResNet-50 with a multi-label head (reference ``_train/danbooru_tagger/models/kate.py``).

State-dict keys are the authors' Lightning names: ``resnet.*`` = a torchvision ResNet-50 whose
``fc`` is ``Linear(2048, num_tags)`` (1062 in the released checkpoint).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet50

from ._common import ImageNetNormalize

__all__ = ["DanbooruTaggerNet"]


class DanbooruTaggerNet(nn.Module):
    """ResNet-50 tagger.

    Args:
        num_tags: number of output classes (the length of the rules list; 1062 released).

    Forward:
        rgb: float32 (B, 3, S, S) in [0, 1], the letterboxed image (S = ``largs.danbooru_sfw.size``).
        returns: float32 (B, num_tags) logits; ``sigmoid`` gives the tag probabilities.
    """

    def __init__(self, num_tags: int):
        super().__init__()
        self.normalize = ImageNetNormalize()
        # weights=None: never download anything; the checkpoint provides every tensor.
        self.resnet = resnet50(weights=None, num_classes=num_tags)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.resnet(self.normalize(rgb))
