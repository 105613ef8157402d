"""Tests of illustpose.keypoints: schemas, OpenPose-18 mapping, POSE_KEYPOINT and COCO io, mirroring."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from illustpose.errors import IllustposeError
from illustpose.keypoints import (
    ALL_KEYPOINTS,
    COCO_KEYPOINTS,
    COCO_OKS_SIGMAS,
    COCO_SKELETON,
    EXTRA_KEYPOINTS,
    EXTRA_SKELETON,
    OPENPOSE18_FROM_COCO17,
    OPENPOSE18_KEYPOINTS,
    KeypointError,
    OpenPosePerson,
    PoseFormatError,
    as_openpose_person,
    coco17_to_openpose18,
    coco_categories,
    flip_permutation,
    from_coco_annotation,
    mirror_keypoints,
    parse_pose_keypoint,
    to_coco_annotation,
    to_pose_keypoint,
)

# ----------------------------------------------------------------------------- helpers


def _person(seed: int, p_present: float = 0.8, scale: float = 500.0) -> OpenPosePerson:
    rng = np.random.default_rng(seed)
    present = rng.random(18) < p_present
    xy = np.where(present[:, None], rng.uniform(-20.0, scale, (18, 2)), 0.0)
    return OpenPosePerson(xy, present)


def _coco_grid() -> np.ndarray:
    """COCO-17 points whose coordinates encode their index: (10 * i, 1000 + i)."""
    i = np.arange(17, dtype=np.float64)
    return np.stack([10.0 * i, 1000.0 + i], axis=1)


coords = st.floats(-200.0, 2000.0, allow_nan=False, allow_infinity=False)


@st.composite
def people_frames(draw):
    """(people, (h, w)) with pixel coordinates (some outside the canvas)."""
    h, w = draw(st.integers(1, 2048)), draw(st.integers(1, 2048))
    people = []
    for _ in range(draw(st.integers(0, 3))):
        present = np.array(draw(st.lists(st.booleans(), min_size=18, max_size=18)))
        xy = np.array(draw(st.lists(st.tuples(coords, coords), min_size=18, max_size=18)))
        xy[~present] = 0.0
        # cn_aux's format reads a person whose present joints all lie within 1 px of the
        # origin as normalised; that ambiguity is documented, not round-trippable.
        assume(not present.any() or (np.abs(xy[present]) > 1.0).any())
        people.append(OpenPosePerson(xy, present))
    return people, (h, w)


# ----------------------------------------------------------------------------- schemas


def test_schema_names_and_sizes():
    assert COCO_KEYPOINTS[:6] == ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder")
    assert COCO_KEYPOINTS[-2:] == ("left_ankle", "right_ankle")
    assert len(COCO_KEYPOINTS) == 17 and len(EXTRA_KEYPOINTS) == 8
    assert ALL_KEYPOINTS == COCO_KEYPOINTS + EXTRA_KEYPOINTS and len(set(ALL_KEYPOINTS)) == 25
    assert len(OPENPOSE18_KEYPOINTS) == 18 and len(set(OPENPOSE18_KEYPOINTS)) == 18
    assert EXTRA_KEYPOINTS[:6] == ("nose_root", "body_upper", "left_thumb", "right_thumb", "left_toe", "right_toe")


def test_skeletons_match_reference_and_connect_the_right_joints():
    assert len(COCO_SKELETON) == 14
    assert {frozenset(p) for p in COCO_SKELETON} == {
        frozenset(p) for p in [(4, 2), (2, 0), (0, 1), (1, 3), (10, 8), (8, 6), (6, 5),
                               (5, 7), (7, 9), (16, 14), (14, 12), (12, 11), (11, 13), (13, 15)]
    }
    named = [(ALL_KEYPOINTS[a], ALL_KEYPOINTS[b]) for a, b in EXTRA_SKELETON]
    assert named == [
        ("nose", "nose_root"), ("left_wrist", "left_thumb"), ("right_wrist", "right_thumb"),
        ("left_ankle", "left_toe"), ("right_ankle", "right_toe"),
    ]


def test_oks_sigmas():
    expected = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62,
                         1.07, 1.07, .87, .87, .89, .89]) / 10.0
    assert len(COCO_OKS_SIGMAS) == 17
    np.testing.assert_array_equal(COCO_OKS_SIGMAS, expected)


def test_errors_are_value_errors_under_the_package_base():
    assert issubclass(PoseFormatError, KeypointError)
    assert issubclass(KeypointError, IllustposeError) and issubclass(KeypointError, ValueError)


# ----------------------------------------------------------------------------- COCO -> OpenPose-18


def test_mapping_constant_is_cn_aux_order():
    # cn_aux wholebody.py: OP18 = [C0, neck, C6, C8, C10, C5, C7, C9, C12, C14, C16, C11, C13, C15, C2, C1, C4, C3]
    assert OPENPOSE18_FROM_COCO17 == (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
    for slot, src in enumerate(OPENPOSE18_FROM_COCO17):
        if src is not None:
            assert OPENPOSE18_KEYPOINTS[slot] == COCO_KEYPOINTS[src]


def test_coco17_to_openpose18_moves_every_joint_and_does_not_swap_eyes_or_ears():
    xy, present = coco17_to_openpose18(_coco_grid(), np.ones(17, bool))
    assert xy.shape == (18, 2) and xy.dtype == np.float64 and present.dtype == bool
    assert present.all()
    src_index = xy[:, 1] - 1000.0  # decodes the COCO index of every slot but the neck
    assert [int(i) for i in src_index[14:]] == [2, 1, 4, 3]  # right eye, left eye, right ear, left ear
    assert OPENPOSE18_KEYPOINTS[14:] == ("right_eye", "left_eye", "right_ear", "left_ear")
    for slot, src in enumerate(OPENPOSE18_FROM_COCO17):
        if src is not None:
            np.testing.assert_array_equal(xy[slot], _coco_grid()[src])


def test_neck_is_the_shoulder_midpoint_only_when_both_shoulders_are_present():
    grid = _coco_grid()
    xy, present = coco17_to_openpose18(grid, np.ones(17, bool))
    np.testing.assert_array_equal(xy[1], (grid[5] + grid[6]) / 2)
    for missing in (5, 6):
        mask = np.ones(17, bool)
        mask[missing] = False
        xy, present = coco17_to_openpose18(grid, mask)
        assert not present[1] and (xy[1] == 0).all()
        slot = OPENPOSE18_FROM_COCO17.index(missing)
        assert not present[slot] and (xy[slot] == 0).all()
        assert present.sum() == 16


def test_coco17_to_openpose18_accepts_the_25_channels_and_ignores_extras():
    xy25 = np.vstack([_coco_grid(), np.full((8, 2), np.nan)])
    a = coco17_to_openpose18(xy25, np.arange(25) % 3 != 0)
    b = coco17_to_openpose18(_coco_grid(), np.arange(17) % 3 != 0)
    np.testing.assert_array_equal(a.xy, b.xy)
    np.testing.assert_array_equal(a.present, b.present)


def test_coco17_to_openpose18_rejects_bad_input():
    with pytest.raises(KeypointError, match=r"\(17, 2\)|K in"):
        coco17_to_openpose18(np.zeros((18, 2)), np.ones(18, bool))
    with pytest.raises(KeypointError, match="present must have shape"):
        coco17_to_openpose18(_coco_grid(), np.ones(16, bool))
    with pytest.raises(KeypointError, match="bool"):
        coco17_to_openpose18(_coco_grid(), np.full(17, 0.5))
    bad = _coco_grid()
    bad[3] = np.nan
    with pytest.raises(KeypointError, match=r"\[3\]"):
        coco17_to_openpose18(bad, np.ones(17, bool))
    mask = np.ones(17, bool)
    mask[3] = False
    assert not coco17_to_openpose18(bad, mask).present[17]  # a NaN absent joint (left ear) is fine


# ----------------------------------------------------------------------------- POSE_KEYPOINT writing


def test_to_pose_keypoint_writes_cn_aux_format():
    person = _person(1)
    value = to_pose_keypoint([[person], []], [(480, 640), (10, 20)])
    assert json.loads(json.dumps(value)) == value  # plain JSON types only
    assert isinstance(value, list) and len(value) == 2
    frame = value[0]
    assert set(frame) == {"people", "canvas_height", "canvas_width"}
    assert (frame["canvas_height"], frame["canvas_width"]) == (480, 640)
    assert type(frame["canvas_height"]) is int
    entry = frame["people"][0]
    assert entry["face_keypoints_2d"] is None
    assert entry["hand_left_keypoints_2d"] is None and entry["hand_right_keypoints_2d"] is None
    flat = entry["pose_keypoints_2d"]
    assert len(flat) == 54 and all(type(v) is float for v in flat)
    triples = np.array(flat).reshape(18, 3)
    np.testing.assert_array_equal(triples[:, 2], person.present.astype(float))
    np.testing.assert_array_equal(triples[~person.present], 0.0)
    np.testing.assert_array_equal(triples[person.present, :2], person.xy[person.present])
    assert value[1]["people"] == []


def test_to_pose_keypoint_rejects_bad_input():
    with pytest.raises(PoseFormatError, match="1 frames but canvas_hw_per_frame has 2"):
        to_pose_keypoint([[]], [(1, 1), (1, 1)])
    with pytest.raises(PoseFormatError, match="canvas_width must be a positive integer"):
        to_pose_keypoint([[]], [(512, 0)])
    with pytest.raises(PoseFormatError, match="canvas_height.*512.0"):
        to_pose_keypoint([[]], [(512.0, 512)])
    with pytest.raises(PoseFormatError, match=r"\(height, width\)"):
        to_pose_keypoint([[]], [512])
    with pytest.raises(KeypointError, match=r"person xy must have shape \(18, 2\)"):
        to_pose_keypoint([[(np.zeros((17, 2)), np.ones(17, bool))]], [(8, 8)])
    with pytest.raises(KeypointError, match="a person must be a pair"):
        to_pose_keypoint([[np.zeros((18, 2))]], [(8, 8)])


# ----------------------------------------------------------------------------- POSE_KEYPOINT reading


def _frame(body, h=400, w=600, **extra):
    return {"people": [{"pose_keypoints_2d": body, **extra}], "canvas_height": h, "canvas_width": w}


def test_parse_accepts_list_dict_and_json_text():
    value = to_pose_keypoint([[_person(2)]], [(400, 600)])
    from_list = parse_pose_keypoint(value)
    from_dict = parse_pose_keypoint(value[0])
    from_text = parse_pose_keypoint(json.dumps(value, indent=4))
    for frames in (from_dict, from_text):
        assert len(frames) == 1 and frames[0].canvas_hw == (400, 600)
        np.testing.assert_array_equal(frames[0].people[0].xy, from_list[0].people[0].xy)
        np.testing.assert_array_equal(frames[0].people[0].present, from_list[0].people[0].present)


def test_parse_confidence_rule_is_cn_aux_c_at_least_one():
    body = [v for i in range(18) for v in (100.0 + i, 50.0 + i, (0.0, 0.7, 0.999, 1.0, 1.5, 2.0)[i % 6])]
    person = parse_pose_keypoint(_frame(body))[0].people[0]
    np.testing.assert_array_equal(person.present, [(i % 6) >= 3 for i in range(18)])
    np.testing.assert_array_equal(person.xy[~person.present], 0.0)
    np.testing.assert_array_equal(person.xy[3], [103.0, 53.0])


def test_parse_normalised_coordinates_are_scaled_per_person():
    norm = [v for i in range(18) for v in (i / 17, 1 - i / 17, 1.0)]
    pix = [v for i in range(18) for v in (i * 30.0, 2.0, 1.0)]
    frame = {"people": [{"pose_keypoints_2d": norm}, {"pose_keypoints_2d": pix}],
             "canvas_height": 400, "canvas_width": 600}
    a, b = parse_pose_keypoint(frame)[0].people
    np.testing.assert_array_equal(a.xy[:, 0], np.arange(18) / 17 * 600.0)
    np.testing.assert_array_equal(a.xy[:, 1], (1 - np.arange(18) / 17) * 400.0)
    np.testing.assert_array_equal(b.xy[:, 0], np.arange(18) * 30.0)


def test_parse_normalised_test_ignores_absent_joints_and_allows_negatives():
    body = [v for i in range(18) for v in ((-0.25, 0.5, 1.0) if i < 9 else (900.0, 900.0, 0.0))]
    person = parse_pose_keypoint(_frame(body))[0].people[0]
    np.testing.assert_array_equal(person.xy[:9], np.tile([-150.0, 200.0], (9, 1)))


def test_parse_empty_and_missing_parts():
    frames = parse_pose_keypoint([
        {"canvas_height": 8, "canvas_width": 8},
        {"people": [{"pose_keypoints_2d": None}, {"pose_keypoints_2d": []}, {}],
         "canvas_height": 8, "canvas_width": 8},
    ])
    assert frames[0].people == []
    assert len(frames[1].people) == 3 and not any(p.present.any() for p in frames[1].people)
    assert parse_pose_keypoint([]) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not valid JSON"),
        (42, "must be a list of frame dicts"),
        ([[1, 2]], "frame 0 must be a dict"),
        ([{"people": [], "canvas_width": 5}], "no 'canvas_height' key"),
        ([{"people": [], "canvas_height": 5.0, "canvas_width": 5}], "canvas_height must be a positive integer"),
        ([{"people": [], "canvas_height": True, "canvas_width": 5}], "canvas_height must be a positive integer"),
        ([{"people": {}, "canvas_height": 5, "canvas_width": 5}], "'people' must be a list"),
        ([{"people": [[0.0]], "canvas_height": 5, "canvas_width": 5}], r"people\[0\] must be a dict"),
        (_frame([1.0] * 51), "54 numbers.*got 51"),
        (_frame([1.0] * 75), "got 75"),
        (_frame([[1.0, 2.0, 1.0]] * 18), "flat list of numbers"),
        (_frame(["1"] * 54), "flat list of numbers"),
        (_frame("1.0, 2.0"), "flat list of numbers"),
        (_frame([float("nan")] * 54), "NaN"),
        ({"version": "ap10k", "animals": [[[1, 2, 1]] * 17], "canvas_height": 5, "canvas_width": 5},
         "animal poses"),
    ],
)
def test_parse_rejects_malformed_values_with_a_clear_message(value, message):
    with pytest.raises(PoseFormatError, match=message):
        parse_pose_keypoint(value)


@settings(max_examples=60, deadline=None)
@given(people_frames())
def test_pose_keypoint_round_trip_is_exact(frame):
    people, hw = frame
    value = json.loads(json.dumps(to_pose_keypoint([people], [hw])))
    [decoded] = parse_pose_keypoint(value)
    assert decoded.canvas_hw == hw and len(decoded.people) == len(people)
    for got, want in zip(decoded.people, people):
        np.testing.assert_array_equal(got.present, want.present)
        np.testing.assert_array_equal(got.xy, want.xy)


def test_as_openpose_person_zeroes_absent_rows_and_copies():
    xy = np.full((18, 2), np.nan)
    xy[0] = (1.5, 2.5)
    present = np.zeros(18, dtype=np.uint8)
    present[0] = 1
    person = as_openpose_person((xy, present))
    assert person.present.dtype == bool and person.present.sum() == 1
    np.testing.assert_array_equal(person.xy[1:], 0.0)
    assert np.isnan(xy[1:]).all()  # the input is not modified


# ----------------------------------------------------------------------------- COCO annotations


def test_coco_categories_is_the_official_person_category():
    cat = coco_categories()
    assert cat["id"] == 1 and cat["name"] == "person" and cat["supercategory"] == "person"
    assert cat["keypoints"] == list(COCO_KEYPOINTS)
    assert len(cat["skeleton"]) == 19 and [16, 14] in cat["skeleton"] and [1, 2] in cat["skeleton"]
    assert all(1 <= i <= 17 for pair in cat["skeleton"] for i in pair)
    cat["keypoints"].append("tail")
    assert len(coco_categories()["keypoints"]) == 17  # a fresh dict each call


def test_coco_annotation_round_trip_and_fields():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 512, (25, 2))
    scores = np.linspace(0.0, 1.0, 25)
    ann = to_coco_annotation(xy, scores, [10, 20, 300, 400], image_id=7, ann_id=3, visibility_threshold=0.5)
    ann = json.loads(json.dumps(ann))
    assert ann["id"] == 3 and ann["image_id"] == 7 and ann["category_id"] == 1
    assert ann["bbox"] == [10.0, 20.0, 300.0, 400.0] and ann["area"] == 120000.0 and ann["iscrowd"] == 0
    assert len(ann["keypoints"]) == 51 and ann["num_keypoints"] == 17
    assert ann["keypoint_scores"] == pytest.approx(scores[:17].tolist())
    assert ann["score"] == pytest.approx(scores[:17].mean())
    assert list(ann["extra_keypoints"]) == list(EXTRA_KEYPOINTS)
    assert ann["extra_keypoints"]["left_toe"] == pytest.approx([*xy[21], scores[21]])
    back_xy, vis = from_coco_annotation(ann)
    np.testing.assert_array_equal(back_xy, xy[:17])
    np.testing.assert_array_equal(vis, np.where(scores[:17] >= 0.5, 2, 1))
    assert vis.dtype == np.int64


def test_coco_annotation_17_keypoints_without_scores():
    ann = to_coco_annotation(_coco_grid(), None, (0, 0, 1, 1))
    assert "extra_keypoints" not in ann and ann["score"] == 1.0 and ann["id"] == 1
    assert ann["keypoints"][2::3] == [2] * 17


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.zeros((18, 2)), None, [0, 0, 1, 1]), {}, "K in"),
        ((np.zeros((17, 2)), np.ones(16), [0, 0, 1, 1]), {}, r"scores must have shape \(17,\)"),
        ((np.zeros((17, 2)), None, [0, 0, 1]), {}, r"bbox_xywh.*\(4,\)"),
        ((np.zeros((17, 2)), None, [0, 0, -1, 1]), {}, ">= 0"),
        ((np.full((17, 2), np.nan), None, [0, 0, 1, 1]), {}, "finite"),
        ((np.zeros((17, 2)), None, [0, 0, 1, 1]), {"ann_id": 0}, "ann_id must be >= 1"),
    ],
)
def test_to_coco_annotation_rejects_bad_input(args, kwargs, message):
    with pytest.raises(KeypointError, match=message):
        to_coco_annotation(*args, **kwargs)


@pytest.mark.parametrize(
    ("ann", "message"),
    [
        ([1, 2, 3], "dict with a 'keypoints'"),
        ({"bbox": [0, 0, 1, 1]}, "dict with a 'keypoints'"),
        ({"keypoints": [0] * 50}, r"\(51,\)"),
        ({"keypoints": [0, 0, 3] * 17}, "v in"),
        ({"keypoints": ["a"] * 51}, "numbers"),
    ],
)
def test_from_coco_annotation_rejects_bad_input(ann, message):
    with pytest.raises(KeypointError, match=message):
        from_coco_annotation(ann)


# ----------------------------------------------------------------------------- mirroring


@pytest.mark.parametrize("schema", [COCO_KEYPOINTS, OPENPOSE18_KEYPOINTS, ALL_KEYPOINTS])
def test_flip_permutation_swaps_sides_by_name(schema):
    perm = flip_permutation(len(schema))
    assert sorted(perm) == list(range(len(schema)))
    assert tuple(perm[i] for i in perm) == tuple(range(len(schema)))
    for i, j in enumerate(perm):
        a, b = schema[i], schema[j]
        if a.startswith(("left_", "right_")):
            assert b.split("_", 1)[1] == a.split("_", 1)[1] and b != a
        else:
            assert a == b


def test_mirror_keypoints_flips_x_and_swaps_sides():
    xy = np.random.default_rng(4).uniform(0, 100, (25, 2))
    out = mirror_keypoints(xy, 100.0)
    lw, rw = ALL_KEYPOINTS.index("left_wrist"), ALL_KEYPOINTS.index("right_wrist")
    lt, rt = ALL_KEYPOINTS.index("left_toe"), ALL_KEYPOINTS.index("right_toe")
    root = ALL_KEYPOINTS.index("nose_root")
    np.testing.assert_array_equal(out[lw], [100.0 - xy[rw, 0], xy[rw, 1]])
    np.testing.assert_array_equal(out[rt], [100.0 - xy[lt, 0], xy[lt, 1]])
    np.testing.assert_array_equal(out[root], [100.0 - xy[root, 0], xy[root, 1]])
    assert out is not xy and not np.shares_memory(out, xy)


def test_mirror_keypoints_batches_and_rejects_bad_input():
    batch = np.random.default_rng(5).uniform(0, 64, (3, 4, 18, 2))
    out = mirror_keypoints(batch, 64)
    np.testing.assert_array_equal(out[2, 1], mirror_keypoints(batch[2, 1], 64))
    with pytest.raises(KeypointError, match="K in"):
        mirror_keypoints(np.zeros((19, 2)), 10)
    with pytest.raises(KeypointError, match="width must be a positive number"):
        mirror_keypoints(np.zeros((17, 2)), 0)
    with pytest.raises(KeypointError, match="num_keypoints"):
        flip_permutation(21)


@settings(max_examples=80, deadline=None)
@given(
    k=st.sampled_from([17, 18, 25]),
    width=st.floats(1.0, 4096.0),
    data=st.data(),
)
def test_mirror_is_an_involution(k, width, data):
    xy = np.array(data.draw(st.lists(st.tuples(coords, coords), min_size=k, max_size=k)))
    twice = mirror_keypoints(mirror_keypoints(xy, width), width)
    np.testing.assert_allclose(twice, xy, rtol=0, atol=1e-9)
    integral = np.round(xy)
    np.testing.assert_array_equal(mirror_keypoints(mirror_keypoints(integral, round(width)), round(width)), integral)
