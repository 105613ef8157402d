"""Network inputs exactly as the reference builds them (PIL resampling, white backgrounds).

Every function takes an 8-bit ``RGB``/``RGBA`` PIL image (see :mod:`illustpose.images`) and
returns a float32 (3, H, W) tensor in [0, 1] equal to the reference's ``TF.to_tensor`` input.
PIL's resamplers are used wherever the reference resized a PIL image (Pillow filters are
antialiased on downscale in every version), so the results match the golden inputs byte for
byte.  The reference's float round trips (``I(...).np()`` then ``.pil()``, ``to_tensor`` then
``to_pil_image``) are exact for 8-bit values (``trunc(255 * (k / 255)) == k`` in float32 and
float64), so they are done here directly in uint8.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .geometry import Cropbox, resize_max_size, resize_min_size, square_cropbox

__all__ = ["to_tensor", "segmenter_input", "tagger_input", "pose_input"]


def to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 PIL (H, W, C) -> float32 (C, H, W) in [0, 1] (``torchvision.transforms.functional.to_tensor``)."""
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    return torch.from_numpy(a.copy()).permute(2, 0, 1).contiguous().float().div(255)


def _over_white(img: Image.Image) -> Image.Image:
    """Composite an RGBA image over opaque white with Pillow (the reference's ``alpha_bg('w')``)."""
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def segmenter_input(img: Image.Image, size: int) -> torch.Tensor:
    """The segmenter's input: short side to ``size`` (PIL bilinear), transparency over white.

    Reference ``character_segmenter.infer``:
    ``I(img).resize_min(size).convert('RGBA').alpha_bg(1).convert('RGB')``.

    Returns:
        float32 (3, h', w') in [0, 1]; ``min(h', w') == size``, the long side truncated.
    """
    h, w = resize_min_size((img.height, img.width), size)
    return to_tensor(_over_white(img.resize((w, h), Image.BILINEAR)))


def tagger_input(img: Image.Image, size: int) -> torch.Tensor:
    """The tagger's letterboxed square input.

    Reference ``danbooru_tagger.infer``: ``I(img).resize_square(size).alpha_bg('w')``: the long
    side to ``size`` (PIL bilinear), centred on a ``size`` square by zero padding of *every*
    channel, then composited over white.  So an opaque (RGB) image gets **black** bars, an
    RGBA image white bars and a white background.

    Returns:
        float32 (3, size, size) in [0, 1].
    """
    h, w = resize_max_size((img.height, img.width), size)
    res = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.uint8)
    (top, left), _, _ = square_cropbox((h, w), size)
    top, left = -top, -left
    canvas = np.zeros((size, size, res.shape[2]), dtype=np.uint8)
    canvas[top:top + h, left:left + w] = res
    return to_tensor(_over_white(Image.fromarray(canvas, img.mode)))


def pose_input(img: Image.Image, cb: Cropbox) -> torch.Tensor:
    """The pose estimator's crop: ``cb`` applied to the image, outside areas black.

    Reference ``pose_estimator.infer_pose``: ``cropbox(img, *cb)`` rounds ``from_corner`` and
    ``from_size`` with Python ``round`` (half to even), crops the RGBA image (outside = transparent
    black), resizes with PIL bilinear (premultiplied, so fully transparent pixels become black),
    then drops alpha keeping RGB as stored.

    Returns:
        float32 (3, th, tw) in [0, 1], ``(th, tw) = round(cb.to_size)``.
    """
    (r, c), (h, w), (th, tw) = ((round(a), round(b)) for a, b in cb)
    crop = img.convert("RGBA").crop((c, r, c + w, r + h)).resize((tw, th), Image.BILINEAR)
    return to_tensor(crop)[:3]
