"""Render OpenPose: any POSE_KEYPOINT (ours, DWPose's, an editor's) as an OpenPose control image."""

from __future__ import annotations

import numpy as np

from illustpose.render import render_pose_keypoint

from ._api import POSE_KEYPOINT, io
from ._common import (IllustposeNodeError, image_tensor, preview_input, preview_ui, reports_errors, resolution_input,
                      xinsr_input)


def pad_to_largest(images: list[np.ndarray]) -> list[np.ndarray]:
    """Pad ``(H, W, 3)`` images with black at the right and bottom to the largest height and
    width, so frames of different canvas sizes fit in one batch (black is "no pose")."""
    h = max(im.shape[0] for im in images)
    w = max(im.shape[1] for im in images)
    return [np.pad(im, ((0, h - im.shape[0]), (0, w - im.shape[1]), (0, 0))) for im in images]


class RenderOpenPose(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="RenderOpenPose|illustpose",
            display_name="Render OpenPose (illustpose)",
            category="illustpose/pose",
            description="Draws POSE_KEYPOINT bodies as OpenPose control images, pixel for pixel as "
                        "comfyui_controlnet_aux draws them; every frame, bodies only; shown on the node.",
            inputs=[
                POSE_KEYPOINT.Input("pose_keypoint", tooltip=(
                    "Poses from Illustrated Pose, Load Pose Keypoints, DWPose or an editor; pixel or normalised "
                    "coordinates; a joint is drawn when its confidence is 1.")),
                resolution_input(0, "each frame's canvas size"),
                xinsr_input(),
                preview_input("the OpenPose images"),
            ],
            outputs=[io.Image.Output(display_name="openpose_image", tooltip=(
                "One control image per frame; frames of different sizes are padded with black to the largest."))],
        )

    @classmethod
    @reports_errors
    def execute(cls, pose_keypoint, resolution, xinsr_stick_scaling, show_preview=True):
        images = render_pose_keypoint(pose_keypoint, resolution or None, xinsr_stick_scaling=xinsr_stick_scaling)
        if not images:
            raise IllustposeNodeError("pose_keypoint holds no frames: nothing to render")
        out = image_tensor(pad_to_largest(images))
        return io.NodeOutput(out, ui=preview_ui(out, cls, show_preview) or None)


NODES = [RenderOpenPose]
