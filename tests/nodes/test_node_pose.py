"""Illustrated Pose: the library's keypoints in every output format, bbox sources, heatmaps, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from illustpose.geometry import Cropbox, bbox_from_mask, bbox_rc_to_xywh
from illustpose.images import from_array
from illustpose.keypoints import coco17_to_openpose18, parse_pose_keypoint, to_pose_keypoint
from illustpose.pipeline import Pipeline
from illustpose.render import render_pose_keypoint
from illustpose.results import PoseResult

NODE = "IllustratedPose|illustpose"
H, W = 24, 32


def images(batch, seed=0, channels=3):
    return torch.rand(batch, H, W, channels, generator=torch.Generator().manual_seed(seed))


def pose(pack, image, threshold=0.0, resolution=512, draw_extra=False, joint="all", xinsr=False, **kw):
    out, ui = pack.run(NODE, image=image, pose_model=pack.load("pose"), confidence_threshold=threshold,
                       resolution=resolution, draw_extra=draw_extra, heatmap_joint=joint,
                       xinsr_stick_scaling=xinsr, **kw)
    return out, ui


def library_poses(pack, image, bboxes=None, segmenter=None):
    pil = [from_array(im.numpy()) for im in image]
    anns = Pipeline(segmenter, None, pack.load("pose")).annotate(pil, bboxes, return_heatmaps=True)
    return [a.pose for a in anns]


@pytest.mark.parametrize("batch", [1, 4])
def test_outputs_per_image_match_the_library(pack, batch):
    image = images(batch, seed=batch)
    (kps, control, coco, heat, preview), ui = pose(pack, image, segmenter=pack.load("segmenter"))
    assert control.shape == (batch, 512, 683, 3)  # short side 512, as the DWPose node resizes
    assert heat.shape == (batch, H, W) and preview.shape == (batch, H, W, 3)
    assert all(t.dtype == torch.float32 for t in (control, heat, preview))
    ref = library_poses(pack, image, segmenter=pack.load("segmenter"))
    expected = to_pose_keypoint([[coco17_to_openpose18(p.keypoints, np.ones(25, bool))] for p in ref], [(H, W)] * batch)
    assert kps == expected and ui == {"openpose_json": [json.dumps(kps)]}
    for frame in kps:
        body = frame["people"][0]["pose_keypoints_2d"]
        assert len(body) == 54 and set(body[2::3]) == {1.0}  # threshold 0 keeps every joint, as the reference
        assert (frame["canvas_height"], frame["canvas_width"]) == (H, W)
    data = json.loads(coco)
    assert [im["id"] for im in data["images"]] == list(range(1, batch + 1))
    for ann, p in zip(data["annotations"], ref):
        assert np.allclose(np.reshape(ann["keypoints"], (17, 3))[:, :2], p.keypoints[:17])
        assert ann["bbox"] == list(p.bbox_xywh) and set(ann["extra_keypoints"]) >= {"nose_root", "left_toe"}
    assert ("progress", batch) in pack.calls and pack.calls[-1] == "soft_empty_cache"


def test_the_control_image_is_what_render_openpose_draws_from_the_keypoints(pack_v3):
    (kps, control, *_), _ = pose(pack_v3, images(2), resolution=0, bbox=[[4, 2, 20, 20]])
    assert control.shape == (2, H, W, 3)
    drawn = np.stack(render_pose_keypoint(kps))
    assert np.array_equal(np.rint(control.numpy() * 255).astype(np.uint8), drawn)
    (rendered,), _ = pack_v3.run("RenderOpenPose|illustpose", pose_keypoint=kps, resolution=0,
                                 xinsr_stick_scaling=False)
    assert torch.equal(rendered, control)


def test_confidence_threshold_marks_joints_absent_everywhere(pack_v3):
    image = images(1, seed=3)
    ref = library_poses(pack_v3, image, [[0, 0, W, H]])[0]
    t = float(np.median(ref.scores[:17]))
    (kps, _, coco, _, _), _ = pose(pack_v3, image, threshold=t, bbox=[[0, 0, W, H]])
    present = coco17_to_openpose18(ref.keypoints, ref.scores >= t).present
    assert kps[0]["people"][0]["pose_keypoints_2d"][2::3] == [1.0 if p else 0.0 for p in present]
    assert parse_pose_keypoint(kps)[0].people[0].present.tolist() == present.tolist()
    v = np.reshape(json.loads(coco)["annotations"][0]["keypoints"], (17, 3))[:, 2]
    assert v.tolist() == [2 if s >= t else 1 for s in ref.scores[:17]]


def test_bbox_input_wins_and_one_box_serves_the_batch(pack_v3):
    image = images(2, seed=4)
    (kps, *_), _ = pose(pack_v3, image, bbox=[[3, 2, 18, 20]], segmenter=pack_v3.load("segmenter"),
                        character_mask=torch.ones(2, H, W))
    ref = library_poses(pack_v3, image, [[3, 2, 18, 20]] * 2)
    assert kps == to_pose_keypoint([[coco17_to_openpose18(p.keypoints, np.ones(25, bool))] for p in ref], [(H, W)] * 2)


def test_a_character_mask_gives_the_box(pack_v3):
    image, mask = images(1, seed=5), torch.zeros(1, H, W)
    mask[0, 5:20, 8:25] = 1.0
    (_, _, coco, _, _), _ = pose(pack_v3, image, character_mask=mask)
    box = bbox_rc_to_xywh(bbox_from_mask((mask[0].numpy() * 255).astype(np.uint8), 0.5))
    assert json.loads(coco)["annotations"][0]["bbox"] == box == [7, 4, 18, 16]  # the reference grows 1 px up/left


def test_without_box_mask_or_segmenter_the_whole_image_is_the_box(pack_v3):
    (_, _, coco, _, _), _ = pose(pack_v3, images(1, seed=6, channels=4))  # RGBA input too
    assert json.loads(coco)["annotations"][0]["bbox"] == [0, 0, W, H]


def test_a_box_count_that_fits_no_image_count_is_a_clear_error(pack_v3):
    with pytest.raises(pack_v3.node_error, match="bbox holds 2 boxes for 3 images"):
        pose(pack_v3, images(3), bbox=[[0, 0, 5, 5]] * 2)


def test_heatmaps_show_one_joint_or_the_maximum_of_all(pack_v3):
    image, box = images(1, seed=7), [[0, 0, W, H]]
    (*_, all_heat, _), _ = pose(pack_v3, image, bbox=box, joint="all")
    (*_, wrist, _), _ = pose(pack_v3, image, bbox=box, joint="left_wrist")
    ref = library_poses(pack_v3, image, box)[0]
    expected = pack_v3.module.nodes.pose.heatmap_on_image(1 / (1 + np.exp(-ref.heatmaps[9].astype(np.float64))), ref)
    assert torch.allclose(wrist[0], torch.from_numpy(expected))
    assert (all_heat >= wrist - 1e-6).all() and 0.0 <= all_heat.min() and all_heat.max() <= 1.0


def test_a_heatmap_cell_lands_on_the_image_pixels_its_keypoint_maps_to(pack_v3):
    """Cell (5, 7) of a 32x32 heatmap over a 64 px crop at (row 10, col 20) covers image rows
    10 + 2*5 .. +2 and cols 20 + 2*7 .. +2: pixels (20..21, 34..35)."""
    heat = np.zeros((32, 32))
    heat[5, 7] = 1.0
    crop = Cropbox((10.0, 20.0), (64.0, 64.0), (64.0, 64.0))
    p = PoseResult(np.zeros((25, 2)), np.zeros(25), (0, 0, 1, 1), crop, (60, 80))
    placed = pack_v3.module.nodes.pose.heatmap_on_image(heat, p)
    assert placed.shape == (60, 80)
    rows, cols = np.nonzero(placed == placed.max())
    assert sorted(set(rows.tolist())) == [20, 21] and sorted(set(cols.tolist())) == [34, 35]
    assert placed.max() == pytest.approx(0.75 * 0.75)  # bilinear: each pixel centre is a quarter cell off on both axes


def test_preview_draws_the_skeleton_and_optionally_the_extra_points(pack_v3):
    image = images(1, seed=8)
    (*_, plain), _ = pose(pack_v3, image, bbox=[[0, 0, W, H]])
    (*_, extra), _ = pose(pack_v3, image, bbox=[[0, 0, W, H]], draw_extra=True)
    rgb = torch.from_numpy(np.array(from_array(image[0].numpy()))).float() / 255
    assert not torch.equal(plain[0], rgb) and not torch.equal(plain, extra)


def test_cancel_between_images_is_comfyuis_exception_and_models_go_back(pack):
    mm = pack.modules["comfy.model_management"]

    def hook(value, total, preview, node_id=None):
        if value == 2:
            raise mm.InterruptProcessingException()

    pack.utils.PROGRESS_BAR_HOOK = hook
    with pytest.raises(mm.InterruptProcessingException):
        pose(pack, images(4), bbox=[[0, 0, W, H]])
    assert pack.calls[-1] == "soft_empty_cache"
