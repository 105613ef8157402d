"""The ComfyUI node API the pack uses (V3, ``comfy_api.latest``, ComfyUI 0.3.48 and later) and the
socket types the pack defines.

The pack declares ``requires-comfyui >= 0.3.48`` (pyproject.toml), the first release with the
V3 API, so it carries no V1 fallback: on an older ComfyUI the import fails with a message that
says to update.
"""

from __future__ import annotations

try:
    from comfy_api.latest import ComfyExtension, io
except ImportError as e:  # ComfyUI before 0.3.48
    raise ImportError(f"illustpose needs ComfyUI 0.3.48 or newer (its V3 node API, comfy_api.latest): {e}; "
                      "update ComfyUI") from None

__all__ = ["io", "ComfyExtension", "SEGMENTER", "TAGGER", "POSE_MODEL", "POSE_KEYPOINT", "BBOX"]

#: Model handles made by the loader nodes (a loaded illustpose detector).
SEGMENTER = io.Custom("ILLUSTPOSE_SEGMENTER")
TAGGER = io.Custom("ILLUSTPOSE_TAGGER")
POSE_MODEL = io.Custom("ILLUSTPOSE_POSE_MODEL")

#: comfyui_controlnet_aux's pose type: a list with one ``{"people", "canvas_height",
#: "canvas_width"}`` dict per image, OpenPose-18 bodies in pixels.
POSE_KEYPOINT = io.Custom("POSE_KEYPOINT")

#: A list with one COCO box ``[x, y, w, h]`` (pixels) per image.
BBOX = io.Custom("BBOX")
