"""Illustrated Pose: the library's keypoints in every output format, bbox sources, heatmaps, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from illustpose.geometry import bbox_from_mask, bbox_rc_to_xywh
from illustpose.heatmaps import heatmap_on_image
from illustpose.images import from_array
from illustpose.keypoints import coco17_to_openpose18, parse_pose_keypoint, to_pose_keypoint
from illustpose.pipeline import Pipeline
from illustpose.render import draw_skeleton, render_pose_keypoint

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


def test_the_control_image_is_what_render_openpose_draws_from_the_keypoints(pack):
    (kps, control, *_), _ = pose(pack, images(2), resolution=0, bbox=[[4, 2, 20, 20]])
    assert control.shape == (2, H, W, 3)
    drawn = np.stack(render_pose_keypoint(kps))
    assert np.array_equal(np.rint(control.numpy() * 255).astype(np.uint8), drawn)
    (rendered,), _ = pack.run("RenderOpenPose|illustpose", pose_keypoint=kps, resolution=0,
                                 xinsr_stick_scaling=False)
    assert torch.equal(rendered, control)


def test_confidence_threshold_marks_joints_absent_everywhere(pack):
    image = images(1, seed=3)
    ref = library_poses(pack, image, [[0, 0, W, H]])[0]
    t = float(np.median(ref.scores[:17]))
    (kps, _, coco, _, _), _ = pose(pack, image, threshold=t, bbox=[[0, 0, W, H]])
    present = coco17_to_openpose18(ref.keypoints, ref.scores >= t).present
    assert kps[0]["people"][0]["pose_keypoints_2d"][2::3] == [1.0 if p else 0.0 for p in present]
    assert parse_pose_keypoint(kps)[0].people[0].present.tolist() == present.tolist()
    v = np.reshape(json.loads(coco)["annotations"][0]["keypoints"], (17, 3))[:, 2]
    assert v.tolist() == [2 if s >= t else 1 for s in ref.scores[:17]]


def test_bbox_input_wins_and_one_box_serves_the_batch(pack):
    image = images(2, seed=4)
    (kps, *_), _ = pose(pack, image, bbox=[[3, 2, 18, 20]], segmenter=pack.load("segmenter"),
                        character_mask=torch.ones(2, H, W))
    ref = library_poses(pack, image, [[3, 2, 18, 20]] * 2)
    assert kps == to_pose_keypoint([[coco17_to_openpose18(p.keypoints, np.ones(25, bool))] for p in ref], [(H, W)] * 2)


def test_a_character_mask_gives_the_box(pack):
    image, mask = images(1, seed=5), torch.zeros(1, H, W)
    mask[0, 5:20, 8:25] = 1.0
    (_, _, coco, _, _), _ = pose(pack, image, character_mask=mask)
    box = bbox_rc_to_xywh(bbox_from_mask((mask[0].numpy() * 255).astype(np.uint8), 0.5))
    assert json.loads(coco)["annotations"][0]["bbox"] == box == [7, 4, 18, 16]  # the reference grows 1 px up/left


def test_without_box_mask_or_segmenter_the_whole_image_is_the_box(pack):
    (_, _, coco, _, _), _ = pose(pack, images(1, seed=6, channels=4))  # RGBA input too
    assert json.loads(coco)["annotations"][0]["bbox"] == [0, 0, W, H]


def test_a_box_count_that_fits_no_image_count_is_a_clear_error(pack):
    with pytest.raises(pack.node_error, match="bbox holds 2 boxes for 3 images"):
        pose(pack, images(3), bbox=[[0, 0, 5, 5]] * 2)


def test_heatmaps_show_one_joint_or_the_maximum_of_all(pack):
    image, box = images(1, seed=7), [[0, 0, W, H]]
    (*_, all_heat, _), _ = pose(pack, image, bbox=box, joint="all")
    (*_, wrist, _), _ = pose(pack, image, bbox=box, joint="left_wrist")
    ref = library_poses(pack, image, box)[0]
    sigmoid = 1 / (1 + np.exp(-ref.heatmaps.astype(np.float64)))
    expected = heatmap_on_image(sigmoid[9], ref.cropbox, ref.image_size_hw)
    assert torch.allclose(wrist[0], torch.from_numpy(expected))
    assert torch.allclose(all_heat[0], torch.from_numpy(heatmap_on_image(sigmoid.max(axis=0), ref.cropbox, (H, W))))
    assert (all_heat >= wrist - 1e-6).all() and 0.0 <= all_heat.min() and all_heat.max() <= 1.0


@pytest.mark.parametrize("threshold, draw_extra", [(0.0, False), (0.0, True), (0.5, False)])
def test_preview_is_the_librarys_skeleton_drawing(pack, threshold, draw_extra):
    image = images(2, seed=8)
    (*_, preview), _ = pose(pack, image, bbox=[[0, 0, W, H]], threshold=threshold, draw_extra=draw_extra)
    for i, ref in enumerate(library_poses(pack, image, [[0, 0, W, H]] * 2)):
        rgb = np.asarray(from_array(image[i].numpy()))
        drawn = draw_skeleton(rgb, ref.keypoints, ref.scores, bbox_xywh=list(ref.bbox_xywh), threshold=threshold,
                              draw_extra=draw_extra)
        assert np.array_equal(np.rint(preview[i].numpy() * 255).astype(np.uint8), drawn)
        assert not np.array_equal(drawn, rgb)  # something was drawn


def test_cancel_between_images_is_comfyuis_exception_and_models_go_back(pack):
    mm = pack.modules["comfy.model_management"]

    def hook(value, total, preview, node_id=None):
        if value == 2:
            raise mm.InterruptProcessingException()

    pack.utils.PROGRESS_BAR_HOOK = hook
    with pytest.raises(mm.InterruptProcessingException):
        pose(pack, images(4), bbox=[[0, 0, W, H]])
    assert pack.calls[-1] == "soft_empty_cache"
