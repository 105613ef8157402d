"""Which node API this ComfyUI offers, and the socket types the pack defines.

``comfy_api.latest`` (ComfyUI >= 0.3.48) gives the real V3 ``io``; older ComfyUI gets
:mod:`._v1`, which derives the V1 contract from the same definitions.
"""

from __future__ import annotations

try:
    from comfy_api.latest import ComfyExtension, io

    V3 = True
except ImportError:
    from . import _v1 as io

    ComfyExtension = None
    V3 = False

__all__ = ["V3", "io", "ComfyExtension", "SEGMENTER", "TAGGER", "POSE_MODEL", "POSE_KEYPOINT", "BBOX"]

#: Model handles made by the loader nodes (a loaded illustpose detector).
SEGMENTER = io.Custom("ILLUSTPOSE_SEGMENTER")
TAGGER = io.Custom("ILLUSTPOSE_TAGGER")
POSE_MODEL = io.Custom("ILLUSTPOSE_POSE_MODEL")

#: comfyui_controlnet_aux's pose type: a list with one ``{"people", "canvas_height",
#: "canvas_width"}`` dict per image, OpenPose-18 bodies in pixels.
POSE_KEYPOINT = io.Custom("POSE_KEYPOINT")

#: A list with one COCO box ``[x, y, w, h]`` (pixels) per image.
BBOX = io.Custom("BBOX")
