"""Tests of illustpose.datasets: COCO reading/writing, the authors' layouts, error messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from illustpose import datasets as D
from illustpose.errors import IllustposeError
from illustpose.keypoints import COCO_KEYPOINTS, coco_categories, to_coco_annotation

DATA = Path(__file__).parent / "data"
SAMPLES_JSON = DATA / "samples_coco.json"
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "shared" / "samples"
SAMPLE_NAMES = ["megumin.png", "megumin_cutout.png"] + [f"retrieval_r0c{i}.png" for i in range(6)]
REFERENCE_NAMES = [  # the reference's spelling (keypoints_v0.coco_keypoints)
    "_".join(reversed(n.split("_"))) if "_" in n else n for n in COCO_KEYPOINTS
]


def coco_doc(keypoints=None, **ann_fields) -> dict:
    """A one-image COCO keypoint dict; ``keypoints`` defaults to a valid 51-number list."""
    flat = keypoints if keypoints is not None else [v for i in range(17) for v in (10.0 + i, 20.0 + i, 2)]
    ann = {"id": 1, "image_id": 7, "category_id": 1, "bbox": [5, 6, 40, 50], "keypoints": flat, **ann_fields}
    return {
        "images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 80}],
        "annotations": [ann],
        "categories": [coco_categories()],
    }


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- the fixture file


def test_samples_fixture_reads_and_matches_the_images():
    records = D.read_coco(SAMPLES_JSON)
    assert [r.file_name for r in records] == SAMPLE_NAMES
    for rec in records:
        (ann,) = rec.annotations
        assert ann.xy.shape == (17, 2) and ann.visibility.shape == (17,)
        assert set(ann.visibility.tolist()) <= {1, 2}
        inside = (ann.xy >= 0).all(axis=1) & (ann.xy < [rec.width, rec.height]).all(axis=1)
        assert inside.all(), rec.file_name
        x, y, w, h = ann.bbox
        assert x >= 0 and y >= 0 and x + w <= rec.width and y + h <= rec.height
    assert "hand-entered for tests" in json.loads(SAMPLES_JSON.read_text())["info"]["description"]


@pytest.mark.skipif(not SAMPLES_DIR.is_dir(), reason="shared/samples is not present")
def test_samples_fixture_sizes_match_the_image_files():
    from PIL import Image

    for rec in D.read_coco(SAMPLES_JSON):
        with Image.open(SAMPLES_DIR / rec.file_name) as im:
            assert im.size == (rec.width, rec.height), rec.file_name


def test_samples_fixture_loads_in_pycocotools():
    coco_module = pytest.importorskip("pycocotools.coco")
    coco = coco_module.COCO(str(SAMPLES_JSON))
    assert len(coco.getImgIds()) == 8 and len(coco.getAnnIds(catIds=[1])) == 8


# --------------------------------------------------------------------------- round trips


def test_round_trip_through_write_and_read(tmp_path):
    records = D.read_coco(SAMPLES_JSON)
    out = D.write_coco(tmp_path / "copy.json", *D.records_to_coco(records), description="round trip")
    again = D.read_coco(out)
    assert [(r.id, r.file_name, r.width, r.height) for r in again] == [
        (r.id, r.file_name, r.width, r.height) for r in records
    ]
    for a, b in zip(records, again):
        np.testing.assert_array_equal(a.annotations[0].xy, b.annotations[0].xy)
        np.testing.assert_array_equal(a.annotations[0].visibility, b.annotations[0].visibility)
        np.testing.assert_array_equal(a.annotations[0].bbox, b.annotations[0].bbox)
    written = json.loads(out.read_text())
    assert written["info"]["description"] == "round trip"
    assert written["annotations"][0]["num_keypoints"] == 17


def test_written_file_loads_in_pycocotools(tmp_path):
    coco_module = pytest.importorskip("pycocotools.coco")
    out = D.write_coco(tmp_path / "p.json", *D.records_to_coco(D.read_coco(SAMPLES_JSON)))
    coco = coco_module.COCO(str(out))
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    assert coco.loadCats(1)[0]["keypoints"] == list(COCO_KEYPOINTS)
    assert len(ann["keypoints"]) == 51 and ann["area"] == ann["bbox"][2] * ann["bbox"][3]


def test_predictions_round_trip_with_scores(tmp_path):
    xy = np.arange(34, dtype=np.float64).reshape(17, 2) + 3.5
    scores = np.linspace(0.1, 0.9, 17)
    ann = to_coco_annotation(xy, scores, [1, 2, 30, 40], image_id=3, ann_id=9, visibility_threshold=0.5)
    image = {"id": 3, "file_name": "x.png", "width": 64, "height": 64}
    (rec,) = D.read_coco(D.write_coco(tmp_path / "pred.json", [image], [ann]))
    (got,) = rec.annotations
    np.testing.assert_array_equal(got.xy, xy)
    np.testing.assert_array_equal(got.visibility, np.where(scores >= 0.5, 2, 1))
    np.testing.assert_allclose(got.keypoint_scores, scores)
    assert got.score == pytest.approx(scores.mean()) and got.id == 9 and got.image_id == 3


def test_unlabelled_joints_are_written_as_zeros(tmp_path):
    flat = [v for i in range(17) for v in (10.0 + i, 20.0, 0 if i == 4 else 2)]
    data = coco_doc(flat)
    out = D.write_coco(tmp_path / "z.json", data["images"], data["annotations"])
    written = json.loads(out.read_text())["annotations"][0]
    assert written["keypoints"][12:15] == [0, 0, 0] and written["num_keypoints"] == 16


# --------------------------------------------------------------------------- reading variants


def test_several_annotations_per_image_and_images_without_any(tmp_path):
    data = coco_doc()
    data["annotations"].append({**data["annotations"][0], "id": 2})
    data["images"].append({"id": 8, "file_name": "b.png", "width": 10, "height": 10})
    records = D.read_coco(write_json(tmp_path / "m.json", data))
    assert [len(r.annotations) for r in records] == [2, 0]


def test_category_names_are_matched_in_any_order_and_spelling(tmp_path):
    order = list(reversed(range(17)))
    names = [REFERENCE_NAMES[i] for i in order] + ["body_upper"]
    flat = [v for i in order for v in (float(i), float(100 + i), 1 + i % 2)] + [0, 0, 0]
    data = coco_doc(flat)
    data["categories"] = [{"id": 1, "name": "person", "keypoints": names}]
    (rec,) = D.read_coco(write_json(tmp_path / "ref.json", data))
    ann = rec.annotations[0]
    np.testing.assert_array_equal(ann.xy[:, 0], np.arange(17))
    np.testing.assert_array_equal(ann.visibility, [1 + i % 2 for i in range(17)])


def test_missing_bbox_is_the_extent_of_labelled_keypoints(tmp_path):
    flat = [v for i in range(17) for v in ((0.0, 0.0, 0) if i == 0 else (10.0 + i, 50.0 - i, 2))]
    data = coco_doc(flat)
    del data["annotations"][0]["bbox"]
    (rec,) = D.read_coco(write_json(tmp_path / "nobox.json", data))
    np.testing.assert_array_equal(rec.annotations[0].bbox, [11, 34, 15, 15])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda d: d["annotations"][0].update(keypoints=[1.0] * 48), "annotations[0].keypoints", "expected 51"),
        (lambda d: d["annotations"][0]["keypoints"].__setitem__(2, 3), "annotations[0].keypoints", "0, 1 or 2"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotations[0].image_id", "99"),
        (lambda d: d["annotations"][0].update(bbox=[0, 0, -1, 5]), "annotations[0].bbox", "w >= 0"),
        (lambda d: d["images"][0].update(width=0), "images[0].width", ">= 1"),
        (lambda d: d["images"].append(dict(d["images"][0])), "images[1].id", "duplicate"),
        (lambda d: d["categories"][0].update(keypoints=["nose"]), "categories[0].keypoints", "left_eye"),
        (lambda d: d.pop("annotations"), "", "'annotations'"),
    ],
)
def test_malformed_coco_names_file_and_field(tmp_path, mutate, field, message):
    data = coco_doc()
    mutate(data)
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(D.DatasetError) as info:
        D.read_coco(path)
    assert str(path) in str(info.value) and field in str(info.value) and message in str(info.value)
    assert isinstance(info.value, IllustposeError)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(D.DatasetError, match="no such file"):
        D.read_coco(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(D.DatasetError, match="not valid JSON"):
        D.read_coco(tmp_path / "broken.json")


def test_failed_write_leaves_the_old_file_and_no_temp_files(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("old")
    data = coco_doc()
    bad = dict(data["annotations"][0], keypoints=[float("nan")] * 51)
    with pytest.raises(D.DatasetError, match=r"annotations\[0\]\.keypoints"):
        D.write_coco(target, data["images"], [bad])
    unserialisable = dict(data["annotations"][0], note=object())
    with pytest.raises(D.DatasetError, match="JSON"):
        D.write_coco(target, data["images"], [unserialisable])
    with pytest.raises(D.DatasetError, match="duplicate annotation id"):
        D.write_coco(target, data["images"], data["annotations"] * 2)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
    with pytest.raises(D.DatasetError, match="does not exist"):
        D.write_coco(tmp_path / "nodir" / "x.json", data["images"], data["annotations"])


# --------------------------------------------------------------------------- authors' dataset


def _bizarre_dict_layout(root: Path) -> Path:
    """A two-sample dataset in the dict layout, with a test split holding sample 42."""
    raw = root / "raw"
    raw.mkdir(parents=True)
    kps = {name: [100 + i, 10 + i] for i, name in enumerate(REFERENCE_NAMES) if name != "ankle_right"}
    kps["body_upper"] = [1, 2]
    samples = {
        "42": {"keypoints": kps, "bbox": [[90, 5], [130, 45]], "size": [200, 60]},
        "7": {"keypoints": kps, "bbox": [[0, 0], [10, 20]], "size": [30, 40]},
    }
    write_json(raw / "annotations.json", samples)
    (root / "_filters").mkdir()
    (root / "_filters" / "accountably_test.csv").write_text("42\n")
    return root


def test_bizarre_dict_layout(tmp_path):
    root = _bizarre_dict_layout(tmp_path / "bizarre_pose_dataset")
    records = D.read_bizarre_pose(root)
    assert [r.id for r in records] == [7, 42]
    rec = records[1]
    assert (rec.file_name, rec.width, rec.height) == ("images/42.png", 60, 200)
    (ann,) = rec.annotations
    np.testing.assert_array_equal(ann.xy[0], [10, 100])  # (row, col) -> (x, y)
    np.testing.assert_array_equal(ann.bbox, [5, 90, 40, 40])
    assert ann.visibility[COCO_KEYPOINTS.index("right_ankle")] == 0
    assert (ann.visibility == 2).sum() == 16
    assert [r.id for r in D.read_bizarre_pose(root / "raw", split="test")] == [42]


def test_bizarre_coco_like_layout_as_the_reference_reads_it(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    data = coco_doc(bbox=[5.4, 6.6, 45.5, 56.4])  # [x0, y0, x1, y1]
    data["categories"] = [{"id": 1, "name": "person", "keypoints": REFERENCE_NAMES}]
    data["images"][0]["file_name"] = "123.png"
    write_json(raw / "annotations.json", data)
    (rec,) = D.read_bizarre_pose(tmp_path)
    np.testing.assert_array_equal(rec.annotations[0].bbox, [5, 7, 40, 50])
    np.testing.assert_array_equal(rec.annotations[0].xy[3], [13, 23])


def test_bizarre_errors(tmp_path):
    with pytest.raises(D.DatasetError, match="raw/annotations.json"):
        D.read_bizarre_pose(tmp_path)
    root = _bizarre_dict_layout(tmp_path / "ds")
    with pytest.raises(D.DatasetError, match="split must be one of"):
        D.read_bizarre_pose(root, split="dev")
    with pytest.raises(D.DatasetError, match="accountably_val.csv"):
        D.read_bizarre_pose(root, split="val")
    samples = json.loads((root / "raw" / "annotations.json").read_text())
    samples["42"]["bbox"] = [[90, 5], [80, 45]]
    write_json(root / "raw" / "annotations.json", samples)
    with pytest.raises(D.DatasetError, match=r"\['42'\]\.bbox"):
        D.read_bizarre_pose(root)
