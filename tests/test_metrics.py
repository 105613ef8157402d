"""Tests of illustpose.metrics: hand-made cases with known answers, COCO agreement, properties."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from illustpose import metrics as M
from illustpose.errors import IllustposeError
from illustpose.keypoints import COCO_KEYPOINTS, flip_permutation

DATA = Path(__file__).parent / "data"
J = {name: i for i, name in enumerate(COCO_KEYPOINTS)}

# A frontal figure on a 64 x 128 px box (max side 128, a power of two, so normalised
# coordinates are exact): head size nose -> shoulder midpoint = 32 px, torso diagonal
# left_hip -> right_shoulder = 40 px (a 24-32-40 triangle), left forearm 32 px.
_FIGURE = {
    "nose": (32, 16), "left_eye": (36, 12), "right_eye": (28, 12), "left_ear": (40, 14),
    "right_ear": (24, 14), "left_shoulder": (48, 48), "right_shoulder": (16, 48),
    "left_elbow": (56, 64), "right_elbow": (8, 64), "left_wrist": (56, 96), "right_wrist": (8, 96),
    "left_hip": (40, 80), "right_hip": (24, 80), "left_knee": (40, 104), "right_knee": (24, 104),
    "left_ankle": (40, 124), "right_ankle": (24, 124),
}
GT = np.array([_FIGURE[n] for n in COCO_KEYPOINTS], dtype=np.float64)
BOX = np.array([0.0, 0.0, 64.0, 128.0])


def moved(joint: str, dx: float, dy: float = 0.0) -> np.ndarray:
    """GT with one joint displaced by (dx, dy) pixels."""
    pred = GT.copy()
    pred[J[joint]] += (dx, dy)
    return pred


def load_samples():
    """(gt (B,17,2), visibility (B,17), bbox (B,4), raw dict) of tests/data/samples_coco.json."""
    raw = json.loads((DATA / "samples_coco.json").read_text())
    triples = np.array([a["keypoints"] for a in raw["annotations"]], dtype=np.float64).reshape(-1, 17, 3)
    bbox = np.array([a["bbox"] for a in raw["annotations"]], dtype=np.float64)
    return triples[..., :2], triples[..., 2].astype(int), bbox, raw


# --------------------------------------------------------------------------- known answers


def test_perfect_prediction_scores_one_everywhere():
    gt, vis, bbox, _ = load_samples()
    results = M.evaluate(gt, bbox, gt.copy(), visible=vis)
    assert set(results) == set(M.SUMMARY_METRICS)
    for name, r in results.items():
        assert r.mean == 1.0, name
        assert np.all(r.per_sample == 1.0) and np.all(r.per_item == 1.0), name
        assert r.valid.all(), name
    assert np.all(results["oks@0.5"].similarities == 1.0)


def test_distances_are_divided_by_the_longer_bbox_side():
    r = M.pck(GT, BOX, moved("left_knee", 0, 12.8), k=0.5)
    assert r.distances.shape == (1, 17)
    assert r.distances[0, J["left_knee"]] == pytest.approx(12.8 / 128)
    assert np.count_nonzero(r.distances) == 1


def test_single_pose_input_is_a_batch_of_one():
    r = M.pdj(GT, BOX, GT)
    assert r.correct.shape == (1, 17) and r.per_sample.shape == (1,)


@pytest.mark.parametrize(
    ("k", "mode", "box", "limit_px"),
    [
        (0.5, "h", BOX, 16.0),  # PCKh@0.5: 0.5 * 32 px head size
        (0.25, "pdj", BOX, 10.0),  # PDJ@0.25: 0.25 * 40 px torso diagonal
        (0.5, "bbox_diag", [0.0, 0.0, 96.0, 128.0], 80.0),  # 0.5 * 160 px diagonal
    ],
)
def test_pck_threshold_is_inclusive(k, mode, box, limit_px):
    def knee_correct(dx):
        return M.pck(GT, box, moved("left_knee", dx), k=k, mode=mode).correct[0, J["left_knee"]]

    assert knee_correct(limit_px)
    assert not knee_correct(limit_px * (1 + 1e-9))


def test_pcp_threshold_is_inclusive_and_needs_both_endpoints():
    # left_elbow -> left_wrist is 32 px long; PCP@0.5 allows 16 px per endpoint.
    part = M.PCP_PART_NAMES.index("left_elbow-left_wrist")
    assert M.pcp(GT, BOX, moved("left_wrist", 16.0)).correct[0, part]
    assert not M.pcp(GT, BOX, moved("left_wrist", 16.001)).correct[0, part]
    # moving the shared elbow breaks both parts that contain it
    r = M.pcp(GT, BOX, moved("left_elbow", 40.0))
    broken = {M.PCP_PART_NAMES[i] for i in np.flatnonzero(~r.correct[0])}
    assert broken == {"left_shoulder-left_elbow", "left_elbow-left_wrist"}
    assert r.per_sample[0] == pytest.approx(12 / 14)


def test_oks_threshold_is_inclusive():
    pred = moved("right_wrist", 3.0, 4.0)
    sim = M.oks(GT, BOX, pred).similarities[0, J["right_wrist"]]
    assert 0 < sim < 1
    assert M.oks(GT, BOX, pred, thresh=sim).correct[0, J["right_wrist"]]
    assert not M.oks(GT, BOX, pred, thresh=np.nextafter(sim, 1.0)).correct[0, J["right_wrist"]]


def test_oks_similarity_formula_uses_undoubled_sigma_and_bbox_area():
    d_px = 5.0
    r = M.oks(GT, BOX, moved("left_hip", d_px))
    sigma = 0.107
    expected = math.exp(-(d_px**2) / (2 * (64 * 128) * sigma**2))
    assert r.similarities[0, J["left_hip"]] == pytest.approx(expected, rel=1e-12)


def test_swapped_left_right():
    pred = GT[list(flip_permutation(17))]
    r = M.pck(GT, BOX, pred, k=0.5, mode="h")
    # a swapped joint is off by its pair's left-right spacing; PCKh@0.5 allows 16 px:
    # shoulders (32 px), elbows (48) and wrists (48) miss; eyes (8) hit; ears, hips, knees
    # and ankles (16 px, exactly the limit) hit because the threshold is inclusive.
    missed = {COCO_KEYPOINTS[i] for i in np.flatnonzero(~r.correct[0])}
    assert missed == {f"{side}_{part}" for side in ("left", "right") for part in ("shoulder", "elbow", "wrist")}
    assert M.oks(GT, BOX, pred).per_item[J["nose"]] == 1.0
    assert M.oks(GT, BOX, pred).per_item[J["left_shoulder"]] == 0.0


def test_unlabelled_joints_are_excluded_but_hidden_ones_count():
    gt = GT.copy()
    gt[J["left_ankle"]] = 0.0  # COCO stores v=0 joints as 0, 0
    pred = GT.copy()
    vis = np.full(17, 2)
    vis[J["left_ankle"]] = 0
    # the reference (no mask) scores the bogus (0, 0) joint as a miss
    assert M.pck(gt, BOX, pred, mode="h").per_sample[0] == pytest.approx(16 / 17)
    r = M.pck(gt, BOX, pred, mode="h", visible=vis)
    assert r.per_sample[0] == 1.0 and r.mean == 1.0
    assert math.isnan(r.per_item[J["left_ankle"]]) and not r.valid[0, J["left_ankle"]]
    p = M.pcp(gt, BOX, pred, visible=vis)
    assert not p.valid[0, M.PCP_PART_NAMES.index("left_knee-left_ankle")] and p.mean == 1.0
    # v=1 (labelled, not visible) is scored like v=2
    vis[J["left_ankle"]] = 1
    assert M.pck(gt, BOX, pred, mode="h", visible=vis).per_sample[0] == pytest.approx(16 / 17)


def test_missing_reference_joint_leaves_the_sample_unscored():
    vis = np.full((2, 17), 2)
    vis[0, J["nose"]] = 0  # PCKh needs nose and both shoulders
    gt = np.stack([GT, GT])
    r = M.pck(gt, np.stack([BOX, BOX]), gt, mode="h", visible=vis)
    assert not r.valid[0].any() and r.valid[1].all()
    assert math.isnan(r.per_sample[0]) and r.mean == 1.0
    s = M.summarize(M.evaluate(gt[:1], BOX[None], gt[:1], visible=vis[:1]))
    assert s["metrics"]["pckh@0.5"]["mean"] is None
    json.dumps(s, allow_nan=False)


def test_pcpm_uses_dataset_mean_part_lengths():
    gt, vis, bbox, _ = load_samples()
    m = M.mean_part_lengths(gt, bbox, visible=vis)
    assert m.shape == (14,) and np.all(m > 0)
    assert M.pcp(gt, bbox, gt, mean_part_lengths=m).mean == 1.0
    # a prediction collapsed onto one point fails every part whose endpoints moved far
    assert M.pcp(gt, bbox, np.zeros_like(gt), mean_part_lengths=m).mean < 0.2


def test_bad_inputs_raise_library_errors():
    with pytest.raises(IllustposeError, match=r"\(B, 17, 2\)"):
        M.pck(GT[:16], BOX, GT[:16])
    with pytest.raises(M.MetricInputError, match="w > 0 and h > 0"):
        M.oks(GT, [0, 0, 0, 10], GT)
    with pytest.raises(M.MetricInputError, match="mode"):
        M.pck(GT, BOX, GT, mode="head")
    with pytest.raises(M.MetricInputError, match="visibility flags"):
        M.pck(GT, BOX, GT, visible=np.full(17, 3))
    partly_nan = np.array(GT, dtype=np.float64)
    partly_nan[3] = np.nan
    with pytest.raises(M.MetricInputError, match="NaN"):
        M.pck(GT, BOX, partly_nan)


def test_an_all_nan_prediction_is_a_missed_character():
    gt = np.stack([GT, GT])
    pred = np.stack([GT, np.full((17, 2), np.nan)])
    results = M.evaluate(gt, [BOX, BOX], pred)
    for result in results.values():
        assert result.per_sample.tolist() == [1.0, 0.0]


def test_match_poses_pairs_as_coco_highest_score_first_then_best_oks():
    gt = np.stack([GT, np.array(GT) + 300.0])
    near_second = np.array(GT) + 290.0
    area = [100.0 * 100.0] * 2
    # the best-scored prediction takes the ground truth it matches best; the other takes what is left
    assert M.match_poses(gt, np.full((2, 17), 2), area, np.stack([GT, near_second]), [0.2, 0.9]) == [0, 1]
    assert M.match_poses(gt, np.full((2, 17), 2), area, np.stack([near_second]), None) == [None, 0]
    assert M.match_poses(gt, np.full((2, 17), 2), area, np.stack([GT, GT, near_second]), [0.1, 0.5, 0.3]) == [1, 2]


# --------------------------------------------------------------------------- reporting


def test_summarize_shape_and_table():
    gt, vis, bbox, _ = load_samples()
    pred = gt.copy()
    pred[:, J["left_wrist"]] += 1000.0
    summary = M.summarize(M.evaluate(gt, bbox, pred, visible=vis))
    assert set(summary) == {"metrics", "images"} and summary["images"] == len(gt)
    assert list(summary["metrics"]) == list(M.SUMMARY_METRICS)
    for name, entry in summary["metrics"].items():
        key = "per_part" if name == "pcp@0.5" else "per_joint"
        assert set(entry) == {"mean", key}
        assert list(entry[key]) == list(M.PCP_PART_NAMES if key == "per_part" else COCO_KEYPOINTS)
    assert summary["metrics"]["pdj@0.2"]["per_joint"]["left_wrist"] == 0.0
    assert summary["metrics"]["pdj@0.2"]["mean"] == pytest.approx(16 / 17)
    json.dumps(summary, allow_nan=False)

    table = M.format_table(summary).splitlines()
    labels = [line.split()[0] for line in table[2:] if not line.startswith("-")]
    assert labels == [g for g, _ in M.TABLE_GROUPS] + ["mean"]
    wrists = next(line for line in table if line.startswith("wrists")).split()
    assert wrists[1] == "50.0"  # left 0 %, right 100 % -> averaged
    assert next(line for line in table if line.startswith("mean")).split()[1] == "94.1"


def test_summarize_requires_every_metric():
    results = M.evaluate(GT, BOX, GT)
    del results["oks@0.75"]
    with pytest.raises(M.MetricInputError, match="oks@0.75"):
        M.summarize(results)


# --------------------------------------------------------------------------- COCO


def _detections(raw, pred):
    return [
        {"image_id": a["image_id"], "category_id": 1, "score": 1.0,
         "keypoints": [v for (x, y) in p.tolist() for v in (x, y, 2)]}
        for a, p in zip(raw["annotations"], pred)
    ]


def test_coco_ap_of_perfect_predictions_is_one():
    pytest.importorskip("pycocotools")
    gt, _, _, raw = load_samples()
    before = json.dumps(raw)
    stats = M.coco_keypoint_ap(raw, _detections(raw, gt))
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert json.dumps(raw) == before  # gt_coco is not modified


def test_reference_similarity_is_coco_similarity_to_the_fourth():
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, vis, bbox, raw = load_samples()
    gt, vis, bbox = gt[:1], np.full((1, 17), 2), bbox[:1]
    joint = J["right_knee"]
    pred = gt.copy()
    pred[0, joint] += (3.0, -4.0)
    one = {**raw, "images": raw["images"][:1], "annotations": [
        {**raw["annotations"][0], "area": float(bbox[0, 2] * bbox[0, 3]),
         "keypoints": [v for (x, y) in gt[0].tolist() for v in (x, y, 2)]}]}
    coco = COCO()
    coco.dataset = one
    coco.createIndex()
    ev = COCOeval(coco, coco.loadRes(_detections(one, pred)), iouType="keypoints")
    ev.evaluate()
    coco_oks = ev.ious[(1, 1)][0, 0]
    coco_joint = 17 * coco_oks - 16  # the 16 exact joints contribute 1 each
    ours = M.oks(gt, bbox, pred, visible=vis).similarities[0, joint]
    assert ours == pytest.approx(coco_joint**4, rel=1e-9)


def test_coco_ap_rejects_unknown_images():
    pytest.importorskip("pycocotools")
    _, _, _, raw = load_samples()
    det = _detections(raw, np.zeros((1, 17, 2)))
    det[0]["image_id"] = 999
    with pytest.raises(M.MetricInputError, match="999"):
        M.coco_keypoint_ap(raw, det)


def test_missing_pycocotools_says_how_to_install(monkeypatch):
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # None makes the import fail
    with pytest.raises(M.MetricInputError, match="pip install pycocotools"):
        M.coco_keypoint_ap({"images": [], "annotations": [], "categories": []}, [])


# --------------------------------------------------------------------------- properties

_coords = st.integers(min_value=-500, max_value=500)


@st.composite
def _batches(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = draw(st.integers(1, 4))
    gt = rng.integers(-200, 200, (b, 17, 2)).astype(np.float64)
    pred = gt + rng.integers(-30, 30, (b, 17, 2))
    bbox = np.concatenate([rng.integers(-50, 50, (b, 2)), rng.integers(20, 400, (b, 2))], axis=1).astype(np.float64)
    return gt, bbox, pred


def _outcome(results):
    return {name: (r.correct.tolist(), r.valid.tolist()) for name, r in results.items()}


@settings(max_examples=40, deadline=None)
@given(_batches(), _coords, _coords)
def test_translating_everything_changes_nothing(batch, dx, dy):
    gt, bbox, pred = batch
    shift = np.array([dx, dy], dtype=np.float64)
    moved_box = bbox.copy()
    moved_box[:, :2] += shift
    assert _outcome(M.evaluate(gt + shift, moved_box, pred + shift)) == _outcome(M.evaluate(gt, bbox, pred))


@settings(max_examples=40, deadline=None)
@given(_batches(), st.integers(-3, 3))
def test_uniform_scaling_changes_nothing(batch, exponent):
    gt, bbox, pred = batch
    c = 2.0**exponent  # exact in binary floating point
    assert _outcome(M.evaluate(gt * c, bbox * c, pred * c)) == _outcome(M.evaluate(gt, bbox, pred))


@settings(max_examples=25, deadline=None)
@given(_batches())
def test_samples_are_scored_independently(batch):
    gt, bbox, pred = batch
    together = M.evaluate(gt, bbox, pred)
    for i in range(len(gt)):
        alone = M.evaluate(gt[i], bbox[i], pred[i])
        for name in M.SUMMARY_METRICS:
            assert together[name].correct[i].tolist() == alone[name].correct[0].tolist()
