"""Render OpenPose: POSE_KEYPOINT from any source renders the way cn_aux draws it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from illustpose.render import render_pose_keypoint

NODE = "RenderOpenPose|illustpose"


def dwpose_frame(h=120, w=80):
    """A frame as comfyui_controlnet_aux's DWPose node writes it: normalised coordinates, a missing
    joint as [0, 0, 0], hands and face present (ignored here: bodies only)."""
    body = []
    for i in range(18):
        body += [0.0, 0.0, 0.0] if i in (16, 17) else [0.3 + 0.02 * i, 0.1 + 0.045 * i, 1.0]
    return {"people": [{"pose_keypoints_2d": body, "face_keypoints_2d": [0.5, 0.2, 1.0] * 70,
                        "hand_left_keypoints_2d": [0.4, 0.5, 1.0] * 21, "hand_right_keypoints_2d": None}],
            "canvas_height": h, "canvas_width": w}


def render(pack, value, resolution=0, xinsr=False):
    (image,), ui = pack.run(NODE, pose_keypoint=value, resolution=resolution, xinsr_stick_scaling=xinsr,
                            show_preview=False)
    assert ui is None and image.dtype == torch.float32
    return image


def as_u8(image):
    return np.rint(image.numpy() * 255).astype(np.uint8)


def test_a_dwpose_frame_renders_as_the_library_draws_it(pack):
    value = [dwpose_frame()]
    image = render(pack, value)
    assert image.shape == (1, 120, 80, 3)
    assert np.array_equal(as_u8(image)[0], render_pose_keypoint(value)[0]) and image.max() > 0


@pytest.mark.parametrize("resolution", [64, 512])
def test_resolution_is_the_short_side(pack, resolution):
    image = render(pack, [dwpose_frame()], resolution=resolution)
    assert image.shape == (1, round(120 * resolution / 80), resolution, 3)
    assert np.array_equal(as_u8(image)[0], render_pose_keypoint([dwpose_frame()], resolution)[0])


def test_frames_of_different_sizes_are_padded_with_black(pack):
    value = [dwpose_frame(120, 80), dwpose_frame(60, 100)]
    image = render(pack, value)
    assert image.shape == (2, 120, 100, 3)
    first, second = render_pose_keypoint(value)
    assert np.array_equal(as_u8(image)[0, :, :80], first) and image[0, :, 80:].max() == 0
    assert np.array_equal(as_u8(image)[1, :60], second) and image[1, 60:].max() == 0


def test_malformed_keypoints_are_a_clear_error(pack):
    with pytest.raises(pack.node_error, match="frame 0 has no 'canvas_height'"):
        render(pack, [{"people": []}])
    with pytest.raises(pack.node_error, match="no frames"):
        render(pack, [])


def test_the_openpose_images_are_shown_on_the_node_by_default(pack, comfy_base):
    value = [dwpose_frame(120, 80), dwpose_frame(60, 100)]
    (image,), ui = pack.run(NODE, pose_keypoint=value, resolution=0, xinsr_stick_scaling=False)  # as from the menu
    assert len(ui["images"]) == 2 and ui["animated"] == (False,)
    for shown, frame in zip(ui["images"], image):
        with Image.open(comfy_base / "temp" / shown["subfolder"] / shown["filename"]) as png:
            assert shown["type"] == "temp" and np.array_equal(np.asarray(png), as_u8(frame))
