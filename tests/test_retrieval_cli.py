"""The ``index`` CLI commands, driven main(argv)-style with a fake model pipeline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from illustpose import cli as main_cli
from illustpose.cli import pipeline as cli_pipeline
from illustpose.errors import IllustposeError
from illustpose.geometry import bbox_xywh_to_rc, pose_cropbox
from illustpose.keypoints import coco17_to_openpose18, to_coco_annotation, to_pose_keypoint
from illustpose.registry import POSE_CROP_PADDING, POSE_CROP_SIZE
from illustpose.results import PoseResult
from illustpose.retrieval import PoseIndex
from illustpose.retrieval.ingest import load_pose_json
from retrieval_poses import random_poses


class FakePipeline:
    """Stands in for the segmenter+pose pipeline: the pose is a function of the image's colour."""

    segmenter = pose = None  # no weight files (the `run` fixture gives it some)

    def __init__(self):
        self.calls = 0

    @staticmethod
    def pose_for(image: Image.Image) -> PoseResult:
        seed = int(np.asarray(image.convert("RGB"))[0, 0].astype(np.int64) @ [1, 256, 65536])
        xy, bbox = random_poses(1, seed=seed)
        bbox_xywh = tuple(int(v) for v in bbox[0])
        return PoseResult(xy[0], np.linspace(0.2, 1.0, 25).astype(np.float32), bbox_xywh,
                          pose_cropbox(bbox_xywh_to_rc(bbox_xywh), POSE_CROP_SIZE, POSE_CROP_PADDING),
                          (image.height, image.width))

    def estimate(self, image: Image.Image) -> PoseResult:
        self.calls += 1
        return self.pose_for(image)

    def poses(self, image: Image.Image) -> list[PoseResult]:
        return [self.estimate(image)]


@pytest.fixture
def run(capsys, monkeypatch, tmp_path):
    """run(argv) -> (exit status, stdout, stderr), through the main CLI with the fake pipeline,
    whose weight files are the ones given (--segmenter, --pose) or two default files."""
    pipeline = FakePipeline()
    built = []
    defaults = {}
    for role in ("segmenter", "pose"):
        defaults[role] = tmp_path / "weights" / f"{role}.safetensors"
        defaults[role].parent.mkdir(exist_ok=True)
        defaults[role].write_bytes(role.encode())

    def build(args, tasks=("segment", "pose")):
        built.append(args)
        for role, default in defaults.items():
            setattr(pipeline, role, SimpleNamespace(source=getattr(args, role) or str(default)))
        return pipeline

    monkeypatch.setattr(cli_pipeline, "build_pipeline", build)

    def _run(argv):
        rc = main_cli.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err

    _run.pipeline, _run.built = pipeline, built
    return _run


def make_images(folder: Path, colours) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in colours:
        p = folder / f"img_{c[0]:03d}_{c[1]:03d}.png"
        Image.new("RGB", (64, 48), c).save(p)
        paths.append(p)
    return paths


def test_build_is_resumable_and_query_finds_the_image(run, tmp_path):
    images = make_images(tmp_path / "refs", [(i, 10, 20) for i in range(6)])
    make_images(tmp_path / "refs" / "sub", [(200, 1, 1)])
    index = tmp_path / "refs.sqlite"
    seg = tmp_path / "seg.pth"
    seg.write_bytes(b"segmenter weights")
    rc, _, err = run(["index", "build", index, tmp_path / "refs", "--segmenter", seg, "--quiet", "--no-recursive"])
    assert rc == 0 and run.pipeline.calls == 6
    rc, _, err = run(["index", "build", index, tmp_path / "refs", "--commit-every", "2"])  # recursive by default
    assert rc == 0 and run.pipeline.calls == 7  # only the sub-folder image was new
    assert "added 1, skipped 6 already indexed" in err
    assert "was built with segmenter seg.pth" in err and "now adding with segmenter segmenter.safetensors" in err
    with PoseIndex(index) as ix:
        assert len(ix) == 7 and ix.model["segmenter"] == {
            "file": "seg.pth", "path": str(seg.resolve()), "sha256": hashlib.sha256(b"segmenter weights").hexdigest()}
        assert ix.model["pose"]["file"] == "pose.safetensors"
        entry = ix.get(1)
        assert entry.source == str(images[0].resolve()) and entry.image_size_hw == (48, 64)
    rc, out, _ = run(["index", "query", index, images[3], "-k", "3", "--json"])
    hits = json.loads(out)
    assert rc == 0 and len(hits) == 3 and all(set(h) == {"rank", "distance", "source", "mirrored"} for h in hits)
    assert hits[0] == {"rank": 1, "distance": 0.0, "source": str(images[3].resolve()), "mirrored": False}
    rc, out, _ = run(["index", "query", index, images[3], "-k", "2", "--mirror"])
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["rank", "distance", "source"] and len(lines) == 3
    assert lines[1].split()[:3] == ["1", "0.00", str(images[3].resolve())]
    assert run.built[-1].segmenter == str(seg.resolve())  # a query by image uses the index's files
    other = tmp_path / "other.pth"
    other.write_bytes(b"other weights")
    rc, _, err = run(["index", "query", index, images[3], "--segmenter", other])
    assert rc == 0 and "warning:" in err and "other.pth" in err and "pass the index's files with --segmenter" in err
    seg.unlink()
    rc, _, err = run(["index", "query", index, images[3]])  # the recorded file is gone: the default is used
    assert rc == 0 and f"{seg.resolve()} is gone" in err and "segmenter.safetensors" in err


def test_build_skips_unreadable_images_and_duplicates(run, tmp_path):
    make_images(tmp_path / "refs", [(1, 2, 3)])
    Image.new("RGB", (64, 48), (1, 2, 3)).save(tmp_path / "refs" / "copy.png")
    (tmp_path / "refs" / "broken.png").write_bytes(b"not a png")
    rc, _, err = run(["index", "build", tmp_path / "i.sqlite", tmp_path / "refs"])
    assert rc == 1 and "broken.png" in err and "1 failed" in err and "added 1" in err
    assert "1 duplicates" in err  # copy.png has the same bytes as img_001_002.png
    rc, _, err = run(["index", "build", tmp_path / "i.sqlite", tmp_path / "refs"])
    assert "skipped 2 already indexed" in err
    rc, _, err = run(["index", "build", tmp_path / "i.sqlite", tmp_path / "refs", "--kind", "coco17"])
    assert rc == 2 and "built with the 'all25' descriptor" in err
    rc, _, err = run(["index", "build", tmp_path / "j.sqlite", tmp_path / "nothing"])
    assert rc == 2 and "no such file or folder" in err


def test_pose_json_files_add_and_query(run, tmp_path):
    xy, bbox = random_poses(3, seed=5)
    ann = to_coco_annotation(xy[0, :17], None, bbox[0])
    coco_file = tmp_path / "one.json"
    coco_file.write_text(json.dumps(ann))
    dataset = tmp_path / "set.json"
    dataset.write_text(json.dumps({
        "images": [{"id": 7, "file_name": "ref7.png", "height": 300, "width": 200}],
        "annotations": [dict(to_coco_annotation(xy[1, :17], None, bbox[1]), image_id=7)],
    }))
    op = coco17_to_openpose18(xy[2, :17], np.ones(17, bool))
    moved = coco17_to_openpose18(xy[2, :17] + 5.0, np.ones(17, bool))  # same pose elsewhere
    pk_file = tmp_path / "pk.json"
    pk_file.write_text(json.dumps(to_pose_keypoint([[op, moved]], [(900, 700)])))
    index = tmp_path / "p.sqlite"
    assert run(["index", "build", index, *make_images(tmp_path / "imgs", [(9, 9, 9)])])[0] == 0
    rc, _, err = run(["index", "add", index, coco_file, dataset, pk_file])
    assert rc == 0 and "added 4" in err
    with PoseIndex(index) as ix:
        sources = [ix.get(i).source for i in range(2, 6)]
        assert sources == [str(coco_file), str(tmp_path / "ref7.png"), f"{pk_file}#0.0", f"{pk_file}#0.1"]
        assert ix.get(3).image_size_hw == (300, 200) and ix.info()["partial_entries"] == 4
    rc, out, _ = run(["index", "query", index, coco_file, "--json", "-k", "1"])
    assert rc == 0 and json.loads(out)[0]["source"] == str(coco_file)
    rc, _, err = run(["index", "query", index, coco_file, "--strict"])
    assert rc == 2 and "17 of the 25 joints" in err
    rc, out, err = run(["index", "query", index, pk_file, "--person", "1", "--json", "-k", "1"])
    assert rc == 0 and "pose 1 of 2" in err and json.loads(out)[0]["distance"] == 0.0
    rc, _, err = run(["index", "query", index, pk_file, "--person", "5"])
    assert rc == 2 and "--person must be in 0..1" in err
    assert run.pipeline.calls == 1  # pose files never run the model


def test_load_pose_json_rejects_unknown_layouts(tmp_path):
    f = tmp_path / "x.json"
    f.write_text('{"hello": 1}')
    with pytest.raises(IllustposeError, match="neither COCO keypoints"):
        load_pose_json(f)
    f.write_text("{broken")
    with pytest.raises(IllustposeError, match="cannot read the pose JSON"):
        load_pose_json(f)


def test_info_export_and_errors(run, tmp_path):
    index = tmp_path / "x.sqlite"
    run(["index", "build", index, *make_images(tmp_path / "imgs", [(1, 1, 1), (2, 2, 2)]), "--tag", "set=demo"])
    rc, out, _ = run(["index", "info", index, "--json"])
    info = json.loads(out)
    assert rc == 0 and info["entries"] == 2 and info["descriptor_kind"] == "all25"
    rc, out, _ = run(["index", "info", index])
    assert "descriptor_dims: 300" in out and "entries: 2" in out
    rc, out, _ = run(["index", "export", index, tmp_path / "out.json"])
    data = json.loads((tmp_path / "out.json").read_text())
    assert rc == 0 and "wrote 2 entries" in out and data["annotations"][0]["tags"] == {"set": "demo"}
    rc, _, err = run(["index", "add", tmp_path / "missing.sqlite", tmp_path / "imgs"])
    assert rc == 2 and "no such pose index" in err
    rc, _, err = run(["index", "build", index, tmp_path / "imgs", "--tag", "oops"])
    assert rc == 2 and "KEY=VALUE" in err
    empty = tmp_path / "empty.sqlite"
    PoseIndex(empty, create=True).close()
    rc, _, err = run(["index", "query", empty, tmp_path / "imgs" / "img_001_001.png"])
    assert rc == 2 and "is empty" in err


def test_registered_in_the_main_cli(tmp_path, capsys):
    index = tmp_path / "m.sqlite"
    PoseIndex(index, create=True, kind="coco17").close()
    assert main_cli.main(["index", "info", str(index)]) == 0
    assert "descriptor_kind: coco17" in capsys.readouterr().out
    assert main_cli.main(["index", "info", str(tmp_path / "none.sqlite")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
