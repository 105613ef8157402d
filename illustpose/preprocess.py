"""Network inputs exactly as the reference builds them (PIL resampling, white backgrounds).

Every function takes an 8-bit ``RGB``/``RGBA`` PIL image (see :mod:`illustpose.images`) and
returns a float32 (3, H, W) tensor in [0, 1] equal to the reference's ``TF.to_tensor`` input.
PIL's resamplers are used wherever the reference resized a PIL image (Pillow filters are
antialiased on downscale in every version), so the results match the golden inputs byte for
byte.  The reference's float round trips (``I(...).np()`` then ``.pil()``, ``to_tensor`` then
``to_pil_image``) are exact for 8-bit values (``trunc(255 * (k / 255)) == k`` in float32 and
float64), so they are done here directly in uint8.

Bounded cost (a deliberate difference that never touches an image the reference handles
normally): every transform first refuses images of more than
:data:`illustpose.images.MAX_PIXELS` pixels (:func:`~illustpose.images.check_size`), then

* segmenter: the reference's short-side resize is kept whenever its long side is at most
  :data:`SEGMENTER_MAX_ASPECT` times ``size`` (1024 px for the released 256).  A more elongated
  image (a 2x900 strip would otherwise run the network on 256x115,200 pixels) is letterboxed
  instead: its long side scaled to that cap, its short side to ``max(1, round(...))``, centred
  on a white ``size`` x cap canvas (white: what transparency becomes for this model), and the
  segmenter maps its output back from the image's place on the canvas
  (:func:`~illustpose.geometry.segmenter_frame`);
* tagger: the letterboxed image's short side is at least 1 px (the reference's resize makes it
  0, and fails, for images more elongated than ``size`` : 1);
* pose: the crop is materialised at source resolution, as the reference does, whenever it holds
  at most ``2 * MAX_PIXELS`` pixels (the crop around any box inside any image of up to
  ~17,000 px on its long side); a larger crop (a box of an extreme strip such as 1x100,000)
  is resampled from the visible part of the image straight to the crop size, its place
  rounded to crop pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from . import images
from .geometry import Cropbox, resize_max_size, segmenter_frame, square_cropbox

__all__ = ["SEGMENTER_MAX_ASPECT", "to_tensor", "segmenter_input", "tagger_input", "pose_input"]

#: The segmenter's working long side is at most this many times its short side (``size``).
SEGMENTER_MAX_ASPECT = 4


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
    ``I(img).resize_min(size).convert('RGBA').alpha_bg(1).convert('RGB')``.  An image more
    elongated than :data:`SEGMENTER_MAX_ASPECT` : 1 is letterboxed on white instead (module
    docstring; where it lies: :func:`~illustpose.geometry.segmenter_frame`).

    Returns:
        float32 (3, h', w') in [0, 1]; ``min(h', w') == size``, the long side truncated, at most
        ``SEGMENTER_MAX_ASPECT * size``.

    Raises:
        ImageError: more than :data:`~illustpose.images.MAX_PIXELS` pixels.
    """
    images.check_size(img.width, img.height)
    (ch, cw), (top, left, h, w) = segmenter_frame((img.height, img.width), size, SEGMENTER_MAX_ASPECT * size)
    res = _over_white(img.resize((w, h), Image.BILINEAR))
    if (h, w) != (ch, cw):
        canvas = Image.new("RGB", (cw, ch), (255, 255, 255))
        canvas.paste(res, (left, top))
        res = canvas
    return to_tensor(res)


def tagger_input(img: Image.Image, size: int) -> torch.Tensor:
    """The tagger's letterboxed square input.

    Reference ``danbooru_tagger.infer``: ``I(img).resize_square(size).alpha_bg('w')``: the long
    side to ``size`` (PIL bilinear), centred on a ``size`` square by zero padding of *every*
    channel, then composited over white.  So an opaque (RGB) image gets **black** bars, an
    RGBA image white bars and a white background.

    The short side is at least 1 px (the reference's truncation makes it 0 for images more
    elongated than ``size`` : 1, and fails).

    Returns:
        float32 (3, size, size) in [0, 1].

    Raises:
        ImageError: more than :data:`~illustpose.images.MAX_PIXELS` pixels.
    """
    images.check_size(img.width, img.height)
    h, w = (max(1, v) for v in resize_max_size((img.height, img.width), size))
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

    A crop of more than ``2 * MAX_PIXELS`` pixels is not materialised (module docstring):
    :func:`_resampled_crop` builds it at the target size.

    Returns:
        float32 (3, th, tw) in [0, 1], ``(th, tw) = round(cb.to_size)``.

    Raises:
        ImageError: more than :data:`~illustpose.images.MAX_PIXELS` pixels in the image.
    """
    images.check_size(img.width, img.height)
    (r, c), (h, w), (th, tw) = ((round(a), round(b)) for a, b in cb)
    if h * w > 2 * images.MAX_PIXELS:
        return to_tensor(_resampled_crop(img, (r, c, h, w), (th, tw)))[:3]
    crop = img.convert("RGBA").crop((c, r, c + w, r + h)).resize((tw, th), Image.BILINEAR)
    return to_tensor(crop)[:3]


def _resampled_crop(img: Image.Image, rchw: tuple[int, int, int, int], to_hw: tuple[int, int]) -> Image.Image:
    """The crop ``rchw`` (row, col, h, w) resized to ``to_hw``, built without a source-size canvas.

    The part of the image inside the crop is resampled (PIL bilinear, from its exact source box)
    straight onto its place in a transparent black ``to_hw`` RGBA canvas, that place rounded to
    whole target pixels (at least one each way).  The reference's result up to that rounding at
    the image's edges.
    """
    (r, c, h, w), (th, tw) = rchw, to_hw
    x0, y0, x1, y1 = max(c, 0), max(r, 0), min(c + w, img.width), min(r + h, img.height)
    out = Image.new("RGBA", (tw, th), (0, 0, 0, 0))
    if x0 < x1 and y0 < y1:
        tx0, ty0 = round((x0 - c) * tw / w), round((y0 - r) * th / h)
        tx1, ty1 = max(tx0 + 1, round((x1 - c) * tw / w)), max(ty0 + 1, round((y1 - r) * th / h))
        part = img.resize((tx1 - tx0, ty1 - ty0), Image.BILINEAR, box=(x0, y0, x1, y1))
        out.paste(part.convert("RGBA"), (tx0, ty0))
    return out
