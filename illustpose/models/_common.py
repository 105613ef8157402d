"""Small pieces shared by the model files: ImageNet normalisation and the 2021 tensor resize."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ImageNetNormalize", "resize_short_side"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNetNormalize(nn.Module):
    """``(x - mean) / std`` per RGB channel, like ``torchvision.transforms.Normalize``.

    Holds no tensors at all (so no state-dict keys, like the reference's parameter-free
    ``TT.Normalize``).  Input (B, 3, H, W) float in [0, 1].
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.as_tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """``torchvision.transforms.Resize(size)`` on a (B, C, H, W) tensor as torchvision 0.9 did it.

    The short side becomes ``size`` and the long side ``int(size * long / short)``; bilinear,
    ``align_corners=False`` and **no antialias** (torchvision >= 0.17 antialiases tensors by
    default; the reference ran on 0.9.1, which did not).  Returns ``x`` itself when the size
    is already right, as torchvision does.
    """
    h, w = x.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = size, int(size * long / short)
    out_hw = (new_short, new_long) if h <= w else (new_long, new_short)
    if (h, w) == out_hw:
        return x
    return F.interpolate(x, size=out_hw, mode="bilinear", align_corners=False, antialias=False)
