"""``illustpose eval`` and :mod:`illustpose.evaluation`, with a stub pipeline (never real models)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from illustpose import cli
from illustpose.cli import pipeline as cli_pipeline
from illustpose.datasets import read_coco, write_coco
from illustpose.errors import IllustposeError, ImageError
from illustpose.evaluation import EvaluationError, coco_ap, evaluate_predictions, read_predictions
from illustpose.images import load_image
from illustpose.keypoints import COCO_KEYPOINTS, to_coco_annotation
from illustpose.metrics import JOINT_NAMES, PCP_PART_NAMES, SUMMARY_METRICS

DATA = Path(__file__).parent / "data"
SAMPLES_JSON = DATA / "samples_coco.json"
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "samples"
WRIST = COCO_KEYPOINTS.index("left_wrist")
KNEE = COCO_KEYPOINTS.index("right_knee")
HAS_PYCOCOTOOLS = __import__("importlib.util").util.find_spec("pycocotools") is not None


# --------------------------------------------------------------------------- fixtures


def image_key(image: Image.Image) -> str:
    """Identifies an image by its pixels (the stub cannot see file names)."""
    return hashlib.sha256(image.tobytes() + repr(image.size).encode()).hexdigest()


class StubPipeline:
    """``annotate`` returns a preset (25, 2) pose per image, found by the image's pixels.

    ``fail_on`` holds image keys on which ``annotate`` raises ImageError (as a model would).
    """

    def __init__(self, poses: dict[str, np.ndarray], fail_on=()):
        self.poses, self.fail_on, self.calls = poses, set(fail_on), []

    def annotate(self, images):
        keys = [image_key(im) for im in images]
        self.calls.append(len(images))
        if self.fail_on & set(keys):
            raise ImageError("stub: this image breaks the model")
        return [SimpleNamespace(segmentation=None, tags=None, poses=(self._pose(k, im),)) for k, im in zip(keys, images)]

    def _pose(self, key, image):
        xy = np.zeros((25, 2))
        xy[:17] = self.poses[key]
        return SimpleNamespace(keypoints=xy, scores=np.full(25, 0.9, dtype=np.float32),
                               bbox_xywh=(0, 0, image.width, image.height))


def stub_for(records, images_dir: Path, shift=None, fail_on=()) -> StubPipeline:
    """A stub answering each annotated image with its first annotation, ``shift(xy)`` applied."""
    poses, failing = {}, set()
    for rec in records:
        path = images_dir / rec.file_name
        if rec.annotations and path.is_file():
            key = image_key(load_image(path))
            xy = rec.annotations[0].xy.copy()
            poses[key] = shift(xy) if shift else xy
            if rec.file_name in fail_on:
                failing.add(key)
    return StubPipeline(poses, failing)


def use_stub(monkeypatch, stub: StubPipeline) -> list:
    """Make ``illustpose.cli.pipeline.build_pipeline`` return ``stub``; returns the list of ``models`` it was asked for."""
    asked = []

    def build(args, models=("segment", "pose")):
        asked.append(tuple(models))
        return stub

    monkeypatch.setattr(cli_pipeline, "build_pipeline", build)
    return asked


def pose(seed: int, width: int, height: int) -> list[float]:
    """17 distinct (x, y, v) triples inside the image, v = 2 except a few."""
    rng = np.random.default_rng(seed)
    xy = np.column_stack([rng.uniform(5, width - 5, 17), rng.uniform(5, height - 5, 17)])
    v = np.full(17, 2)
    v[KNEE] = 1  # labelled, hidden: counts
    return [float(c) for (x, y), f in zip(xy, v) for c in (x, y, f)]


@pytest.fixture
def dataset(tmp_path):
    """Three annotated images (distinct sizes), one unannotated; one joint v=0, one v=1."""
    sizes = {"a.png": (60, 90), "b.png": (70, 100), "c.png": (80, 110), "empty.png": (30, 30)}
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for i, (name, size) in enumerate(sizes.items()):
        Image.new("RGB", size, (40 * i, 90, 200)).save(images_dir / name)
    images = [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, (w, h)) in enumerate(sizes.items())]
    annotations = []
    for i, (name, (w, h)) in enumerate(list(sizes.items())[:3]):
        kp = pose(i, w, h)
        if name == "a.png":
            kp[3 * 1: 3 * 1 + 3] = [0, 0, 0]  # left_eye unlabelled
        annotations.append({"id": i + 1, "image_id": i + 1, "keypoints": kp, "bbox": [2, 2, w - 4, h - 4]})
    gt = write_coco(tmp_path / "gt.json", images, annotations)
    return SimpleNamespace(gt=gt, images=images_dir, records=read_coco(gt), tmp=tmp_path)


def run_eval(*argv) -> int:
    return cli.main(["eval", *map(str, argv)])


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def shifted(ann: dict, d: float) -> dict:
    """A copy of a COCO annotation / result with every x and y moved by ``d`` pixels."""
    return {**ann, "keypoints": [c if i % 3 == 2 else c + d for i, c in enumerate(ann["keypoints"])]}


def all_means(summary: dict) -> dict:
    return {name: m["mean"] for name, m in summary["metrics"].items()}


# --------------------------------------------------------------------------- the command


def test_perfect_stub_scores_one_and_writes_the_json_shape(dataset, monkeypatch, capsys):
    asked = use_stub(monkeypatch, stub_for(dataset.records, dataset.images))
    out = dataset.tmp / "deep" / "summary.json"
    assert run_eval("--images", dataset.images, "--annotations", dataset.gt, "--json", out, "--batch-size", 2) == 0
    assert asked == [("segment", "pose")]
    summary = read_json(out)
    assert set(summary) == {"metrics", "images"} and summary["images"] == 3
    assert list(summary["metrics"]) == list(SUMMARY_METRICS)
    for name, metric in summary["metrics"].items():
        key = "per_part" if name == "pcp@0.5" else "per_joint"
        assert set(metric) == {"mean", key}
        assert list(metric[key]) == list(PCP_PART_NAMES if key == "per_part" else JOINT_NAMES)
        assert metric["mean"] == 1.0 and all(v == 1.0 for v in metric[key].values())
    printed = capsys.readouterr().out
    assert "images: 3" in printed and "ankles" in printed and "100.0" in printed
    if HAS_PYCOCOTOOLS:
        assert "COCO keypoint AP" in printed and "AP 100.0" in printed


def test_perturbed_joint_and_visibility_rules(dataset, monkeypatch, tmp_path):
    def shift(xy):
        xy[WRIST] += 40.0  # far off: wrong under every metric
        xy[KNEE] += 40.0  # v=1 in the ground truth: counted
        xy[1] = (-500.0, -500.0)  # left_eye: v=0 on a.png (excluded), v=2 elsewhere
        return xy

    use_stub(monkeypatch, stub_for(dataset.records, dataset.images, shift))
    assert run_eval("--images", dataset.images, "--annotations", dataset.gt, "--json", tmp_path / "s.json") == 0
    per_joint = read_json(tmp_path / "s.json")["metrics"]["pdj@0.2"]["per_joint"]
    assert per_joint["left_wrist"] == 0.0 and per_joint["right_knee"] == 0.0
    assert per_joint["left_eye"] == 0.0  # only b and c are scored there, both wrong
    assert per_joint["nose"] == 1.0 and per_joint["right_wrist"] == 1.0
    summary = evaluate_predictions(dataset.records, [
        to_coco_annotation(shift(rec.annotations[0].xy.copy()), None, [0, 0, 1, 1], image_id=rec.id)
        for rec in dataset.records if rec.annotations
    ])
    # a.png: 16 labelled joints, 2 wrong; b, c: 17 labelled, 3 wrong
    assert summary["metrics"]["pdj@0.2"]["mean"] == pytest.approx((14 / 16 + 14 / 17 + 14 / 17) / 3)


def test_missing_image_is_reported_and_skipped(dataset, monkeypatch, capsys, tmp_path):
    use_stub(monkeypatch, stub_for(dataset.records, dataset.images))
    (dataset.images / "b.png").unlink()
    assert run_eval("--images", dataset.images, "--annotations", dataset.gt, "--json", tmp_path / "s.json") == 1
    err = capsys.readouterr().err
    assert "b.png" in err and "no such image file" in err and "1 of 3" in err
    assert read_json(tmp_path / "s.json")["images"] == 2


def test_failing_image_in_a_batch_does_not_sink_the_others(dataset, monkeypatch, capsys, tmp_path):
    stub = stub_for(dataset.records, dataset.images, fail_on={"c.png"})
    use_stub(monkeypatch, stub)
    rc = run_eval("--images", dataset.images, "--annotations", dataset.gt, "--batch-size", 3, "--json", tmp_path / "s.json")
    assert rc == 1
    assert stub.calls == [3, 1, 1, 1]  # the batch, then one by one
    assert "c.png" in capsys.readouterr().err
    assert read_json(tmp_path / "s.json")["images"] == 2


def test_predictions_file_results_list(dataset, monkeypatch, tmp_path, capsys):
    asked = use_stub(monkeypatch, StubPipeline({}))
    results = [
        {"image_id": ann.image_id, "category_id": 1, "score": 0.5,
         "keypoints": [c for x, y in ann.xy.tolist() for c in (x, y, 0.37)]}  # a confidence in the v slot
        for rec in dataset.records for ann in rec.annotations
    ]
    results.append({"image_id": 99, "keypoints": [0.0] * 51, "score": 1.0})
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(results))
    assert run_eval("--annotations", dataset.gt, "--predictions", pred, "--json", tmp_path / "s.json") == 0
    assert asked == []  # no model was built
    assert "image_id 99" in capsys.readouterr().err
    assert set(all_means(read_json(tmp_path / "s.json")).values()) == {1.0}


def test_save_predictions_round_trip_and_renumbered_ids(dataset, monkeypatch, tmp_path):
    use_stub(monkeypatch, stub_for(dataset.records, dataset.images, lambda xy: xy + 3.0))
    saved, first = tmp_path / "pred.json", tmp_path / "first.json"
    assert run_eval("--images", dataset.images, "--annotations", dataset.gt, "--save-predictions", saved,
                    "--json", first) == 0
    doc = read_json(saved)
    assert [img["file_name"] for img in doc["images"]] == ["a.png", "b.png", "c.png"]
    assert len(doc["annotations"]) == 3 and "extra_keypoints" in doc["annotations"][0]
    again = tmp_path / "again.json"
    assert run_eval("--annotations", dataset.gt, "--predictions", saved, "--json", again) == 0
    assert read_json(again) == read_json(first)
    # an annotation tool renumbers images on export: matched by file_name instead
    for img in doc["images"]:
        img["id"] += 100
    for ann in doc["annotations"]:
        ann["image_id"] += 100
    saved.write_text(json.dumps(doc))
    assert run_eval("--annotations", dataset.gt, "--predictions", saved, "--json", again) == 0
    assert read_json(again) == read_json(first)


def test_model_flag_selects_the_pose_model(dataset, monkeypatch):
    seen = []

    def build(args, models=("segment", "pose")):
        seen.append(args.pose_model)
        raise IllustposeError("stop here")

    monkeypatch.setattr(cli_pipeline, "build_pipeline", build)
    assert run_eval("--images", dataset.images, "--annotations", dataset.gt, "--model", "feat_concat") == 2
    assert seen == ["feat_concat"]


@pytest.mark.parametrize("argv, expected", [
    (["--predictions", "nowhere.json"], "no such predictions file"),
    ([], "--images DIR is required"),
    (["--images", "no_such_dir"], "no such folder"),
])
def test_command_errors(dataset, monkeypatch, capsys, argv, expected):
    use_stub(monkeypatch, StubPipeline({}))
    assert run_eval("--annotations", dataset.gt, *argv) == 2
    assert expected in capsys.readouterr().err


def test_sample_set_with_a_perfect_stub(monkeypatch, capsys, tmp_path):
    if not SAMPLES_DIR.is_dir():
        pytest.skip("../shared/samples is not present")
    records = read_coco(SAMPLES_JSON)
    use_stub(monkeypatch, stub_for(records, SAMPLES_DIR))
    assert run_eval("--images", SAMPLES_DIR, "--annotations", SAMPLES_JSON, "--json", tmp_path / "s.json") == 0
    summary = read_json(tmp_path / "s.json")
    assert summary["images"] == 8
    assert set(all_means(summary).values()) == {1.0}
    table = capsys.readouterr().out
    assert table.startswith("images: 8") and "mean" in table


# --------------------------------------------------------------------------- the library


def test_several_characters_are_matched_as_coco_and_a_missed_one_scores_zero(dataset):
    rec = dataset.records[0]
    doc = read_json(dataset.gt)
    doc["annotations"].append(shifted({**doc["annotations"][0], "id": 50}, 30.0))  # a second character
    (dataset.tmp / "two.json").write_text(json.dumps(doc))
    records = read_coco(dataset.tmp / "two.json")
    first = to_coco_annotation(rec.annotations[0].xy, None, [0, 0, 1, 1], image_id=rec.id)
    # one prediction: it pairs with the first character, the second is missed (all its joints wrong)
    summary = evaluate_predictions(records, [first], skip_missing=True)
    assert summary["images"] == 2
    assert summary["metrics"]["pdj@0.2"]["per_joint"]["nose"] == 0.5
    # one prediction per character, in either order and with scores either way: each finds its own
    second = to_coco_annotation(rec.annotations[0].xy + 30.0, None, [0, 0, 1, 1], image_id=rec.id)
    for preds in ([first, second], [{**second, "score": 0.9}, {**first, "score": 0.1}]):
        assert all_means(evaluate_predictions(records, preds, skip_missing=True)) == dict.fromkeys(SUMMARY_METRICS, 1.0)


def test_highest_score_wins_and_missing_predictions(dataset):
    records = dataset.records
    good = [to_coco_annotation(r.annotations[0].xy, None, [0, 0, 1, 1], image_id=r.id) for r in records if r.annotations]
    bad = [{**shifted(p, 50.0), "score": 0.1} for p in good]
    best = [{**p, "score": 0.9} for p in good]
    assert all_means(evaluate_predictions(records, bad + best)) == dict.fromkeys(SUMMARY_METRICS, 1.0)
    assert all_means(evaluate_predictions(records, best + bad))["pdj@0.2"] == 1.0
    with pytest.raises(EvaluationError, match="1 of 3 annotated images have no prediction.*'c.png'"):
        evaluate_predictions(records, best[:2])
    assert evaluate_predictions(records, best[:2], skip_missing=True)["images"] == 2
    with pytest.raises(EvaluationError, match="no annotated image has a prediction"):
        evaluate_predictions(records, [{**best[0], "image_id": 77}])
    with pytest.raises(EvaluationError, match=r"predictions\[1\]\.keypoints: expected 51"):
        evaluate_predictions(records, [best[0], {"image_id": 2, "keypoints": [1.0] * 34}])


def test_zero_area_ground_truth_box_is_named(dataset):
    doc = read_json(dataset.gt)
    doc["annotations"][1]["bbox"] = [3, 3, 0, 20]
    (dataset.tmp / "flat.json").write_text(json.dumps(doc))
    records = read_coco(dataset.tmp / "flat.json")
    preds = [to_coco_annotation(r.annotations[0].xy, None, [0, 0, 1, 1], image_id=r.id) for r in records if r.annotations]
    with pytest.raises(EvaluationError, match=r"'b.png' \(id 2\), annotation 2: bbox .* zero width"):
        evaluate_predictions(records, preds)


def test_read_predictions_rejects_other_json(dataset, tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"people": []}))
    with pytest.raises(EvaluationError, match="odd.json: expected a COCO results list"):
        read_predictions(path, dataset.records)
    path.write_text("[{]")
    with pytest.raises(EvaluationError, match="not valid JSON"):
        read_predictions(path, dataset.records)


@pytest.mark.skipif(not HAS_PYCOCOTOOLS, reason="pycocotools is not installed")
def test_coco_ap_of_perfect_and_shifted_predictions(dataset):
    records = dataset.records
    perfect = [to_coco_annotation(r.annotations[0].xy, None, [0, 0, 1, 1], image_id=r.id) for r in records if r.annotations]
    assert coco_ap(records, perfect)["AP"] == pytest.approx(1.0)
    far = [shifted(p, 60.0) for p in perfect]
    assert coco_ap(records, far)["AP"] < 0.5
