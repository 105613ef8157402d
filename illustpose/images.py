"""Reading images into the two modes the pipeline accepts: 8-bit ``RGB`` or ``RGBA`` PIL images.

The reference opens files with ``PIL.Image.open`` and works on whatever mode comes out.  We
normalise first so every model sees 8-bit colour:

* ``RGB`` and ``RGBA`` pass through unchanged (the golden samples are of these modes);
* ``L``/``1`` -> ``RGB`` and ``LA`` -> ``RGBA`` (grey replicated: identical results to the
  reference, whose resizes act per channel);
* ``P`` -> ``RGBA`` when the palette has transparency, else ``RGB`` (deliberate difference: the
  reference would resize palette indices with nearest-neighbour, or feed indices to the tagger);
* 16-bit and 32-bit grey -> 8 bits then ``RGB``: integer modes (``I;16``, ``I``, as Pillow opens
  16-bit PNGs) by ``round(v / 257)``, float (``F``) as 0..1 by ``round(255 * v)``, clipped;
* ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` -> ``RGB``;
* EXIF orientation is applied (deliberate difference: results then match what users see, and
  ComfyUI's LoadImage does the same).

Size: an image of more than :data:`MAX_PIXELS` pixels (178,956,970 by default: Pillow's
decompression-bomb limit, beyond which the reference cannot open a file either) is refused with
an :class:`~illustpose.errors.ImageError` by :func:`load_image` (before decoding), by
:func:`from_array` (before any conversion) and by the models' input transforms
(:func:`check_size`), so a bomb or a huge array never makes the library allocate per-pixel
memory.  The environment variable ``ILLUSTPOSE_MAX_PIXELS`` sets another limit; when it exceeds
Pillow's, Pillow's own limit (``PIL.Image.MAX_IMAGE_PIXELS``) is raised to match in this process.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .fileio import atomic_path

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "check_size", "load_image", "normalize_mode", "iter_image_files",
           "from_array", "save_png"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")

_PILLOW_LIMIT = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)


def _limit_from_environment() -> int:
    """``ILLUSTPOSE_MAX_PIXELS`` as a positive int, else Pillow's bomb limit (an unusable value is ignored)."""
    value = os.environ.get("ILLUSTPOSE_MAX_PIXELS", "").replace("_", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else _PILLOW_LIMIT


#: Pixel count above which an image is refused (default: Pillow's own bomb limit, 2x its warning
#: threshold, ~179 MP; ``ILLUSTPOSE_MAX_PIXELS`` overrides it); the error says what to do.
MAX_PIXELS = _limit_from_environment()
if Image.MAX_IMAGE_PIXELS is not None and MAX_PIXELS > 2 * Image.MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS // 2 + 1  # the user asked for more: Pillow must not refuse first


def check_size(width: int, height: int, what: str = "image") -> None:
    """Refuse an image of more than :data:`MAX_PIXELS` pixels.

    Args:
        width, height: the image's size in pixels.
        what: how the message names the image (a path, "image 3", ...).

    Raises:
        ImageError: too many pixels; the message gives the size, the limit and both remedies.
    """
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{what}: {width}x{height} is too large ({width * height} pixels, limit {MAX_PIXELS}); downscale it "
            "first (the models work at 256-1024 px anyway), or raise the limit with the environment variable "
            "ILLUSTPOSE_MAX_PIXELS."
        )


def normalize_mode(img: Image.Image) -> Image.Image:
    """Return ``img`` as 8-bit ``RGB`` or ``RGBA`` (see the module docstring for each mode)."""
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img
    if mode == "LA":
        return img.convert("RGBA")
    if mode == "P" or mode == "PA":
        has_alpha = mode == "PA" or "transparency" in img.info
        return img.convert("RGBA" if has_alpha else "RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img).astype(np.float64)
        # a fixed rule per mode (never guessed from the pixels): integers are 16-bit, floats 0..1
        a = a * 255.0 if mode == "F" else a / 257.0
        grey = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an 8-bit ``RGB``/``RGBA`` PIL image (pixels fully loaded).

    Raises:
        ImageError: the file is missing, not an image, truncated, or larger than
            :data:`MAX_PIXELS` (checked from the header, before decoding; the message says which,
            and what to do).
    """
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: no such image file")
    try:
        with warnings.catch_warnings():  # Pillow warns above half its limit; ours is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            check_size(im.width, im.height, str(p))
            im = ImageOps.exif_transpose(im)
            im.load()
            return normalize_mode(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{p}: too large ({e}); downscale it first, or raise the limit with the environment "
                         "variable ILLUSTPOSE_MAX_PIXELS.") from None
    except UnidentifiedImageError as e:
        raise ImageError(f"{p}: not a readable image ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{p}: damaged or truncated image ({e})") from None


def from_array(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """Build an ``RGB``/``RGBA`` image from arrays (the ComfyUI and numpy entry point).

    Args:
        rgb: (H, W, 3) or (H, W) uint8 0..255, or float in [0, 1]; floats become bytes by
            ``trunc(255 * clip(v, 0, 1))``, the rule ComfyUI's SaveImage uses, so a node fed a
            VAE output sees the same pixels as the CLI reading the saved PNG.
        alpha: optional (H, W) opacity, same conventions (1 / 255 = opaque).

    Raises:
        ImageError: wrong shapes, empty images, or more than :data:`MAX_PIXELS` pixels (checked
            before any conversion).
    """
    def to_u8(a: np.ndarray) -> np.ndarray:
        if a.dtype == np.uint8:
            return a
        out = np.empty(a.shape, np.uint8)
        rows = max(1, (1 << 22) // max(1, a[0].size))  # ~4 M values (32 MB of float64) at a time
        for i in range(0, len(a), rows):  # assignment truncates, as astype(np.uint8) does
            out[i:i + rows] = 255.0 * np.clip(a[i:i + rows].astype(np.float64), 0.0, 1.0)
        return out

    rgb = np.asarray(rgb)
    if not (rgb.ndim == 2 or rgb.ndim == 3 and rgb.shape[2] in (3, 4)) or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f"expected an (H, W, 3) image array with H, W >= 1, got shape {rgb.shape}")
    check_size(rgb.shape[1], rgb.shape[0])
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.shape != rgb.shape[:2]:
            raise ImageError(f"alpha shape {alpha.shape} does not match the image's {rgb.shape[:2]}")
    rgb = to_u8(rgb)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.shape[2] == 4 and alpha is None:
        return Image.fromarray(np.ascontiguousarray(rgb), "RGBA")
    rgb = np.ascontiguousarray(rgb[..., :3])
    if alpha is None:
        return Image.fromarray(rgb, "RGB")
    return Image.fromarray(np.dstack([rgb, to_u8(alpha)]), "RGBA")


def iter_image_files(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> Iterator[Path]:
    """Yield image files from files and folders, folders walked in sorted order.

    Files given explicitly are yielded whatever their extension (a non-image then fails
    later with a clear :class:`ImageError`); inside folders only :data:`IMAGE_EXTENSIONS`
    count, and our own outputs (``*.mask.png``, ``*.cutout.png``, ``*.pose.png``) are skipped.

    Raises:
        ImageError: an input path does not exist.
    """
    own = (".mask.png", ".cutout.png", ".pose.png")
    for item in inputs:
        p = Path(item)
        if p.is_file():
            yield p
        elif p.is_dir():
            walker = p.rglob("*") if recursive else p.glob("*")
            for f in sorted(walker):
                name = f.name.lower()
                if f.is_file() and name.endswith(IMAGE_EXTENSIONS) and not name.endswith(own):
                    yield f
        else:
            raise ImageError(f"{p}: no such file or folder")


def save_png(path: str | os.PathLike, image: Image.Image, *, compress_level: int = 6) -> Path:
    """Write a PIL image as PNG, atomically (:func:`illustpose.fileio.atomic_path`).

    Args:
        path: the file to create or replace (its folder is created).
        image: any mode PNG stores (``L``, ``RGB``, ``RGBA``, ...).
        compress_level: zlib level 0-9 (Pillow's default 6; lower is faster, larger).

    Returns:
        ``path`` as a Path.
    """
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=compress_level)
    return Path(path)
