"""Crop algebra (illustpose.geometry): the pose crop in closed form, scalar and batched forms equal
bit for bit, inverses that round-trip, the heatmap grid map, bbox rules and letterboxing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illustpose.errors import KeypointError
from illustpose.geometry import (
    Cropbox,
    bbox_from_mask,
    bbox_rc_to_xywh,
    bbox_xywh_to_rc,
    compose_cropboxes,
    crop_frame_points,
    crop_to_image_affine,
    cropbox_points,
    fit_in_square,
    invert_cropbox,
    pose_cropbox,
    rc_to_xy,
    resize_max_size,
    resize_min_size,
    square_cropbox,
    xy_to_rc,
)
from illustpose.registry import POSE_CROP_PADDING, POSE_CROP_SIZE

bboxes = st.tuples(st.integers(-50, 500), st.integers(-50, 500), st.integers(1, 800), st.integers(1, 800))


@settings(max_examples=200, deadline=None)
@given(bboxes)
def test_pose_crop_is_a_padded_square_centred_on_the_bbox(bbox_rc):
    """Closed form of the reference's bbox -> centred square -> padding steps."""
    r0, c0, h, w = bbox_rc
    cb = pose_cropbox(bbox_rc, POSE_CROP_SIZE, POSE_CROP_PADDING)
    side = (1 + POSE_CROP_PADDING) * max(h, w)
    assert cb.to_size == (POSE_CROP_SIZE, POSE_CROP_SIZE)
    assert cb.from_size == pytest.approx((side, side), rel=1e-12)
    # centred, up to the reference's floor division of an odd difference
    centre = np.add(cb.from_corner, np.divide(cb.from_size, 2))
    assert np.abs(centre - (r0 + h / 2, c0 + w / 2)).max() <= 0.5 + 1e-9


@settings(max_examples=200, deadline=None)
@given(bboxes, st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=1, max_size=25))
def test_points_round_trip_through_the_crop_and_its_inverse(bbox_rc, points):
    cb = pose_cropbox(bbox_rc, POSE_CROP_SIZE, POSE_CROP_PADDING)
    pts = np.asarray(points)
    back = cropbox_points(cropbox_points(pts, cb), invert_cropbox((600, 700), cb))
    np.testing.assert_allclose(back, pts, rtol=1e-9, atol=1e-7)


def test_compose_applies_the_first_crop_then_the_second():
    first = Cropbox((10.0, 20.0), (100.0, 50.0), (200.0, 100.0))
    second = Cropbox((-4.0, 6.0), (80.0, 80.0), (40.0, 40.0))
    pts = np.array([[0.0, 0.0], [13.5, -7.0], [120.0, 60.0]])
    np.testing.assert_allclose(cropbox_points(pts, compose_cropboxes(first, second)),
                               cropbox_points(cropbox_points(pts, first), second), rtol=1e-12)


def test_batched_crop_equals_the_scalar_crop_bit_for_bit():
    rng = np.random.default_rng(0)
    n = 300
    bbox = np.column_stack([rng.integers(-20, 300, n), rng.integers(-20, 300, n),
                            rng.integers(1, 400, (n, 2))]).astype(np.float64)
    xy = rng.uniform(-100, 600, (n, 25, 2))
    xy[3, 4] = np.nan  # absent joints stay NaN
    got = crop_frame_points(xy, bbox, size=POSE_CROP_SIZE, padding=POSE_CROP_PADDING)
    for i in range(n):
        cb = pose_cropbox(bbox_xywh_to_rc(bbox[i]), POSE_CROP_SIZE, POSE_CROP_PADDING)
        np.testing.assert_array_equal(got[i], cropbox_points(xy_to_rc(xy[i]), cb))


@pytest.mark.parametrize("bbox, shape", [([[0, 0, 0, 5]], (1, 25, 2)), ([[0, 0, 5, np.inf]], (1, 25, 2)),
                                         ([[0, 0, 5, 5]], (2, 25, 2)), ([[0, 0, 5, 5]], (1, 25))])
def test_batched_crop_refuses_bad_input(bbox, shape):
    with pytest.raises(KeypointError, match="bbox_xywh"):
        crop_frame_points(np.zeros(shape), np.asarray(bbox, float), size=256, padding=0.1)


def test_the_heatmap_grid_maps_like_the_keypoints_inverse_crop():
    cb = pose_cropbox((30, 40, 120, 80), POSE_CROP_SIZE, POSE_CROP_PADDING)
    affine = crop_to_image_affine(cb, (128, 128))
    cells_xy = np.array([[0.0, 0.0], [5.0, 7.0], [127.0, 64.0]])
    via_affine = cells_xy @ affine[:, :2].T + affine[:, 2]
    crop_rc = xy_to_rc(cells_xy) * (POSE_CROP_SIZE / 128)  # a cell's top-left corner in crop pixels
    via_inverse = rc_to_xy(cropbox_points(crop_rc, invert_cropbox((400, 300), cb)))
    np.testing.assert_allclose(via_affine, via_inverse, rtol=1e-12)


def test_bbox_from_mask_grows_one_pixel_up_and_left_only():
    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 10:17] = 200
    mask[12, 3] = 127  # 127 / 255 < 0.5: not counted
    assert bbox_from_mask(mask) == (4, 9, 5, 8)  # rows 4..8, cols 9..16 (max + 1 is the exclusive end)
    assert bbox_from_mask(np.zeros((6, 9), np.uint8)) == (0, 0, 6, 9)  # empty: the whole image
    assert bbox_rc_to_xywh(bbox_from_mask(mask)) == [9, 4, 8, 5]
    assert bbox_xywh_to_rc([9, 4, 8, 5]) == (4, 9, 5, 8)


def test_resizes_truncate_and_the_square_centres_with_floor_division():
    assert resize_min_size((300, 200), 256) == (384, 256)
    assert resize_min_size((199, 300), 256) == (256, 385)
    assert resize_max_size((300, 201), 256) == (256, 171)
    assert square_cropbox((100, 201), 256) == Cropbox((-51, 0), (201, 201), (256, 256))  # -101 // 2 = -51
    assert square_cropbox((201, 100), 256) == Cropbox((0, -51), (201, 201), (256, 256))


def test_fit_in_square_places_the_picture_centred():
    assert fit_in_square(400, 200, 100) == (100, 50, 0, 25)
    assert fit_in_square(3, 1000, 64) == (1, 64, 31, 0)  # never thinner than a pixel


def test_rc_and_xy_swap_the_last_axis_only():
    pts = np.arange(12.0).reshape(2, 3, 2)
    assert np.array_equal(rc_to_xy(pts)[..., 0], pts[..., 1]) and np.array_equal(xy_to_rc(rc_to_xy(pts)), pts)
