"""Tests of illustpose.render: OpenPose control images pixel-identical to comfyui_controlnet_aux,
POSE_KEYPOINT rendering and resizing, and the preview overlay."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illustpose.errors import ImageError
from illustpose.keypoints import (
    COCO_SKELETON,
    KeypointError,
    OpenPosePerson,
    PoseFormatError,
    coco17_to_openpose18,
    parse_pose_keypoint,
    to_pose_keypoint,
)
from illustpose.render import (
    OPENPOSE_COLORS,
    OPENPOSE_LIMBS,
    SKELETON_COLORS,
    RenderError,
    draw_openpose,
    draw_skeleton,
    render_pose_keypoint,
)

# ----------------------------------------------------------------------------- an independent
# re-implementation of cn_aux's documented rule (decode_json_as_poses + draw_poses/draw_bodypose),
# working on the raw frame dict.  It shares no code with illustpose.render: the ellipse polygon is
# built here from OpenCV's own recipe (a 1-degree sine table stored as float32 values rounded to 7
# decimals, double-precision rotation, round-half-to-even, consecutive duplicates dropped) and only
# the rasterisers (fillConvexPoly, circle) come from cv2.

LIMB_SEQ_1_BASED = [[2, 3], [2, 6], [3, 4], [4, 5], [6, 7], [7, 8], [2, 9], [9, 10], [10, 11],
                    [2, 12], [12, 13], [13, 14], [2, 1], [1, 15], [15, 17], [1, 16], [16, 18]]
RGB = [[255, 0, 0], [255, 85, 0], [255, 170, 0], [255, 255, 0], [170, 255, 0], [85, 255, 0],
       [0, 255, 0], [0, 255, 85], [0, 255, 170], [0, 255, 255], [0, 170, 255], [0, 85, 255],
       [0, 0, 255], [85, 0, 255], [170, 0, 255], [255, 0, 255], [255, 0, 170], [255, 0, 85]]
SIN_TABLE = np.round(np.sin(np.radians(np.arange(451))), 7).astype(np.float32).astype(np.float64)


def _ellipse_polygon(cx: int, cy: int, a: int, b: int, angle_deg: int) -> np.ndarray:
    angle_deg %= 360
    cos_r, sin_r = SIN_TABLE[450 - angle_deg], SIN_TABLE[angle_deg]
    t = np.arange(361)
    ex, ey = a * SIN_TABLE[450 - t], b * SIN_TABLE[t]
    pts = np.stack([np.rint(cx + ex * cos_r - ey * sin_r), np.rint(cy + ex * sin_r + ey * cos_r)], 1)
    pts = pts.astype(np.int32)
    keep = np.concatenate([[True], (np.diff(pts, axis=0) != 0).any(axis=1)])
    pts = pts[keep]
    return np.array([[cx, cy], [cx, cy]], np.int32) if len(pts) == 1 else pts


def _cn_aux_body(flat, h, w):
    """cn_aux decoding: c < 1 -> None; all present |x|,|y| <= 1 -> scale by (W, H)."""
    if not flat:
        return [None] * 18
    points = [(x, y) if c >= 1.0 else None for x, y, c in zip(flat[0::3], flat[1::3], flat[2::3])]
    known = [p for p in points if p is not None]
    normalised = bool(known) and all(abs(x) <= 1 and abs(y) <= 1 for x, y in known)
    sx, sy = (float(w), float(h)) if normalised else (1.0, 1.0)
    return [None if p is None else (p[0] * sx, p[1] * sy) for p in points]


def cn_aux_render(frame: dict, xinsr: bool = False) -> np.ndarray:
    h, w = frame["canvas_height"], frame["canvas_width"]
    img = np.zeros((h, w, 3), np.uint8)
    long_side = max(h, w)
    half_width = 4 * (min(2 + long_side // 1000, 7) if xinsr and long_side >= 500 else 1)
    for person in frame.get("people", []):
        pts = _cn_aux_body(person.get("pose_keypoints_2d"), h, w)
        for n, (a, b) in enumerate(LIMB_SEQ_1_BASED):
            p, q = pts[a - 1], pts[b - 1]
            if p is None or q is None:
                continue
            ys, xs = np.array([p[1], q[1]]), np.array([p[0], q[0]])
            dist = np.sqrt(np.square(ys[0] - ys[1]) + np.square(xs[0] - xs[1]))
            theta = int(math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1])))
            poly = _ellipse_polygon(int(xs.mean()), int(ys.mean()), int(dist / 2), half_width, theta)
            cv2.fillConvexPoly(img, poly, [int(0.6 * float(c)) for c in RGB[n]])
        for n, p in enumerate(pts[:18]):
            if p is not None:
                cv2.circle(img, (int(p[0]), int(p[1])), 4, RGB[n], -1)
    return img


def test_reference_polygon_matches_cv2_ellipse2poly():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        cx, cy = (int(v) for v in rng.integers(-50, 1500, 2))
        a, b, ang = int(rng.integers(0, 900)), int(rng.integers(0, 40)), int(rng.integers(-180, 181))
        np.testing.assert_array_equal(_ellipse_polygon(cx, cy, a, b, ang), cv2.ellipse2Poly((cx, cy), (a, b), ang, 0, 360, 1))


# ----------------------------------------------------------------------------- strategies

coord = st.floats(-0.2, 1.2, allow_nan=False)
confidence = st.sampled_from([0.0, 0.0, 0.3, 0.99, 1.0, 1.0, 1.0, 1.0, 1.7])


@st.composite
def raw_frames(draw, max_side=900):
    """A raw POSE_KEYPOINT frame as another tool might write it: pixel or normalised people,
    real-valued confidences, some joints off the canvas, sometimes no body."""
    h, w = draw(st.integers(16, max_side)), draw(st.integers(16, max_side))
    people = []
    for _ in range(draw(st.integers(0, 3))):
        normalised = draw(st.booleans())
        sx, sy = (1.0, 1.0) if normalised else (float(w), float(h))
        flat = []
        for _ in range(18):
            flat += [draw(coord) * sx, draw(coord) * sy, draw(confidence)]
        people.append({"pose_keypoints_2d": flat if draw(st.integers(0, 9)) else None})
    return {"people": people, "canvas_height": h, "canvas_width": w}


# ----------------------------------------------------------------------------- OpenPose drawing


def test_limbs_and_colours_are_cn_aux_tables():
    assert OPENPOSE_LIMBS == tuple((a - 1, b - 1) for a, b in LIMB_SEQ_1_BASED)
    assert OPENPOSE_COLORS == tuple(tuple(c) for c in RGB)


@settings(max_examples=120, deadline=None)
@given(raw_frames())
def test_render_matches_independent_cn_aux_implementation(frame):
    [ours] = render_pose_keypoint([frame])
    np.testing.assert_array_equal(ours, cn_aux_render(frame))


@pytest.mark.parametrize("hw", [(499, 400), (500, 320), (1200, 900), (700, 2100)])
def test_xinsr_stick_scaling_matches_cn_aux(hw):
    h, w = hw
    people = [coco17_to_openpose18(np.random.default_rng(s).uniform(0, 1, (17, 2)) * [w, h], np.ones(17, bool))
              for s in range(3)]
    value = to_pose_keypoint([people], [hw])
    [ours] = render_pose_keypoint(value, xinsr_stick_scaling=True)
    np.testing.assert_array_equal(ours, cn_aux_render(value[0], xinsr=True))
    assert ours.shape == (h, w, 3) and ours.dtype == np.uint8


@settings(max_examples=60, deadline=None)
@given(raw_frames(max_side=700))
def test_pose_keypoint_round_trip_renders_identical_pixels(frame):
    [decoded] = parse_pose_keypoint(frame)
    direct = draw_openpose(decoded.people, decoded.canvas_hw)
    text = json.dumps(to_pose_keypoint([decoded.people], [decoded.canvas_hw]))
    np.testing.assert_array_equal(render_pose_keypoint(text)[0], direct)


def test_draw_openpose_paints_limbs_dimmed_then_joints():
    xy = np.zeros((18, 2))
    present = np.zeros(18, bool)
    xy[1], xy[2] = (50, 50), (150, 50)  # neck and right shoulder: limb 0
    present[[1, 2]] = True
    img = draw_openpose([OpenPosePerson(xy, present)], (100, 200))
    assert img.shape == (100, 200, 3) and img.dtype == np.uint8
    assert tuple(img[50, 100]) == (153, 0, 0)  # limb 0 colour * 0.6
    assert tuple(img[50, 50]) == OPENPOSE_COLORS[1] and tuple(img[50, 150]) == OPENPOSE_COLORS[2]
    assert (img[:40] == 0).all()  # black background
    assert (draw_openpose([], (3, 4)) == 0).all()


def test_draw_openpose_rejects_bad_arguments():
    with pytest.raises(RenderError, match="canvas_hw"):
        draw_openpose([], (0, 10))
    with pytest.raises(RenderError, match="canvas_hw"):
        draw_openpose([], 512)
    with pytest.raises(RenderError, match="stick_width"):
        draw_openpose([], (8, 8), stick_width=0)
    with pytest.raises(KeypointError, match=r"\(18, 2\)"):
        draw_openpose([(np.zeros((17, 2)), np.ones(17, bool))], (8, 8))


# ----------------------------------------------------------------------------- DWPose example

W, H = 640, 480
BODY_PX = [
    320.5, 80.2, 1.0,  321.0, 140.7, 1.0,  270.3, 142.0, 1.0,  250.9, 210.4, 1.0,
    238.1, 275.6, 1.0,  371.7, 139.2, 1.0,  392.2, 208.8, 1.0,  401.4, 270.0, 1.0,
    290.0, 280.5, 1.0,  286.6, 360.3, 1.0,  0.0, 0.0, 0.0,  350.2, 281.1, 1.0,
    354.9, 362.2, 1.0,  0.0, 0.0, 0.0,  308.8, 70.1, 1.0,  332.4, 69.9, 1.0,
    296.0, 78.3, 1.0,  0.0, 0.0, 0.0,
]
FACE_PX = [v for i in range(70) for v in (300.0 + (i % 10) * 4.0, 60.0 + (i // 10) * 4.0, 1.0)]
HAND_LEFT_PX = [v for i in range(21) for v in (400.0 + (i % 5) * 3.0, 275.0 + (i // 5) * 3.0, 1.0)]
HAND_RIGHT_PX = [v for i in range(21) for v in (236.0 - (i % 5) * 3.0, 280.0 + (i // 5) * 3.0, 1.0)]


def _dwpose_value(normalised: bool) -> list:
    """What cn_aux's DWPose Estimator emits (POSE_KEYPOINT with face and hands), pixel or normalised."""
    def scale(flat):
        if not normalised:
            return list(flat)
        return [v / (W if k % 3 == 0 else H) if k % 3 < 2 else v for k, v in enumerate(flat)]
    return [{
        "people": [{
            "pose_keypoints_2d": scale(BODY_PX),
            "face_keypoints_2d": scale(FACE_PX),
            "hand_left_keypoints_2d": scale(HAND_LEFT_PX),
            "hand_right_keypoints_2d": scale(HAND_RIGHT_PX),
        }],
        "canvas_height": H,
        "canvas_width": W,
    }]


def test_dwpose_example_renders_in_both_coordinate_variants():
    pixel = render_pose_keypoint(_dwpose_value(False))[0]
    norm = render_pose_keypoint(json.dumps(_dwpose_value(True)))[0]
    body_only = [{"people": [{"pose_keypoints_2d": BODY_PX}], "canvas_height": H, "canvas_width": W}]
    np.testing.assert_array_equal(pixel, render_pose_keypoint(body_only)[0])  # face and hands ignored
    np.testing.assert_array_equal(pixel, cn_aux_render(_dwpose_value(False)[0]))
    np.testing.assert_array_equal(norm, cn_aux_render(_dwpose_value(True)[0]))
    assert pixel.shape == (H, W, 3) and pixel.any()
    # normalised coordinates scale back to (almost) the same pixels; int() may move a few edges
    assert np.mean(np.any(pixel != norm, axis=2)) < 0.002
    [frame] = parse_pose_keypoint(_dwpose_value(False))
    assert frame.people[0].present.sum() == 15
    assert tuple(pixel[int(80.2), int(320.5)]) == OPENPOSE_COLORS[0]  # the nose joint


# ----------------------------------------------------------------------------- resolution


def test_render_resolution_resizes_short_side_like_the_dwpose_node():
    value = _dwpose_value(False) * 2
    [native, _] = render_pose_keypoint(value)
    up = render_pose_keypoint(value, resolution=1024)
    down = render_pose_keypoint(value, 240)
    assert len(up) == 2 and up[0].shape == (1024, 1365, 3)  # 640 * 1024/480 = 1365.33
    assert down[0].shape == (240, 320, 3)
    np.testing.assert_array_equal(up[0], cv2.resize(native, (1365, 1024), interpolation=cv2.INTER_CUBIC))
    np.testing.assert_array_equal(down[0], cv2.resize(native, (320, 240), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(render_pose_keypoint(value, 480)[0], native)


def test_render_resolution_rounds_half_to_even():
    # 3 x 5 canvas, short side 3 -> 5: 5 * 5/3 = 8.33 -> 8; 2 x 5 canvas to 3: 7.5 -> 8 (even)
    frame = {"people": [], "canvas_height": 2, "canvas_width": 5}
    assert render_pose_keypoint(frame, 3)[0].shape == (3, 8, 3)
    frame = {"people": [], "canvas_height": 2, "canvas_width": 9}
    assert render_pose_keypoint(frame, 3)[0].shape == (3, 14, 3)  # 13.5 -> 14


def test_render_pose_keypoint_rejects_bad_values():
    with pytest.raises(RenderError, match="resolution"):
        render_pose_keypoint(_dwpose_value(False), resolution=0)
    with pytest.raises(RenderError, match="resolution"):
        render_pose_keypoint(_dwpose_value(False), resolution=512.0)
    with pytest.raises(PoseFormatError):
        render_pose_keypoint("[{}]")


# ----------------------------------------------------------------------------- preview overlay


def _pose25(size: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.uniform(0.15 * size, 0.85 * size, (25, 2))


def test_draw_skeleton_is_deterministic_and_leaves_the_input_alone():
    image = np.full((256, 256, 3), 40, np.uint8)
    before = image.copy()
    a = draw_skeleton(image, _pose25(256), None, bbox_xywh=[20, 30, 200, 210], draw_extra=True)
    b = draw_skeleton(image, _pose25(256), None, bbox_xywh=[20, 30, 200, 210], draw_extra=True)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image, before)
    assert a.dtype == np.uint8 and a.shape == image.shape and (a != image).any()
    assert len(SKELETON_COLORS) == 14 and len(set(SKELETON_COLORS)) == 14


def test_draw_skeleton_threshold_hides_joints_and_their_parts():
    image = np.zeros((300, 300, 3), np.uint8)
    xy = np.zeros((17, 2))
    xy[5], xy[7] = (100, 100), (200, 100)  # left shoulder -> left elbow: part (5, 7)
    xy[[0, 1, 2, 3, 4, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16]] = (50, 250)
    scores = np.zeros(17)
    scores[[5, 7]] = 0.9
    shown = draw_skeleton(image, xy, scores, threshold=0.5)
    part = SKELETON_COLORS[COCO_SKELETON.index((5, 7))]
    assert tuple(shown[100, 150]) == part and tuple(shown[100, 100]) == (255, 0, 0)
    assert not shown[240:260, 40:60].any()  # every low-score joint stays undrawn
    hidden = draw_skeleton(image, xy, np.where(np.arange(17) == 7, 0.1, scores), threshold=0.5)
    assert not hidden[100, 150].any() and not hidden[100, 200].any()


def test_draw_skeleton_line_width_scales_with_image_size():
    def thickness(size):  # painted rows across a horizontal left shoulder -> left elbow part
        xy = np.full((17, 2), size / 2)
        xy[5], xy[7] = (0.1 * size, size / 2), (0.9 * size, size / 2)
        img = draw_skeleton(np.zeros((size, size, 3), np.uint8), xy, np.eye(17)[5] + np.eye(17)[7], threshold=0.5)
        return np.count_nonzero(img[:, int(0.3 * size)].max(axis=1) >= 128)
    assert 1 <= thickness(64) < thickness(512)
    assert thickness(1024) >= thickness(512) + 4 >= 5 + 4  # 5 px at 512 as the reference, 10 at 1024


def test_draw_skeleton_rejects_bad_input():
    img = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ImageError, match=r"uint8 \(H, W, 3\)"):
        draw_skeleton(img.astype(np.float32), _pose25(32)[:17])
    with pytest.raises(ImageError, match="drop alpha"):
        draw_skeleton(np.zeros((32, 32, 4), np.uint8), _pose25(32)[:17])
    with pytest.raises(KeypointError, match=r"\(17, 2\) or \(25, 2\)"):
        draw_skeleton(img, np.zeros((18, 2)))
    with pytest.raises(KeypointError, match="draw_extra"):
        draw_skeleton(img, _pose25(32)[:17], draw_extra=True)
    with pytest.raises(KeypointError, match=r"scores must have shape \(25,\)"):
        draw_skeleton(img, _pose25(32), np.ones(17))
    with pytest.raises(KeypointError, match="NaN"):
        draw_skeleton(img, np.full((17, 2), np.nan))
    assert (draw_skeleton(img, np.full((17, 2), np.nan), np.zeros(17), threshold=0.5) == 0).all()
