"""Save/Load Pose Keypoints and Save Captions: files in ComfyUI's folders, round trips, names."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from illustpose.keypoints import coco17_to_openpose18, to_pose_keypoint
from illustpose.render import render_pose_keypoint

SAVE, LOAD, CAPTIONS = "SavePoseKeypoints|illustpose", "LoadPoseKeypoints|illustpose", "SaveCaptions|illustpose"


def unique(prefix="t"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def hand_made_pose(h=90, w=60, seed=0):
    """A POSE_KEYPOINT frame and its COCO annotation from hand-placed joints (some absent)."""
    rng = np.random.default_rng(seed)
    xy = np.column_stack([rng.uniform(5, w - 5, 17), rng.uniform(5, h - 5, 17)])
    visible = np.arange(17) % 4 != 3
    frame = to_pose_keypoint([[coco17_to_openpose18(xy, visible)]], [(h, w)])
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, w, h],
           "keypoints": [v for (x, y), s in zip(xy.tolist(), visible) for v in (x, y, 2 if s else 1)]}
    coco = {"images": [{"id": 1, "height": h, "width": w}], "annotations": [ann], "categories": []}
    return frame, json.dumps(coco)


def save(pack, kps, prefix, per_image=False, **kw):
    """Save Pose Keypoints takes every input as a list (INPUT_IS_LIST)."""
    out, ui = pack.run(SAVE, pose_keypoint=kps, filename_prefix=[prefix], per_image=[per_image], **kw)
    assert out == ()
    return ui["text"]


def test_saved_keypoints_load_back_and_render_the_same(pack):
    frame, _ = hand_made_pose()
    prefix = f"{unique()}/pose"
    written = save(pack, [frame], prefix)
    assert written == [f"{prefix}_00001_.json"]
    (loaded,), ui = pack.run(LOAD, file=written[0] + " [output]")
    assert loaded == frame and ui is None
    assert np.array_equal(render_pose_keypoint(loaded)[0], render_pose_keypoint(frame)[0])
    assert written[0] + " [output]" in next(i for i in pack.node(LOAD).define_schema().inputs if i.id == "file").options


def test_runs_of_a_list_are_saved_together_and_numbers_follow_saveimage(pack):
    a, _ = hand_made_pose(seed=1)
    b, _ = hand_made_pose(seed=2)
    prefix = f"{unique()}/pose"
    assert save(pack, [a, b], prefix) == [f"{prefix}_00001_.json"]  # one value per upstream run
    assert save(pack, [a + b], prefix) == [f"{prefix}_00002_.json"]
    out = Path(pack.folder_paths.get_output_directory())
    assert json.loads((out / f"{prefix}_00001_.json").read_text()) == a + b


def test_coco_files_are_merged_named_and_load_as_keypoints(pack):
    (a, coco_a), (b, coco_b) = hand_made_pose(seed=3), hand_made_pose(seed=4)
    prefix = unique()
    written = save(pack, [a, b], prefix, per_image=True, coco_json=[coco_a, coco_b], filenames=["x/one.png", "two.jpg"])
    assert written == [f"{prefix}/x/one.json", f"{prefix}/x/one.coco.json",
                       f"{prefix}/two.json", f"{prefix}/two.coco.json"]
    out = Path(pack.folder_paths.get_output_directory())
    coco = json.loads((out / prefix / "two.coco.json").read_text())
    assert coco["images"] == [{"id": 2, "height": 90, "width": 60, "file_name": "two.jpg"}]
    assert [a["image_id"] for a in coco["annotations"]] == [2] and coco["annotations"][0]["id"] == 2
    (from_coco,), _ = pack.run(LOAD, file=f"{prefix}/two.coco.json [output]")
    assert from_coco == b  # v = 2 joints present, v = 1 absent: the pose node's threshold rule


def test_mismatched_inputs_are_clear_errors(pack):
    frame, coco = hand_made_pose()
    with pytest.raises(pack.node_error, match="coco_json holds 1 images but pose_keypoint 2 frames"):
        save(pack, [frame + frame], unique(), coco_json=[coco])
    with pytest.raises(pack.node_error, match="not a COCO keypoints file"):
        save(pack, [frame], unique(), coco_json=["{}"])
    with pytest.raises(pack.node_error, match="pose_keypoints_2d must hold 18"):
        bad = {"people": [{"pose_keypoints_2d": [1, 2, 3]}], "canvas_height": 4, "canvas_width": 4}
        save(pack, [[bad]], unique())


def test_loading_from_the_input_folder_and_bad_files(pack):
    frame, _ = hand_made_pose()
    inp = Path(pack.folder_paths.get_input_directory())
    name = unique() + ".json"
    (inp / name).write_text(json.dumps(frame[0]))  # a single frame dict is accepted too
    node = pack.node(LOAD)
    assert name in next(i for i in node.define_schema().inputs if i.id == "file").options
    (loaded,), _ = pack.run(LOAD, file=name)
    assert loaded == frame
    before = node.fingerprint_inputs(file=name)
    os.utime(inp / name, ns=(0, 10**9))
    assert node.fingerprint_inputs(file=name) != before
    (inp / "broken.json").write_text("{nope")
    with pytest.raises(pack.node_error, match="cannot read it as JSON"):
        pack.run(LOAD, file="broken.json")
    (inp / "animals.json").write_text(json.dumps([{"animals": [[[1, 2, 1]]], "canvas_height": 8, "canvas_width": 8}]))
    with pytest.raises(pack.node_error, match="animal poses"):
        pack.run(LOAD, file="animals.json")


def captions(pack, tags, prefix, caption_prefix="", underscores=True, **kw):
    """Save Captions takes every input as a list (INPUT_IS_LIST)."""
    out, ui = pack.run(CAPTIONS, tags=tags, filename_prefix=[prefix], caption_prefix=[caption_prefix],
                       replace_underscores=[underscores], **kw)
    assert out == ()
    return ui


def test_captions_are_named_like_saveimage_and_joined_to_the_prefix(pack):
    prefix = f"{unique()}/img"
    ui = captions(pack, ["long_hair, smile", ""], prefix, caption_prefix="mychar, ")
    assert ui == {"text": [f"{prefix}_00001_.txt", f"{prefix}_00002_.txt"]}
    out = Path(pack.folder_paths.get_output_directory())
    assert (out / f"{prefix}_00001_.txt").read_text() == "mychar, long hair, smile"
    assert (out / f"{prefix}_00002_.txt").read_text() == "mychar"


def test_images_are_saved_beside_their_captions_with_the_same_stem(pack):
    prefix = unique()
    batch = torch.rand(2, 6, 5, 3, generator=torch.Generator().manual_seed(0))
    ui = captions(pack, ["a_b", "c", "d"], prefix, underscores=False, images=[batch, batch[:1]],
                  filenames=["one.png", "sub/two.webp", "../../escape.png"])
    out = Path(pack.folder_paths.get_output_directory())
    assert ui["text"] == [f"{prefix}/one.txt", f"{prefix}/sub/two.txt", f"{prefix}/escape.txt"]
    assert ui["images"][1] == {"filename": "two.png", "subfolder": f"{prefix}/sub", "type": "output"}
    assert (out / prefix / "one.txt").read_text() == "a_b"
    saved = np.asarray(Image.open(out / prefix / "sub" / "two.png"))
    assert np.array_equal(saved, (255 * batch[1].numpy()).astype(np.uint8))


def test_caption_and_image_counts_must_agree(pack):
    with pytest.raises(pack.node_error, match="2 captions for 1 images"):
        captions(pack, ["a", "b"], unique(), images=[torch.rand(1, 4, 4, 3)])
    with pytest.raises(pack.node_error, match="filenames holds 1 names for 2 items"):
        captions(pack, ["a", "b"], unique(), filenames=["x.png"])
