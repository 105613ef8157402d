"""What every node shares: ComfyUI tensors <-> library images, ComfyUI's memory manager and
Cancel, progress, errors, and the input definitions (with their tooltips) that several nodes use.

ComfyUI's IMAGE is a float tensor ``[B, H, W, C]`` in 0..1 (C = 3, sometimes 4 with alpha, or 1)
and MASK a float tensor ``[B, H, W]`` (or ``[H, W]``) in 0..1.  The library takes 8-bit PIL
images, so conversion happens here, at the edges of a node, and results go back as tensors on
``comfy.model_management.intermediate_device()``.
"""

from __future__ import annotations

import functools
import logging
import weakref
from contextlib import ExitStack, contextmanager

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from illustpose.errors import IllustposeError
from illustpose.images import from_array

from ._api import SEGMENTER, io, ui

__all__ = [
    "IllustposeNodeError", "reports_errors", "split_alpha", "fit_mask", "to_pil_images", "image_tensor",
    "to_output", "on_device", "model_patcher", "map_with_progress", "each_image", "MAX_RESOLUTION",
    "transparency_input", "xinsr_input", "resolution_input", "box_segmenter_input", "preview_input", "preview_ui",
]

log = logging.getLogger(__name__)

#: Largest OpenPose / preview side a node accepts, in pixels.
MAX_RESOLUTION = 16384

#: Memory asked of ComfyUI on top of a model's weights before it moves in: an allowance for one
#: image's activations (the models work at a 256 px short side).
WORKSPACE_BYTES = 1 << 30


class IllustposeNodeError(Exception):
    """A node failed for a reason the user can fix; the message says what and how.

    ComfyUI titles a node's error with the exception type's module and qualified name, leaving
    the module out only for builtins (``execution.py`` ``full_type_name``), so this class names
    itself ``illustpose`` in module ``builtins``: the error reads "illustpose: <what is wrong>"
    in ComfyUI's error dialog and console instead of
    "...custom_nodes/illustpose.nodes._common.IllustposeNodeError".
    """


IllustposeNodeError.__module__, IllustposeNodeError.__qualname__ = "builtins", "illustpose"


def reports_errors(execute):
    """Decorate a node's ``execute`` so library errors reach the user as their message alone
    (no library traceback); ComfyUI shows it on the node that failed."""

    @functools.wraps(execute)
    def wrapper(cls, *args, **kwargs):
        try:
            return execute(cls, *args, **kwargs)
        except IllustposeError as e:
            raise IllustposeNodeError(str(e)) from None

    return wrapper


def fit_mask(mask: torch.Tensor, batch: int, hw: tuple[int, int]) -> torch.Tensor:
    """A MASK as float ``[batch, H, W]`` on the CPU: ``[H, W]`` gains a batch axis, a shorter
    batch repeats its last mask (ComfyUI's rule for short lists), another size is resized
    bilinearly (LoadImage gives a 64x64 mask for images without alpha)."""
    m = (mask if mask.dim() == 3 else mask.reshape(1, *mask.shape[-2:])).detach().float().cpu()
    if tuple(m.shape[-2:]) != tuple(hw):
        m = F.interpolate(m[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
    return m[torch.arange(batch).clamp(max=m.shape[0] - 1)]


def split_alpha(image: torch.Tensor, transparency: torch.Tensor | None = None):
    """IMAGE -> (RGB float ``[B, H, W, 3]``, opacity float ``[B, H, W]`` or None), on the CPU.

    Opacity is the image's own 4th channel, times ``1 - transparency`` when a MASK in
    LoadImage's convention (1 = transparent) is given.
    """
    if image.dim() != 4 or image.shape[-1] not in (1, 3, 4):
        raise IllustposeNodeError(
            f"expected an IMAGE tensor [batch, height, width, 1|3|4 channels], got shape {tuple(image.shape)}")
    image = image.detach().float().cpu()
    rgb = image[..., :3] if image.shape[-1] >= 3 else image.expand(-1, -1, -1, 3)
    alpha = image[..., 3] if image.shape[-1] == 4 else None
    if transparency is not None:
        opacity = 1.0 - fit_mask(transparency, image.shape[0], tuple(image.shape[1:3]))
        alpha = opacity if alpha is None else alpha * opacity
    return rgb, alpha


def to_pil_images(image: torch.Tensor, transparency: torch.Tensor | None = None) -> list[Image.Image]:
    """IMAGE (+ LoadImage-style transparency MASK) -> one 8-bit RGB or RGBA PIL image per batch
    item, quantised by :func:`illustpose.images.from_array` (the bytes SaveImage would write)."""
    rgb, alpha = split_alpha(image, transparency)
    rgb, alpha = rgb.numpy(), None if alpha is None else alpha.numpy()
    return [from_array(rgb[i], None if alpha is None else alpha[i]) for i in range(len(rgb))]


def image_tensor(arrays) -> torch.Tensor:
    """Same-size uint8 ``(H, W, C)`` arrays -> IMAGE ``[B, H, W, C]`` on the intermediate device."""
    return torch.from_numpy(np.stack(arrays)).float().div(255.0).to(mm.intermediate_device())


def to_output(t: torch.Tensor) -> torch.Tensor:
    """A float32 output tensor on the intermediate device."""
    return t.float().contiguous().to(mm.intermediate_device())


_patchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # detector -> its ModelPatcher
_running: list[list] = []  # the detectors of the on_device blocks now running, innermost last


def model_patcher(detector) -> comfy.model_patcher.ModelPatcher:
    """The ``ModelPatcher`` through which ComfyUI's memory manager handles ``detector``'s network
    (made once per detector, and gone with it): loaded on ``get_torch_device()``, offloaded to
    ``unet_offload_device()``, unloaded when another model needs the memory and by ``POST /free``."""
    patcher = _patchers.get(detector)
    if patcher is None:
        patcher = _patchers[detector] = comfy.model_patcher.ModelPatcher(
            detector.net, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device())
    return patcher


def _load(detectors) -> None:
    """Have ComfyUI load the detectors on its torch device (making room by unloading other models
    as core loaders do), whole: the networks are plain modules, which cannot run partly offloaded.
    Under ``--cpu`` the device is the CPU and nothing moves."""
    if detectors:
        mm.load_models_gpu([model_patcher(d) for d in detectors], memory_required=WORKSPACE_BYTES,
                           force_full_load=True)


def _check_cancel(module, args) -> None:
    mm.throw_exception_if_processing_interrupted()


@contextmanager
def on_device(*detectors):
    """Run detectors (None entries skipped) where ComfyUI's memory manager puts them, and let
    ComfyUI's Cancel stop them between their stages.

    The detectors are loaded through ``comfy.model_management.load_models_gpu`` (see
    :func:`model_patcher`); they stay loaded after the block, as ComfyUI's own models do, until
    ComfyUI needs the memory or ``POST /free`` unloads them.  Inside the block every module of
    their networks checks ComfyUI's interrupt flag before it runs, so Cancel stops an image
    between two layers instead of after the whole image (ComfyUI's ``InterruptProcessingException``
    propagates).
    """
    detectors = [d for d in detectors if d is not None]
    _load(detectors)
    with ExitStack() as stack:
        for d in detectors:
            for m in d.net.modules():
                stack.callback(m.register_forward_pre_hook(_check_cancel).remove)
        _running.append(detectors)
        stack.callback(_running.pop)
        yield


def map_with_progress(fn, items) -> list:
    """``[fn(x) for x in items]`` with a ComfyUI progress bar; each step is also where ComfyUI
    raises its cancel exception (its progress hook checks for an interrupt first)."""
    items = list(items)
    bar = comfy.utils.ProgressBar(len(items))
    out = []
    for item in items:
        out.append(fn(item))
        bar.update(1)
    return out


def each_image(fn, image: torch.Tensor, transparency: torch.Tensor | None = None, *,
               node: str) -> tuple[list, list[str]]:
    """``fn(pil_image, index)`` for every image of an IMAGE batch, one at a time, with progress.

    Each image is converted just before its turn (:func:`illustpose.images.from_array`), so a
    batch never holds all its PIL copies at once.  An image that cannot be converted or
    processed (any :class:`~illustpose.errors.IllustposeError`, e.g. more pixels than
    ``illustpose.images.MAX_PIXELS``) gets None, and a message naming its batch index that is
    also logged as a warning; every other image is processed normally.  An image that runs out
    of GPU memory is tried once more after ComfyUI unloads every other model (one image is
    already the smallest batch); out of memory again, the node stops with an
    :class:`IllustposeNodeError` saying what to change.

    Returns:
        (one result or None per image, the messages of the images that failed).
    """
    rgb, alpha = split_alpha(image, transparency)
    rgb, alpha = rgb.numpy(), None if alpha is None else alpha.numpy()
    messages: list[str] = []

    oom = () if mm.OOM_EXCEPTION is Exception else mm.OOM_EXCEPTION  # Exception: ComfyUI without CUDA errors

    def one(i: int):
        for attempt in (1, 2):
            try:
                return fn(from_array(rgb[i], None if alpha is None else alpha[i]), i)
            except IllustposeError as e:
                messages.append(f"{node}: image {i} (0-based) of {len(rgb)} left empty: {e}")
                log.warning(messages[-1])
                return None
            except oom as e:  # one image is the smallest batch: make room and try it once more
                if attempt == 2:
                    raise IllustposeNodeError(
                        f"{node}: out of memory on {mm.get_torch_device()} for image {i} (0-based) even with every "
                        f"other model unloaded ({e}); use precision fp16, a smaller image, or run ComfyUI with "
                        "--cpu") from None
                log.warning("%s: out of memory on image %d; unloading the other models and trying again", node, i)
            # after the except block, which freed the failed attempt's tensors with its traceback
            mm.unload_all_models()
            mm.soft_empty_cache()
            _load(_running[-1] if _running else [])

    return map_with_progress(one, range(len(rgb))), messages


# --------------------------------------------------------------------------- shared inputs


def transparency_input() -> io.Mask.Input:
    """The optional MASK of the image's transparency, in Load Image's convention."""
    return io.Mask.Input("transparency", optional=True, tooltip=(
        "The image's transparency as Load Image outputs it (1 = transparent); transparent pixels become white "
        "before the model runs, as the reference does for RGBA files."))


def xinsr_input() -> io.Boolean.Input:
    """cn_aux's limb widening for xinsir's SDXL OpenPose ControlNet."""
    return io.Boolean.Input("xinsr_stick_scaling", default=False, tooltip=(
        "Thicker limbs on large images, for xinsir's SDXL OpenPose ControlNet (cn_aux's option)."))


def preview_input(what: str) -> io.Boolean.Input:
    """The optional switch (on by default) that shows ``what`` on the node itself; optional and
    last, so workflows saved before it keep their widget values."""
    return io.Boolean.Input("show_preview", default=True, optional=True, tooltip=(
        f"Show {what} on the node, as Preview Image would (PNG files in ComfyUI's temp folder). Off: nothing is "
        "saved or shown."))


def preview_ui(images: torch.Tensor, cls, show: bool) -> dict:
    """The node's UI entries showing IMAGE ``images`` (``[B, H, W, 3]`` floats in 0..1) on the node:
    ComfyUI's ``ui.PreviewImage`` (PNGs in the temp folder, as the Preview Image node saves them)
    as a dict, so the node can add its own entries; ``{}`` when ``show`` is off (nothing written)."""
    return ui.PreviewImage(images, cls=cls).as_dict() if show else {}


def resolution_input(default: int, zero: str) -> io.Int.Input:
    """The OpenPose image's short side; ``zero`` says what 0 keeps."""
    return io.Int.Input("resolution", default=default, min=0, max=MAX_RESOLUTION, step=64, tooltip=(
        f"Short side of the OpenPose image in pixels (resized as the DWPose node does); 0 = {zero}."))


def box_segmenter_input(fallback: str = "without it the whole image is the box") -> SEGMENTER.Input:
    """The optional segmenter that finds the character's box for a pose model."""
    return SEGMENTER.Input("segmenter", optional=True, tooltip=(
        f"Finds the character's box for the pose model, as the reference and the CLI do; {fallback}."))
