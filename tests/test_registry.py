"""The model registry (illustpose.registry), checked the way torchvision's test_extended_models.py
checks its weights: every record complete and consistent, names unique, head sizes from the
metadata, records frozen and picklable, and everything derived from it (detection, CLI flags,
node choices, the docs table) generated rather than written per model."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from illustpose import registry as R
from illustpose.keypoints import ALL_KEYPOINTS
from release_files import DRIVE, HF_REPO, MEMBERS, RULES, TAGGER_CKPT

REPO = Path(__file__).resolve().parents[1]


def test_the_release_is_registered():
    assert [w.name for w in R.WEIGHTS] == ["segmenter", "tagger", "feat_match", "feat_match+data", "feat_concat",
                                           "feat_concat+data"]
    assert R.weights_kinds() == (*(w.name for w in R.WEIGHTS), "tags")
    assert {t.name: R.default_weights(t.name).name for t in R.TASKS} == {
        "segment": "segmenter", "tag": "tagger", "pose": "feat_match+data"}
    assert R.architectures("pose") == ("feat_match", "feat_concat")
    assert R.architecture_weights("feat_concat").name == "feat_concat+data"


@pytest.mark.parametrize("w", R.WEIGHTS, ids=lambda w: w.name)
def test_every_record_is_complete(w):
    assert re.fullmatch(r"[a-z_]+(\+data)?", w.name) and w.task in {t.name for t in R.TASKS}
    assert w.description and w.reference.startswith("_train/") and w.key_prefix.endswith(".")
    assert w.files and all(f.kind == w.name for f in w.files)
    for ref in (w.builder, w.detector, w.transform):
        module, _, attr = ref.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), ref
    assert w.detector_class.task == w.task
    assert w.hparams and all(isinstance(v, dict) for v in w.hparams.values())
    if w.task == "pose":  # the head's size is the metadata's
        assert w.keypoint_names == ALL_KEYPOINTS and w.hparam("largs.danbooru_coco.size") == R.POSE_CROP_SIZE


def test_records_of_one_architecture_agree_and_prefer_one():
    for arch in R.architectures():
        records = [w for w in R.WEIGHTS if w.architecture == arch]
        assert sum(w.preferred for w in records) == 1
        facts = {(w.key_prefix, w.builder, w.detector, w.transform, w.reference, str(w.hparams)) for w in records}
        assert len(facts) == 1


def test_the_registry_refuses_inconsistent_records():
    seg = R.WEIGHTS[0]
    with pytest.raises(ValueError, match="registered twice"):
        R._check([seg, seg])
    with pytest.raises(ValueError, match="differ in"):
        R._check([seg, dataclasses.replace(seg, name="segmenter+x", key_prefix="other.",
                                           files=tuple(dataclasses.replace(f, kind="segmenter+x", name="x" + f.name)
                                                       for f in seg.files))])
    with pytest.raises(ValueError, match="unknown task"):
        R._check([dataclasses.replace(seg, task="dance")])


def test_records_are_frozen_picklable_copyable():
    w = R.get_weights("feat_match+data")
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.name = "x"
    assert pickle.loads(pickle.dumps(w)) == w == copy.deepcopy(w)
    f = R.known_files("segmenter")[0]
    assert pickle.loads(pickle.dumps(f)) == f and hash(f) == hash(copy.copy(f))


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="feat_concat\\+data"):
        R.get_weights("pose")
    with pytest.raises(ValueError, match="feat_concat\\+data"):
        R.known_files("pose")
    with pytest.raises(ValueError, match="feat_match, feat_concat"):
        R.architecture_weights("hrnet")


@pytest.mark.parametrize("keys, arch", [
    (["deeplab.backbone.conv1.weight", "final_head.0.weight"], "segmenter"),
    (["resnet.conv1.weight", "resnet.fc.weight"], "tagger"),
    (["resnet.conv1.weight", "keypoint_head.matcher_rcnn.1.weight", "keypoint_head.head.0.weight"], "feat_match"),
    (["resnet.conv1.weight", "keypoint_head.converter_rcnn.weight", "rcnn.model.x"], "feat_concat"),
    (["conv1.weight"], None),
    (["deeplab.backbone.conv1.weight", "resnet.fc.weight"], None),  # two models: refused, not guessed
])
def test_files_are_recognised_by_their_key_prefix(keys, arch):
    assert R.detect_architecture(keys) == arch


def test_every_known_file_is_valid():
    for f in R.known_files():
        assert f.format in {"lightning", "hf_pth", "safetensors", "tags_txt", "rules_json"}, f
        assert f.size_basis in R.SIZE_BASES and f.downloadable == (f.source != "animepose"), f
        assert f.size is None or (isinstance(f.size, int) and f.size > 0), f
        assert f.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", f.sha256), f
        assert f.notes, f"{f.name}: notes must say what is assumed"
        if f.source == "hf":
            assert f.repo_id == HF_REPO and f.filename == f.name and f.zip_member is None
            assert f.url == f"https://huggingface.co/{HF_REPO}/resolve/main/{f.name}"
            assert f.format in {"hf_pth", "tags_txt"}
        elif f.source == "animepose":  # ComfyUI-AnimePose's files: accepted where found, never downloaded
            assert f.url == f"https://huggingface.co/mrpm/ComfyUI-AnimePose-weights/resolve/main/{f.name}"
            assert f.format == "safetensors" and f.zip_member is None
        else:
            assert f.source == "drive_zip" and f.zip_member == f.name and f.url == DRIVE
            assert f.zip_member in MEMBERS and f.format in {"lightning", "rules_json"}
        for c in f.companions:
            assert c in {g.name for g in R.known_files("tags")}


def test_file_names_are_unique_and_unambiguous():
    names = [f.name for f in R.known_files()]
    assert len(names) == len(set(names))
    local = [n for f in R.known_files() for n in set(f.local_names())]  # a base name must identify one model
    assert len(local) == len(set(local))
    assert len({f.filename for f in R.known_files() if f.source == "hf"}) == 3


def test_expected_files_and_companions():
    by = {f.name: f for f in R.known_files()}
    assert set(MEMBERS) | {"segmenter.pth", "tagger.pth", "tags.txt", "character_bg_seg.safetensors",
                           "anime_pose_head.safetensors"} == set(by)
    assert by["anime_pose_head.safetensors"].kind == "feat_concat+data" and "--rcnn-weights" in by[
        "anime_pose_head.safetensors"].requires and by["character_bg_seg.safetensors"].kind == "segmenter"
    for kind in ("segmenter", "feat_concat+data"):  # complete files come before the AnimePose copies
        assert R.known_files(kind)[-1].source == "animepose"
    assert by["tagger.pth"].companions == ("tags.txt",)
    assert by[TAGGER_CKPT].companions == (RULES,)
    for kind in ("segmenter", "tagger", "tags"):  # HF files come first: they are the cheaper download
        assert R.known_files(kind)[0].source == "hf"


def test_file_options_come_from_the_records():
    assert [o.flag for o in R.file_options()] == ["--tags", "--rcnn-weights"]
    assert [o.keyword for o in R.file_options("pose")] == ["rcnn_weights"] and R.file_options("segment") == ()


def test_importing_the_registry_imports_no_torch():
    code = "import sys, illustpose.registry; assert 'torch' not in sys.modules, sorted(sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_weights_readme_table_is_the_registrys(capsys):
    from illustpose.cli import main

    assert main(["weights", "list", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    assert table in (REPO / "weights" / "README.md").read_text(), (
        "weights/README.md's table is out of date: paste `python -m illustpose weights list --markdown`")
    assert table.count("\n") == 1 + sum(len(w.files) for w in R.WEIGHTS)


# ----------------------------------------------------------------------------- a fourth model kind


def test_a_fourth_model_is_one_module_plus_one_record(monkeypatch, tmp_path, capsys):
    import numpy as np
    import torch
    from PIL import Image
    from toy_pose_model import ToyPoseNet, register_toy

    from illustpose import PoseEstimator
    from illustpose.checkpoints import read_checkpoint, save_safetensors
    from illustpose.cli import main
    from illustpose.convert import convert

    toy = register_toy(monkeypatch)
    torch.manual_seed(0)
    weights_dir = tmp_path / "w"
    path = weights_dir / "toy_pose.safetensors"
    save_safetensors(path, ToyPoseNet(25).state_dict(), model="toy_pose", hparams={})
    assert R.detect_architecture(read_checkpoint(path).state_dict) == "toy_pose"
    assert R.architectures("pose") == ("feat_match", "feat_concat", "toy_pose")

    estimator = PoseEstimator.from_pretrained(path)  # released hyper-parameters from the record
    assert estimator.kind == "toy_pose" and estimator.crop_size == 64
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    assert estimator(image, [2, 3, 20, 30]).keypoints.shape == (25, 2)
    assert R.detect_architecture(read_checkpoint(convert(path, tmp_path / "c.safetensors")).state_dict) == "toy_pose"

    image.save(tmp_path / "img.png")
    assert main(["annotate", str(tmp_path / "img.png"), "--out", str(tmp_path / "out"), "--pose-model", "toy_pose",
                 "--weights-dir", str(weights_dir), "--skip", "segment", "--skip", "tag", "--offline", "--quiet"]) == 0
    assert (tmp_path / "out" / "img.pose.json").is_file()
    assert main(["weights", "list", "--markdown"]) == 0
    assert "| toy_pose | pose | toy pose estimator of the registry tests | `toy_pose.pth` |" in capsys.readouterr().out
    assert toy in R.list_weights("pose") and R.get_weights("toy_pose") is toy


def test_register_refuses_a_clash(monkeypatch):
    from toy_pose_model import record, register_toy

    register_toy(monkeypatch)
    with pytest.raises(ValueError, match="registered twice"):
        R.register(record())
