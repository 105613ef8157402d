"""Illustrated Pose: the library's keypoints in every output format, bbox sources, heatmaps, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from illustpose.geometry import bbox_from_mask, bbox_rc_to_xywh
from illustpose.heatmaps import heatmap_on_image, pose_heatmap
from illustpose.images import from_array
from illustpose.keypoints import coco17_to_openpose18, parse_pose_keypoint, to_pose_keypoint
from illustpose.render import draw_pose_results
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
    """The largest character's pose of each image, as the library finds it."""
    return [ps[0] for ps in library_characters(pack, image, bboxes, segmenter)]


def library_characters(pack, image, bboxes=None, segmenter=None, masks=None):
    """Every character's pose of each image, as the library finds it."""
    pil = [from_array(im.numpy()) for im in image]
    anns = Pipeline(segmenter, None, pack.load("pose")).annotate(pil, bboxes, masks=masks, return_heatmaps=True)
    return [a.poses for a in anns]


@pytest.mark.parametrize("batch", [1, 4])
def test_outputs_per_image_match_the_library(pack, batch):
    image = images(batch, seed=batch)
    (kps, control, coco, heat, preview), ui = pose(pack, image, segmenter=pack.load("segmenter"))
    assert control.shape == (batch, 512, 683, 3)  # short side 512, as the DWPose node resizes
    assert heat.shape == (batch, H, W) and preview.shape == (batch, H, W, 3)
    assert all(t.dtype == torch.float32 for t in (control, heat, preview))
    ref = library_characters(pack, image, segmenter=pack.load("segmenter"))
    expected = to_pose_keypoint([[p.openpose() for p in ps] for ps in ref], [(H, W)] * batch)
    assert kps == expected and ui["openpose_json"] == [json.dumps(kps)] and "text" not in ui
    for frame, ps in zip(kps, ref):
        for person, p in zip(frame["people"], ps):
            body = person["pose_keypoints_2d"]
            # threshold 0: a joint is drawn unless it is outside the image or far from its character
            assert len(body) == 54 and body[2::3] == p.openpose().present.astype(float).tolist()
        assert (frame["canvas_height"], frame["canvas_width"]) == (H, W)
    data = json.loads(coco)
    assert [im["id"] for im in data["images"]] == list(range(1, batch + 1))
    flat = [p for ps in ref for p in ps]
    assert len(data["annotations"]) == len(flat)
    for ann, p in zip(data["annotations"], flat):
        kp = np.reshape(ann["keypoints"], (17, 3))  # absent joints: COCO's 0, 0, 0
        assert np.allclose(kp[:, :2], np.where(p.present[:17, None], p.keypoints[:17], 0.0))
        assert (kp[:, 2] == np.where(p.present[:17], 2, 0)).all()
        assert ann["bbox"] == list(p.bbox_xywh) and set(ann["extra_keypoints"]) >= {"nose_root", "left_toe"}
    assert ("progress", batch) in pack.calls and pack.calls[0][0] == "load_models_gpu"  # ComfyUI's memory manager


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
    present = coco17_to_openpose18(ref.keypoints, ref.present & (ref.scores >= t)).present
    assert kps[0]["people"][0]["pose_keypoints_2d"][2::3] == [1.0 if p else 0.0 for p in present]
    assert parse_pose_keypoint(kps)[0].people[0].present.tolist() == present.tolist()
    v = np.reshape(json.loads(coco)["annotations"][0]["keypoints"], (17, 3))[:, 2]
    # absent (outside the image): 0; below the threshold: 1 (labelled, not visible); else 2
    assert v.tolist() == [0 if not a else 2 if s >= t else 1 for a, s in zip(ref.present[:17], ref.scores[:17])]


def test_bbox_input_wins_and_one_box_serves_the_batch(pack):
    image = images(2, seed=4)
    (kps, *_), _ = pose(pack, image, bbox=[[3, 2, 18, 20]], segmenter=pack.load("segmenter"),
                        character_mask=torch.ones(2, H, W))
    ref = library_poses(pack, image, [[3, 2, 18, 20]] * 2)
    assert kps == to_pose_keypoint([[p.openpose()] for p in ref], [(H, W)] * 2)


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
        drawn = draw_skeleton(rgb, ref.keypoints, ref.visible(threshold).astype(float), bbox_xywh=list(ref.bbox_xywh),
                              threshold=0.5, draw_extra=draw_extra)
        assert np.array_equal(np.rint(preview[i].numpy() * 255).astype(np.uint8), drawn)
        assert not np.array_equal(drawn, rgb)  # something was drawn


def test_the_preview_is_shown_on_the_node_as_preview_image_shows_it(pack, comfy_base):
    """ComfyUI's ui.PreviewImage: one PNG per image in the temp folder, listed under "images" (what the
    frontend draws on a node); show_preview off writes and lists nothing."""
    temp = comfy_base / "temp"
    before = set(temp.iterdir())
    (*_, preview), ui = pose(pack, images(2, seed=12), bbox=[[2, 2, 20, 20]])
    written = sorted(set(temp.iterdir()) - before)
    assert ui["animated"] == (False,) and [i["type"] for i in ui["images"]] == ["temp", "temp"]
    assert [temp / i["subfolder"] / i["filename"] for i in ui["images"]] == written
    for path, shown in zip(written, preview):
        assert path.name.startswith("ComfyUI_temp_") and path.name.endswith("_.png")
        with Image.open(path) as png:  # the preview output, pixel for pixel
            assert np.array_equal(np.asarray(png), np.rint(shown.numpy() * 255).astype(np.uint8))
    before = set(temp.iterdir())
    (*_, off), ui = pose(pack, images(2, seed=12), bbox=[[2, 2, 20, 20]], show_preview=False)
    assert set(temp.iterdir()) == before and set(ui) == {"openpose_json"} and torch.equal(off, preview)


def test_cancel_between_images_is_comfyuis_exception(pack):
    mm = pack.modules["comfy.model_management"]

    def hook(value, total, preview, node_id=None):
        if value == 2:
            raise mm.InterruptProcessingException()

    pack.utils.PROGRESS_BAR_HOOK = hook
    with pytest.raises(mm.InterruptProcessingException):
        pose(pack, images(4), bbox=[[0, 0, W, H]])
    assert ("progress", 4) in pack.calls


def test_several_boxes_per_image_give_one_person_and_annotation_each(pack):
    image = images(2, seed=9)
    boxes = [[[1, 1, 12, 20], [16, 2, 15, 21]], [[4, 3, 20, 18]]]  # two characters, then one
    (kps, control, coco, heat, preview), _ = pose(pack, image, bbox=boxes, draw_extra=True)
    ref = library_characters(pack, image, boxes)
    assert [len(f["people"]) for f in kps] == [2, 1]
    assert kps == to_pose_keypoint([[p.openpose() for p in ps] for ps in ref], [(H, W)] * 2)
    data = json.loads(coco)
    assert [(a["id"], a["image_id"]) for a in data["annotations"]] == [(1, 1), (2, 1), (3, 2)]
    # largest first
    assert [a["bbox"] for a in data["annotations"]] == [[16, 2, 15, 21], [1, 1, 12, 20], [4, 3, 20, 18]]
    rgb = np.asarray(from_array(image[0].numpy()))
    assert np.array_equal(np.rint(preview[0].numpy() * 255).astype(np.uint8), draw_pose_results(rgb, ref[0], draw_extra=True))
    expected = np.maximum(*(pose_heatmap(p) for p in ref[0]))
    assert torch.allclose(heat[0], torch.from_numpy(expected))
    # the same boxes as [x0, y0, x1, y1] (Florence2, SAM2, YOLO) with bbox_format xyxy
    xyxy = [[[x, y, x + w, y + h] for x, y, w, h in per_image] for per_image in boxes]
    assert pose(pack, image, bbox=xyxy, bbox_format="xyxy")[0][0] == kps


def test_an_empty_character_mask_poses_nobody_and_says_so(pack):
    image, empty = images(2, seed=10), torch.zeros(2, H, W)
    (kps, control, coco, heat, preview), ui = pose(pack, image, character_mask=empty)
    assert [f["people"] for f in kps] == [[], []] and json.loads(coco)["annotations"] == []
    assert not control.any() and not heat.any()
    for i in range(2):  # the image itself, nothing drawn
        drawn = np.rint(preview[i].numpy() * 255).astype(np.uint8)
        assert np.array_equal(drawn, np.asarray(from_array(image[i].numpy())))
    assert len(ui["text"]) == 2 and all("no character found" in t for t in ui["text"])
    (kps, _, coco, _, _), _ = pose(pack, image, character_mask=empty, characters=1)  # the reference: whole image
    assert [a["bbox"] for a in json.loads(coco)["annotations"]] == [[0, 0, W, H]] * 2


def test_several_masks_for_one_image_are_one_character_each(pack):
    image, masks = images(1, seed=11), torch.zeros(2, H, W)
    masks[0, 2:20, 2:12] = 1.0
    masks[1, 4:22, 18:30] = 1.0
    (kps, _, coco, _, _), _ = pose(pack, image, character_mask=masks)
    assert [a["bbox"] for a in json.loads(coco)["annotations"]] == [[17, 3, 13, 19], [1, 1, 11, 19]]
    ref = library_characters(pack, image, masks=[[(m.numpy() * 255).astype(np.uint8) for m in masks]])
    assert kps == to_pose_keypoint([[p.openpose() for p in ref[0]]], [(H, W)])
    one = masks.sum(0, keepdim=True)  # both in one mask: the split finds the two characters
    assert pose(pack, image, character_mask=one)[0][0] == kps
