"""The ComfyUI node API the pack uses (V3) and the socket types the pack defines.

ComfyUI's maintainers advise importing a versioned API rather than ``comfy_api.latest``, which
changes without notice: ``comfy_api.v0_0_2`` is the newest one the pack supports (ComfyUI 0.3.48
to at least 0.3.64, where it re-exports latest's ``io``, ``ui`` and ``ComfyExtension``).  Should a
ComfyUI drop it, ``comfy_api.latest`` is the fallback; a ComfyUI with neither (before 0.3.48,
the pack's ``requires-comfyui``) gets an ImportError that says to update.  :data:`API_VERSION`
names the module in use.
"""

from __future__ import annotations

import importlib

#: The API modules tried, newest supported version first.
API_MODULES = ("comfy_api.v0_0_2", "comfy_api.latest")


def _import_api():
    errors = []
    for name in API_MODULES:
        try:
            module = importlib.import_module(name)
            return name, module.io, module.ui, module.ComfyExtension
        except (ImportError, AttributeError) as e:
            errors.append(f"{name}: {e}")
    raise ImportError(f"illustpose needs ComfyUI 0.3.48 or newer (its V3 node API, {' or '.join(API_MODULES)}); "
                      f"update ComfyUI ({'; '.join(errors)})")


API_VERSION, io, ui, ComfyExtension = _import_api()

__all__ = ["io", "ui", "ComfyExtension", "API_VERSION", "SEGMENTER", "TAGGER", "POSE_MODEL", "POSE_KEYPOINT",
           "BBOX"]

#: Model handles made by the loader nodes (a loaded illustpose detector).
SEGMENTER = io.Custom("ILLUSTPOSE_SEGMENTER")
TAGGER = io.Custom("ILLUSTPOSE_TAGGER")
POSE_MODEL = io.Custom("ILLUSTPOSE_POSE_MODEL")

#: comfyui_controlnet_aux's pose type: a list with one ``{"people", "canvas_height",
#: "canvas_width"}`` dict per image, OpenPose-18 bodies in pixels.
POSE_KEYPOINT = io.Custom("POSE_KEYPOINT")

#: A list with one COCO box ``[x, y, w, h]`` (pixels) per image.
BBOX = io.Custom("BBOX")
