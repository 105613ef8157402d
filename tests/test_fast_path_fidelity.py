"""The fast paths against the reference's golden outputs (../shared/fidelity), on the sample
illustrations: fp16 keeps keypoints within one heatmap cell, compiled fp32 stays within the
float tolerances.  Both run the pose stage from the golden bbox, so the pose model alone is
judged (the segmenter's half-precision bbox shifts are measured in benchmarks/bench_precision.py).
"""

from __future__ import annotations

import math
import shutil
import warnings

import numpy as np
import pytest

from checkpoint_factory import AUTHORS_PATHS
from shared_data import SAMPLE_STEMS, SAMPLES, load_golden
from illustpose.geometry import heatmap_cell_xy
from illustpose.images import load_image
from illustpose.models.pose import PoseEstimator


@pytest.fixture(scope="module")
def samples():
    return [load_image(SAMPLES / f"{s}.png") for s in SAMPLE_STEMS], [load_golden(s) for s in SAMPLE_STEMS]


def _estimate(pose: PoseEstimator, samples):
    images, goldens = samples
    return pose.estimate(images, [g["bbox_xywh"].tolist() for g in goldens], return_heatmaps=True), goldens


def test_fp16_keypoints_within_one_heatmap_cell_on_99_percent_of_joints(authors_tree, samples, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fp16 on a CPU is slow: expected here
        pose = PoseEstimator.from_pretrained(authors_tree / AUTHORS_PATHS["feat_match+data"], precision="fp16",
                                             device=device)
    results, goldens = _estimate(pose, samples)
    within = [np.all(np.abs(r.keypoints - g["pose_keypoints_xy"]) <= heatmap_cell_xy(r.cropbox, 128) + 1e-9, axis=1)
              for r, g in zip(results, goldens)]
    joints = np.concatenate(within)
    assert joints.sum() >= math.ceil(0.99 * joints.size), f"{joints.sum()} of {joints.size} joints within one cell"


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_fp32_within_golden_tolerances(authors_tree, samples, device):
    pose = PoseEstimator.from_pretrained(authors_tree / AUTHORS_PATHS["feat_match+data"], device=device).compile()
    results, goldens = _estimate(pose, samples)
    for r, g in zip(results, goldens):
        np.testing.assert_allclose(r.heatmaps, g["pose_logits"], rtol=0, atol=5e-4)
        cell = heatmap_cell_xy(r.cropbox, 128)
        moved = ~np.all(r.keypoints == g["pose_keypoints_xy"], axis=1)
        assert np.all(g["pose_gap1"][moved] < 1e-5), "a keypoint moved without a near-tie in the golden"
        assert np.all(np.abs(r.keypoints - g["pose_keypoints_xy"]) <= cell + 1e-9)
