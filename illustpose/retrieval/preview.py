"""Pictures of query results: an entry's image and its stored pose, letterboxed alike.

Both are drawn on a ``size`` square where :func:`~illustpose.geometry.fit_in_square` puts the
source image, so the OpenPose render of a result lies over its picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import ImageError
from ..geometry import fit_in_square
from ..images import load_image
from ..keypoints import coco17_to_openpose18
from ..render import draw_openpose
from .danbooru import post_id
from .store import StoredEntry

__all__ = ["PLACEHOLDER_GREY", "reference_image", "link_card", "result_picture", "pose_image"]

#: grey level of the square shown for a result whose image cannot be read
PLACEHOLDER_GREY = 128


def reference_image(source: str, size: int) -> tuple[np.ndarray, str | None]:
    """An entry's source image letterboxed into a ``size`` square (black bars; transparency
    over white; Lanczos), or a grey square and the reason when the file cannot be read.

    Returns:
        ``(uint8 (size, size, 3) RGB, None or the error message)``.
    """
    try:
        im = load_image(source)
    except ImageError as e:
        return np.full((size, size, 3), PLACEHOLDER_GREY, dtype=np.uint8), str(e)
    if im.mode == "RGBA":
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im)
    w, h, x, y = fit_in_square(im.width, im.height, size)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    out[y:y + h, x:x + w] = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.LANCZOS))
    return out, None


def link_card(post_id: int, size: int) -> np.ndarray:
    """A card for a result known only by its Danbooru post (nothing is downloaded): dark grey,
    with ``Danbooru`` and ``#<post id>`` written on it.

    Returns:
        uint8 (size, size, 3) RGB.
    """
    card = Image.new("RGB", (size, size), (40, 40, 48))
    draw = ImageDraw.Draw(card)
    try:
        font = ImageFont.load_default(size=max(8, size // 10))
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    for text, y in (("Danbooru", 0.38), (f"#{int(post_id)}", 0.55)):
        draw.text((size / 2, size * y), text, fill=(235, 235, 235), font=font, anchor="mm")
    return np.asarray(card)


def result_picture(entry: StoredEntry, size: int) -> tuple[np.ndarray, str | None]:
    """What a query result shows: :func:`link_card` for a Danbooru support-set entry (its tags
    hold ``danbooru_id``: :func:`~.danbooru.post_id`), else :func:`reference_image` of its source."""
    pid = post_id(entry.tags)
    if pid is not None:
        return link_card(pid, size), None
    return reference_image(entry.source, size)


def pose_image(entry: StoredEntry, size: int) -> np.ndarray:
    """The entry's stored body (17 COCO joints as OpenPose-18, present joints only) drawn on a
    ``size`` square where :func:`reference_image` puts its image; without a stored image size
    the frame is the bbox with a 10% margin.  A link-only entry (no stored pose) is black.

    Returns:
        uint8 (size, size, 3) RGB, black background.
    """
    p = entry.pose
    if p is None:
        return np.zeros((size, size, 3), dtype=np.uint8)
    if entry.image_size_hw:
        (ih, iw), x0, y0 = entry.image_size_hw, 0.0, 0.0
    else:
        bx, by, bw, bh = p.bbox_xywh
        m = 0.1 * max(bw, bh)
        x0, y0, iw, ih = bx - m, by - m, bw + 2 * m, bh + 2 * m
    w, h, x, y = fit_in_square(iw, ih, size)
    xy = (p.keypoints[:17] - [x0, y0]) * [w / iw, h / ih] + [x, y]
    return draw_openpose([coco17_to_openpose18(xy, p.present[:17])], (size, size))
