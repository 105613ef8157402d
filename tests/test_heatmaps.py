"""Heatmap decoding and placement (illustpose.heatmaps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from illustpose.geometry import Cropbox
from illustpose.heatmaps import decode_heatmaps, heatmap_on_image, pose_heatmap
from illustpose.results import PoseResult


def test_a_heatmap_cell_lands_on_the_image_pixels_its_keypoint_maps_to():
    """Cell (5, 7) of a 32x32 heatmap over a 64 px crop at (row 10, col 20) covers image rows
    10 + 2*5 .. +2 and cols 20 + 2*7 .. +2: pixels (20..21, 34..35)."""
    heat = np.zeros((32, 32))
    heat[5, 7] = 1.0
    crop = Cropbox((10.0, 20.0), (64.0, 64.0), (64.0, 64.0))
    placed = heatmap_on_image(heat, crop, (60, 80))
    assert placed.shape == (60, 80) and placed.dtype == np.float32
    rows, cols = np.nonzero(placed == placed.max())
    assert sorted(set(rows.tolist())) == [20, 21] and sorted(set(cols.tolist())) == [34, 35]
    assert placed.max() == pytest.approx(0.75 * 0.75)  # bilinear: each pixel centre is a quarter cell off on both axes


def test_decoded_keypoint_is_the_top_left_corner_of_the_peak_cell():
    logits = torch.full((1, 2, 16, 16), -8.0)
    logits[0, 0, 3, 11] = 8.0
    logits[0, 1, 15, 0] = 8.0
    rc, scores, _ = decode_heatmaps(logits, (64, 64), smoothing=None)
    assert rc[0].tolist() == [[12.0, 44.0], [60.0, 0.0]]  # (row, col) * 64 / 16, no +0.5
    assert torch.allclose(scores, torch.sigmoid(torch.tensor(8.0)).expand(1, 2))


def test_pose_heatmap_needs_heatmaps_and_a_known_joint():
    crop = Cropbox((0.0, 0.0), (8.0, 8.0), (8.0, 8.0))
    bare = PoseResult(np.zeros((25, 2)), np.zeros(25), (0, 0, 8, 8), crop, (8, 8))
    with pytest.raises(ValueError, match="return_heatmaps=True"):
        pose_heatmap(bare)
    full = PoseResult(np.zeros((25, 2)), np.zeros(25), (0, 0, 8, 8), crop, (8, 8), heatmaps=np.zeros((25, 4, 4)))
    with pytest.raises(ValueError, match="unknown joint 'tail'"):
        pose_heatmap(full, "tail")
    assert pose_heatmap(full).shape == (8, 8) and float(pose_heatmap(full, "nose").max()) == pytest.approx(0.5)
