"""Golden fidelity: our pipeline, loading released-format checkpoints, equals the reference.

Golden outputs: ../shared/fidelity/golden/<stem>.npz, computed by the reference code with the
weights of ../shared/fidelity/weights_rule.py.  Tolerances are the ones its README gives.
"""

from __future__ import annotations

import numpy as np
import pytest

from checkpoint_factory import AUTHORS_PATHS
from shared_data import SAMPLE_STEMS, SAMPLES, load_golden
from illustpose.geometry import heatmap_cell_xy
from illustpose.images import load_image
from illustpose.pipeline import Pipeline
from illustpose.models.pose import PoseEstimator
from illustpose.models.segmenter import CharacterSegmenter
from illustpose.models.tagger import DanbooruTagger


@pytest.fixture(scope="module")
def pipeline(authors_tree, device):
    """Detectors loaded from the authors' Lightning .ckpt files (tag names found beside them), in
    fp32 on ``--device`` (on CUDA with TF32 off: the same tolerances hold)."""
    return Pipeline(
        CharacterSegmenter.from_pretrained(authors_tree / AUTHORS_PATHS["segmenter"], device=device),
        DanbooruTagger.from_pretrained(authors_tree / AUTHORS_PATHS["tagger"], search_dirs=[authors_tree],
                                       device=device),
        PoseEstimator.from_pretrained(authors_tree / AUTHORS_PATHS["feat_match+data"], device=device),
    )


@pytest.fixture(scope="module")
def outputs(pipeline):
    images = [load_image(SAMPLES / f"{s}.png") for s in SAMPLE_STEMS]
    return dict(zip(SAMPLE_STEMS, pipeline.annotate(images, return_heatmaps=True)))


def assert_keypoints_match(pose, g):
    """Keypoints exact; a move to an adjacent cell only where the golden flags a near-tie."""
    cell_rc = heatmap_cell_xy(pose.cropbox, g["pose_logits"].shape[-1])[::-1]
    got_rc = pose.keypoints[:, ::-1]
    for j in range(25):
        if np.array_equal(got_rc[j], g["pose_keypoints_rc"][j]):
            continue
        assert g["pose_gap1"][j] < 1e-5, f"joint {j} moved without a near-tie: {got_rc[j]} vs {g['pose_keypoints_rc'][j]}"
        assert np.all(np.abs(got_rc[j] - g["pose_keypoints_rc"][j]) <= cell_rc + 1e-9), f"joint {j} moved too far"


@pytest.mark.parametrize("stem", SAMPLE_STEMS)
def test_matches_reference(outputs, stem):
    g, a = load_golden(stem), outputs[stem]
    np.testing.assert_allclose(a.tags.logits, g["tagger_logits"], rtol=0, atol=5e-4)
    np.testing.assert_allclose(np.asarray(list(a.tags.scores.values())), g["tagger_probs"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.segmentation.probability, g["seg_fg_prob"], rtol=0, atol=2e-4)
    assert np.abs(a.segmentation.mask.astype(int) - g["seg_mask_u8"]).max() <= 1
    assert list(a.segmentation.bbox_xywh) == g["bbox_xywh"].tolist()
    assert a.segmentation.bbox_rc_hw == tuple(g["bbox_rc_hw"].ravel().tolist())
    assert np.array_equal(a.pose.cropbox.as_array(), g["cropbox"])
    np.testing.assert_allclose(a.pose.heatmaps, g["pose_logits"], rtol=0, atol=5e-4)
    assert_keypoints_match(a.pose, g)
    assert a.pose.keypoints.dtype == np.float64 and a.pose.scores.shape == (25,)
    assert np.all((a.pose.scores >= 0) & (a.pose.scores <= 1))


def test_xy_is_rc_swapped(outputs):
    g, a = load_golden(SAMPLE_STEMS[0]), outputs[SAMPLE_STEMS[0]]
    np.testing.assert_array_equal(a.pose.keypoints, g["pose_keypoints_xy"])
