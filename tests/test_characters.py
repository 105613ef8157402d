"""Several characters per image and absent joints (illustpose.characters, the pipeline, annotate).

The golden-rule weights' masks are fragmented and say nothing about characters, so the split is
tested on masks built here (and on the sample cutout's real silhouette); the pose model runs on
composites whose crops see exactly what the samples alone see.
"""

from __future__ import annotations

import json
from collections import namedtuple

import numpy as np
import pytest
import torch
from PIL import Image

from checkpoint_factory import AUTHORS_PATHS
from shared_data import SAMPLE_STEMS, SAMPLES, load_golden
from illustpose.characters import (GROUP_GAP, Character, boxes_per_image, characters_from_masks,
                                   characters_setting, joints_present, read_boxes_file, split_mask)
from illustpose.cli import main
from illustpose.errors import CharacterError, IllustposeError
from illustpose.geometry import bbox_from_mask, bbox_rc_to_xywh, bbox_xywh_to_rc, pose_cropbox
from illustpose.images import load_image
from illustpose.keypoints import OPENPOSE18_KEYPOINTS, parse_pose_keypoint
from illustpose.models.pose import PoseEstimator
from illustpose.outputs import write_annotation
from illustpose.pipeline import Pipeline
from illustpose.results import PoseResult, SegmentationResult


def reference_box(mask: np.ndarray) -> tuple:
    return tuple(bbox_rc_to_xywh(bbox_from_mask(mask)))


def canvas(h=200, w=300) -> np.ndarray:
    return np.zeros((h, w), np.uint8)


# --------------------------------------------------------------------------- the split rule


@pytest.mark.parametrize("stem", SAMPLE_STEMS)
def test_one_character_images_keep_the_reference_box(stem):
    mask = load_golden(stem)["seg_mask_u8"]  # fragmented (golden-rule weights), one character
    for mode in ("auto", 1, 3):
        (character,) = split_mask(mask, mode)
        assert character.bbox_xywh == tuple(load_golden(stem)["bbox_xywh"].tolist()) == reference_box(mask)
        assert character.mask.sum() == (mask > 127).sum()  # every pixel of the mask is the character's


def test_two_characters_apart_are_two_boxes_largest_first():
    m = canvas()
    m[20:180, 200:260] = 255  # the larger one, on the right
    m[40:150, 20:80] = 200
    big, small = split_mask(m)
    assert big.bbox_xywh == (199, 19, 61, 161) and small.bbox_xywh == (19, 39, 61, 111)  # reference rule each
    assert big.mask.shape == (161, 61) and big.mask[1:, 1:].all() and small.area < big.area
    assert split_mask(m, 1)[0].bbox_xywh == reference_box(m)  # 1: the reference's single box
    assert [c.bbox_xywh for c in split_mask(m, 2)] == [big.bbox_xywh, small.bbox_xywh]


def test_a_detached_hat_joins_its_character_and_its_box():
    m = canvas()
    m[60:190, 100:160] = 255  # the character
    m[35:50, 110:150] = 255  # a hat floating 10 px above (more than 5 % of 130 px), 8 % of the area
    m[100:110, 10:20] = 255  # a far speck, e.g. a signature
    (character,) = split_mask(m)
    assert character.bbox_xywh == reference_box(m)  # hat and speck inside: the reference box
    assert len(split_mask(m, min_area=0.0)) == 3  # with no least area each part is a character


def test_the_cutout_silhouette_with_a_cut_off_hat_is_one_character():
    alpha = np.asarray(Image.open(SAMPLES / "megumin_cutout.png").convert("RGBA"))[..., 3].copy()
    assert len(split_mask(alpha)) == 1
    rows = np.flatnonzero((alpha > 127).any(axis=1))
    alpha[rows[0] + 60:rows[0] + 90] = 0  # cut through the hat: its tip is detached, 30 px above the rest
    parts = split_mask(alpha, min_area=0.0)
    assert len(parts) >= 2  # the tip really is apart
    (character,) = split_mask(alpha)
    assert character.bbox_xywh == reference_box(alpha)


def test_parts_near_each_other_are_one_character_far_ones_are_not():
    m = canvas()
    m[20:100, 100:160] = 255  # upper body
    gap = int(GROUP_GAP * 80) - 1  # just under 5 % of the larger part's long side (80 px)
    m[100 + gap:180, 100:160] = 255  # lower body below a belt the mask missed
    assert len(split_mask(m)) == 1
    m2 = canvas()
    m2[20:100, 100:160] = 255
    m2[130:180, 100:160] = 255  # 30 px apart: two characters (both large)
    assert len(split_mask(m2)) == 2


def test_at_most_n_characters_and_the_rest_join_the_nearest():
    m = canvas(200, 400)
    for x0 in (10, 150, 300):
        m[20:180, x0:x0 + 60] = 255
    assert len(split_mask(m)) == 3
    two = split_mask(m, 2)
    assert len(two) == 2 and two[0].bbox_xywh == (149, 19, 211, 161)  # the third joined its nearest


def test_an_empty_mask_has_no_character_unless_one_is_asked_for():
    m = canvas()
    assert split_mask(m) == [] and split_mask(m, 2) == []
    (whole,) = split_mask(m, 1)
    assert whole.bbox_xywh == (0, 0, 300, 200) and whole.mask is None  # the reference's fallback


def test_a_noisy_mask_costs_a_bounded_number_of_groups():
    rng = np.random.default_rng(0)
    m = canvas(400, 400)
    m[100:300, 100:300] = 255
    ys, xs = rng.integers(0, 400, 2000), rng.integers(0, 400, 2000)
    m[ys, xs] = 255  # ~2000 isolated specks
    (character,) = split_mask(m)
    assert character.bbox_xywh == reference_box(m)


def test_settings_are_checked():
    assert characters_setting("AUTO") == "auto" and characters_setting("3") == 3 and characters_setting(2) == 2
    for bad in (0, -1, "two", 1.5, None, True):
        with pytest.raises(CharacterError, match="characters must be"):
            characters_setting(bad)
    with pytest.raises(CharacterError, match="min_area"):
        split_mask(canvas(), min_area=1.5)
    with pytest.raises(CharacterError, match="min_area"):
        Pipeline(min_area=-0.1)


def test_one_character_per_mask():
    a, b, empty = canvas(), canvas(), canvas()
    a[10:50, 10:40] = 255
    b[20:190, 100:200] = 255
    small, = characters_from_masks([a])
    assert small.bbox_xywh == reference_box(a)
    assert [c.bbox_xywh for c in characters_from_masks([a, empty, b])] == [reference_box(b), reference_box(a)]


# --------------------------------------------------------------------------- absent joints


def test_joints_outside_the_image_or_far_from_the_mask_are_absent():
    xy = np.array([[5.0, 5.0], [-0.5, 5.0], [5.0, 20.0], [19.9, 0.0], [np.nan, 1.0], [20.0, 3.0]])
    assert joints_present(xy, (20, 20)).tolist() == [True, False, False, True, False, False]
    mask = np.zeros((100, 100), bool)
    mask[:50] = True  # the character's top half, box 100 x 100: 10 px is "far"
    character = Character((0, 0, 100, 100), mask)
    xy = np.array([[50.0, 40.0], [50.0, 59.0], [50.0, 61.0], [50.0, 99.0]])
    assert joints_present(xy, (200, 200), character).tolist() == [True, True, False, False]
    assert joints_present(xy, (200, 200), Character((0, 0, 100, 100))).all()  # a given box: no mask rule


# --------------------------------------------------------------------------- boxes given by the user

SEG = namedtuple("SEG", ["cropped_image", "cropped_mask", "confidence", "crop_region", "bbox", "label",
                         "control_net_wrapper"])


def test_box_formats_comfyui_nodes_pass_around():
    box, box2 = [10, 20, 30, 40], [50, 60, 5, 6]
    assert boxes_per_image(box, 2) == [[box], [box]]  # one box for every image
    assert boxes_per_image([box, box2], 2) == [[box], [box2]]  # one per image
    assert boxes_per_image([box, box2], 1) == [[box, box2]]  # all of the one image
    assert boxes_per_image([[box, box2], []], 2) == [[box, box2], []]  # several per image, none
    assert boxes_per_image([[10, 20, 40, 60]], 1, "xyxy") == [[box]]  # Florence2 / SAM2 / YOLO xyxy
    assert boxes_per_image(np.array([box, box2], np.float32), 1) == [[box, box2]]  # arrays, tensors
    assert boxes_per_image(torch.tensor([[box]]), 1) == [[box]]
    segs = ((100, 200), [SEG(None, None, 0.9, [0, 0, 60, 70], [10, 20, 40, 60], "person", None)])
    assert boxes_per_image(segs, 2) == [[box], [box]]  # Impact Pack SEGS: xyxy
    assert boxes_per_image([{"bbox": box, "id": 1}, {"bbox": box2}], 1) == [[box, box2]]  # COCO annotations
    assert boxes_per_image({"bboxes": [[10, 20, 40, 60]], "labels": ["girl"]}, 1) == [[box]]  # Florence2 dict
    with pytest.raises(CharacterError, match="bbox holds 2 boxes for 3 images"):
        boxes_per_image([box, box2], 3)
    with pytest.raises(CharacterError, match="box format"):
        boxes_per_image(box, 1, "cxcywh")
    with pytest.raises(CharacterError, match="four numbers"):
        boxes_per_image([[1, 2, 3]], 1)
    with pytest.raises(CharacterError, match="cannot read boxes"):
        boxes_per_image("10,20,30,40", 1)


def test_boxes_file(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "sub\\a.png"}, {"id": 2, "file_name": "b.png"}],
                                "annotations": [{"image_id": 1, "bbox": [1, 2, 3, 4]},
                                                {"image_id": 1, "bbox": [5, 6, 7, 8]}]}))
    assert read_boxes_file(path) == {"sub/a.png": [(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)], "b.png": []}
    one = [{"id": 1, "file_name": "a"}]
    for doc, message in (([], "expected a COCO file"),
                         ({"images": one, "annotations": [{"image_id": 2, "bbox": [0, 0, 1, 1]}]},
                          r"annotations\[0\] has image_id 2"),
                         ({"images": one, "annotations": [{"image_id": 1, "bbox": [0, 0, 0, 1]}]},
                          r"annotations\[0\]\.bbox: .* has no area")):
        path.write_text(json.dumps(doc))
        with pytest.raises(CharacterError, match=message):
            read_boxes_file(path)


# --------------------------------------------------------------------------- the pipeline, golden weights


@pytest.fixture(scope="module")
def pose_model(authors_tree):
    return PoseEstimator.from_pretrained(authors_tree / AUTHORS_PATHS["feat_match+data"])


def test_two_characters_given_by_box_pose_as_they_do_alone(pose_model):
    """Two samples pasted far apart on a transparent canvas: each crop sees what the sample alone
    sees (transparent black around it), so each pose is the golden single-image pose, moved."""
    stems, offsets = ("retrieval_r0c1", "retrieval_r0c3"), ((40, 60), (400, 30))  # even: rounding unchanged
    sheet = Image.new("RGBA", (700, 340), (0, 0, 0, 0))
    boxes = []
    for stem, (dx, dy) in zip(stems, offsets):
        sheet.paste(load_image(SAMPLES / f"{stem}.png").convert("RGBA"), (dx, dy))
        x, y, w, h = load_golden(stem)["bbox_xywh"].tolist()
        boxes.append([x + dx, y + dy, w, h])
    (ann,) = Pipeline(None, None, pose_model).annotate([sheet], [boxes], return_heatmaps=True)
    assert len(ann.poses) == 2
    for pose, stem, (dx, dy) in zip(sorted(ann.poses, key=lambda p: p.bbox_xywh[0]), stems, offsets):
        g = load_golden(stem)
        assert list(pose.bbox_xywh) == (g["bbox_xywh"] + [dx, dy, 0, 0]).tolist()
        np.testing.assert_allclose(pose.heatmaps, g["pose_logits"], rtol=0, atol=5e-4)
        np.testing.assert_allclose(pose.keypoints, g["pose_keypoints_xy"] + [dx, dy], rtol=0, atol=1e-9)
    assert ann.poses[0].bbox_xywh[2] * ann.poses[0].bbox_xywh[3] > ann.poses[1].bbox_xywh[2] * ann.poses[1].bbox_xywh[3]


#: a standing figure drawn on retrieval_r0c1 (x, y): head, arms, hips at y ~105, knees ~152, ankles ~205
FIGURE_R0C1 = np.array([[48, 28], [52, 23], [44, 23], [60, 23], [37, 23], [64, 47], [32, 41], [71, 71], [7, 36],
                        [89, 89], [22, 23], [59, 104], [34, 106], [76, 151], [25, 153], [91, 206], [11, 205]], float)
LEGS_OP18 = [OPENPOSE18_KEYPOINTS.index(n) for n in ("right_knee", "right_ankle", "left_knee", "left_ankle")]


class FullBodyPrior:
    """A pose model that, like the real one on a bust shot, places the whole figure, legs included,
    where a full body would be: the joints of :data:`FIGURE_R0C1`, whatever it is shown."""

    def estimate(self, images, bboxes, return_heatmaps=False):
        xy = np.concatenate([FIGURE_R0C1, FIGURE_R0C1[:8]])  # the 8 extra channels: anywhere on the body
        return [PoseResult(xy.copy(), np.full(25, 0.5, np.float32), tuple(int(v) for v in b),
                           pose_cropbox(bbox_xywh_to_rc(b), 256, 0.1), (im.height, im.width))
                for im, b in zip(images, bboxes)]


def silhouette(image: Image.Image) -> np.ndarray:
    """A character mask of a retrieval tile: its non-white pixels, without the red frame lines."""
    a = np.asarray(image.convert("RGB"))
    mask = (a.min(axis=2) < 220).astype(np.uint8) * 255
    mask[:, :5], mask[:, -5:], mask[:2], mask[-5:] = 0, 0, 0, 0
    return mask


@pytest.mark.parametrize("white_below", [False, True], ids=["cut", "cut on a white page"])
def test_a_bust_shot_has_no_leg_joints(tmp_path, white_below):
    tile = load_image(SAMPLES / "retrieval_r0c1.png").convert("RGB")
    bust = tile.crop((0, 0, tile.width, 125))  # cut below the hips
    if white_below:  # the legs then fall inside the image, on the page, far from the character
        page = Image.new("RGB", tile.size, (255, 255, 255))
        page.paste(bust, (0, 0))
        bust = page
    (ann,) = Pipeline(None, None, FullBodyPrior()).annotate([bust], masks=[silhouette(bust)])
    (pose,) = ann.poses
    assert not pose.present[13:17].any() and pose.present[:13].all()
    assert (pose.keypoints == np.concatenate([FIGURE_R0C1, FIGURE_R0C1[:8]])).all()  # positions unchanged
    write_annotation(tmp_path / "bust", bust, ann)
    (person,) = parse_pose_keypoint(json.loads((tmp_path / "bust.pose_keypoint.json").read_text()))[0].people
    assert not person.present[LEGS_OP18].any() and person.present.sum() == 18 - 4
    (coco,) = json.loads((tmp_path / "bust.pose.json").read_text())["annotations"]
    kp = np.reshape(coco["keypoints"], (17, 3))
    assert kp[13:, 2].tolist() == [0, 0, 0, 0] and np.allclose(kp[13:, :2], FIGURE_R0C1[13:], atol=1e-4)
    assert coco["keypoint_scores"] == [0.5] * 17 and coco["num_keypoints"] == 13


class EmptySegmenter:
    """A segmenter that finds nothing (what the real one gives a blank page)."""

    bbox_threshold = 0.5

    def segment(self, images):
        return [SegmentationResult(np.zeros((im.height, im.width), np.uint8), np.zeros((1, 1), np.float32),
                                   (0, 0, im.width, im.height)) for im in images]


def test_an_empty_mask_gives_no_character_and_one_gives_the_whole_image(pose_model, tmp_path):
    white = Image.new("RGB", (64, 48), (255, 255, 255))
    (ann,) = Pipeline(EmptySegmenter(), None, pose_model).annotate([white])
    assert ann.poses == () and ann.pose is None
    write_annotation(tmp_path / "white", white, ann)
    assert json.loads((tmp_path / "white.pose.json").read_text()) == {"image_size": [64, 48], "annotations": []}
    assert json.loads((tmp_path / "white.pose_keypoint.json").read_text())[0]["people"] == []
    assert not np.asarray(Image.open(tmp_path / "white.openpose.png")).any()
    assert (np.asarray(Image.open(tmp_path / "white.pose.png")) == 255).all()  # nothing drawn
    with pytest.raises(IllustposeError, match="no character found"):
        Pipeline(EmptySegmenter(), None, pose_model).estimate(white)
    (ann,) = Pipeline(EmptySegmenter(), None, pose_model, characters=1).annotate([white])
    assert [p.bbox_xywh for p in ann.poses] == [(0, 0, 64, 48)]  # the reference's full-image fallback


def test_annotate_takes_boxes_from_a_coco_file(authors_tree, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.open(SAMPLES / "retrieval_r0c1.png").save(src / "a.png")
    Image.new("RGB", (40, 30), (255, 255, 255)).save(src / "blank.png")
    g = load_golden("retrieval_r0c1")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "blank.png"},
                                            {"id": 3, "file_name": "gone.png"}],
                                 "annotations": [{"image_id": 1, "bbox": g["bbox_xywh"].tolist()}]}))
    out = tmp_path / "out"
    rc = main(["annotate", str(src), "--out", str(out), "--boxes", str(boxes), "--skip", "tag", "--skip", "segment",
               "--quiet", "--weights-dir", str(authors_tree), "--offline"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "gone.png" in err and "no character found in" in err and "blank.png: --boxes gives it no box" in err
    (pose,) = json.loads((out / "a.pose.json").read_text())["annotations"]
    assert pose["bbox"] == g["bbox_xywh"].tolist()
    np.testing.assert_allclose(np.reshape(pose["keypoints"], (17, 3))[:, :2], g["pose_keypoints_xy"][:17], atol=0.5e-4)
    assert json.loads((out / "blank.pose.json").read_text())["annotations"] == []
    with pytest.raises(SystemExit) as e:
        main(["annotate", str(src), "--out", str(out), "--characters", "none"])
    assert e.value.code == 2 and "characters must be 'auto'" in capsys.readouterr().err


def test_the_index_gets_one_entry_per_character_with_its_box(tmp_path):
    from illustpose.fileio import sha256_file
    from illustpose.retrieval import PoseIndex
    from illustpose.retrieval.ingest import Ingest

    duo, blank = tmp_path / "duo.png", tmp_path / "blank.png"
    Image.new("RGB", (120, 240), (10, 20, 30)).save(duo)
    Image.new("RGB", (30, 20), (255, 255, 255)).save(blank)
    boxes = [[0, 0, 60, 230], [70, 10, 40, 200]]
    poses = FullBodyPrior().estimate([load_image(duo)] * 2, boxes)
    with PoseIndex(tmp_path / "i.sqlite", create=True) as index:
        ingest = Ingest(index, lambda image: poses)
        entries = ingest.file_entries(duo)
        assert [list(e.pose.bbox_xywh) for e in entries] == boxes
        assert entries[0].sha256 == sha256_file(duo) != entries[1].sha256  # both stored, the image known by its bytes
        assert [e.tags for e in entries] == [{"character": 0}, {"character": 1}]
        assert len(index.add(entries).added_ids) == 2 and index.has_content(sha256_file(duo))
        nobody = Ingest(index, lambda image: [])
        assert nobody.file_entries(blank) == [] and nobody.empty == [str(blank.resolve())]
