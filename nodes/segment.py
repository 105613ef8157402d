"""Character Segment: the character's mask, cutout and bounding box."""

from __future__ import annotations

import json

import numpy as np
import torch

from illustpose.geometry import bbox_from_mask, bbox_rc_to_xywh, mask_above

from ._api import BBOX, SEGMENTER, io
from ._common import each_image, on_device, reports_errors, split_alpha, to_output, transparency_input

BACKGROUNDS = ("white", "black", "transparent")


def cutout(rgb: torch.Tensor, opacity: torch.Tensor, background: str) -> torch.Tensor:
    """RGB ``[B, H, W, 3]`` and opacity ``[B, H, W]`` -> the cutout over ``background``
    (``transparent``: a 4-channel IMAGE whose 4th channel is the opacity, as JoinImageWithAlpha)."""
    a = opacity[..., None]
    if background == "transparent":
        return torch.cat([rgb, a], dim=-1)
    return rgb * a + (1.0 - a) * (1.0 if background == "white" else 0.0)


class CharacterSegment(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="CharacterSegment|illustpose",
            display_name="Character Segment (illustpose)",
            category="illustpose",
            description="Segments the character of each illustration (reference character_segmenter.py): "
                        "probability mask, thresholded mask, cutout and bounding box.",
            inputs=[
                io.Image.Input("image", tooltip="Illustrations to segment, any size; one character each."),
                SEGMENTER.Input("segmenter", tooltip="From Load Character Segmenter."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=0.99, step=0.01, tooltip=(
                    "Probability above which a pixel belongs to the character, for mask_binary and the bbox "
                    "(0.5 as the reference).")),
                io.Combo.Input("cutout_background", options=list(BACKGROUNDS), default="white", tooltip=(
                    "What replaces the background in the cutout; 'transparent' gives a 4-channel image.")),
                transparency_input(),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="Character probability per pixel (0..1, 8-bit steps)."),
                io.Mask.Output(display_name="mask_binary", tooltip="1 where the probability is above threshold."),
                io.Image.Output(display_name="cutout", tooltip="The character with its background replaced."),
                BBOX.Output(display_name="bbox", tooltip=(
                    "One COCO box [x, y, w, h] in pixels per image (the reference's rule: the pixels above "
                    "threshold, grown 1 px up and left; the whole image if none); feeds Illustrated Pose.")),
                io.String.Output(display_name="bbox_json", tooltip="The boxes as JSON: [[x, y, w, h], ...]."),
            ],
        )

    @classmethod
    @reports_errors
    def execute(cls, image, segmenter, threshold, cutout_background, transparency=None):
        with on_device(segmenter):
            results, messages = each_image(lambda im, i: segmenter.segment([im])[0], image, transparency,
                                           node="Character Segment")
        empty = np.zeros(tuple(image.shape[1:3]), np.uint8)  # an image that failed: no character
        masks = np.stack([empty if r is None else r.mask for r in results])  # uint8 [B, H, W]
        bboxes = [bbox_rc_to_xywh(bbox_from_mask(m, threshold)) for m in masks]
        prob = torch.from_numpy(masks).float() / 255.0
        binary = torch.from_numpy(mask_above(masks, threshold))  # the bbox rule's own comparison
        rgb, alpha = split_alpha(image, transparency)
        opacity = prob if alpha is None else prob * alpha
        return io.NodeOutput(to_output(prob), to_output(binary), to_output(cutout(rgb, opacity, cutout_background)),
                             bboxes, json.dumps(bboxes), ui={"text": messages} if messages else None)

NODES = [CharacterSegment]
