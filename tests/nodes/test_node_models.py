"""Loader nodes: dropdowns from models/illustpose, "auto", caching by file and device, clear errors."""

from __future__ import annotations

import shutil

import pytest

import illustpose.weights
from illustpose.models.pose import PoseEstimator
from illustpose.models.segmenter import CharacterSegmenter
from illustpose.models.tagger import DanbooruTagger

LOADERS = {"LoadCharacterSegmenter|illustpose": CharacterSegmenter, "LoadDanbooruTagger|illustpose": DanbooruTagger,
           "LoadPoseEstimator|illustpose": PoseEstimator}


def weights_options(pack, node_id):
    return next(i for i in pack.node(node_id).define_schema().inputs if i.id == "weights").options


@pytest.mark.parametrize("node_id", sorted(LOADERS))
def test_auto_loads_the_default_file_of_each_model(pack, node_id):
    (det,), ui = pack.run(node_id, weights="auto", precision="fp32")
    assert isinstance(det, LOADERS[node_id]) and ui is None
    assert det.source.endswith(f"{LOADERS[node_id].default_weights()}.safetensors")


def test_the_dropdown_lists_weight_files_after_auto(pack, comfy_base):
    (comfy_base / "models" / "illustpose" / "tags.txt").write_text("a\n")  # not a weight file
    options = weights_options(pack, "LoadCharacterSegmenter|illustpose")
    assert options[0] == "auto"
    assert {"segmenter.safetensors", "tagger.safetensors", "feat_match+data.safetensors"} <= set(options[1:])
    assert "tags.txt" not in options


def test_a_loaded_detector_is_cached_by_file(pack):
    a, b = pack.load("tagger", "tagger.safetensors"), pack.load("tagger", "auto")
    assert a is b and a.tag_names[0] == "long_hair"


def test_each_precision_is_its_own_detector(pack):
    (half,), _ = pack.run("LoadDanbooruTagger|illustpose", weights="auto", precision="bf16")
    assert half is not pack.load("tagger") and (half.precision, pack.load("tagger").precision) == ("bf16", "fp32")
    assert [i.options for i in pack.node("LoadDanbooruTagger|illustpose").define_schema().inputs][1] == [
        "auto", "fp32", "bf16", "fp16"]
    (auto,), _ = pack.run("LoadDanbooruTagger|illustpose", weights="auto", precision="auto")
    assert auto.precision == "fp32"  # the fake ComfyUI computes on the CPU; fp16 only on CUDA


def test_a_replaced_file_is_loaded_again(pack, comfy_base, tmp_path):
    src = comfy_base / "models" / "illustpose" / "feat_match+data.safetensors"
    copy = comfy_base / "models" / "illustpose" / "sub" / "pose_copy.safetensors"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(src, copy)
    a = pack.load("pose", "sub/pose_copy.safetensors")
    shutil.copy(src, tmp_path / "x")
    copy.unlink()
    shutil.copy(tmp_path / "x", copy)  # same bytes, new file: new mtime_ns
    b = pack.load("pose", "sub/pose_copy.safetensors")
    assert a is not b and isinstance(b, PoseEstimator)


def test_a_vanished_file_is_a_clear_error(pack):
    with pytest.raises(pack.node_error, match="no longer in the illustpose model folders.*pick 'auto'"):
        pack.load("segmenter", "gone.safetensors")


def test_missing_weights_say_what_to_get_and_where(pack, tmp_path, monkeypatch):
    empty = tmp_path / "models_illustpose"
    empty.mkdir()
    monkeypatch.setitem(pack.folder_paths.folder_names_and_paths, "illustpose", ([str(empty)], set()))
    monkeypatch.setattr(illustpose.weights, "PACK_WEIGHTS_DIR", tmp_path / "pack_weights")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(pack.node_error) as e:
        pack.load("segmenter", "auto")
    message = str(e.value)
    assert "No weights for 'segmenter' were found" in message and str(empty) in message
    assert "segmenter.pth" in message and "huggingface.co" in message
    assert e.value.__cause__ is None and e.value.__suppress_context__  # one message, no library traceback


def test_a_file_of_another_model_is_a_clear_error(pack):
    with pytest.raises(pack.node_error, match="holds a Danbooru tagger"):
        pack.load("segmenter", "tagger.safetensors")


def test_a_registered_pose_architecture_appears_in_the_pose_loader(pack, monkeypatch):
    from toy_pose_model import register_toy

    register_toy(monkeypatch)
    options = weights_options(pack, "LoadPoseEstimator|illustpose")
    assert options[:3] == ["auto", "auto: feat_concat+data", "auto: toy_pose"]
    assert weights_options(pack, "LoadCharacterSegmenter|illustpose")[0] == "auto"
