"""Loader nodes: dropdowns of each model's files from models/illustpose, "auto", weak caching by file
and device, fingerprints of the files, clear errors."""

from __future__ import annotations

import gc
import os
import shutil
import weakref

import pytest
import safetensors.torch
import torch

import illustpose.checkpoints
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


def test_each_loader_lists_only_the_files_of_its_model_without_loading_them(pack, comfy_base, monkeypatch):
    folder = comfy_base / "models" / "illustpose"
    (folder / "tags.txt").write_text("a\n")  # not a weight file
    (folder / "mystery.ckpt").write_bytes(b"a pickle nobody opened")  # could be any model
    (folder / "broken.safetensors").write_bytes(b"not safetensors")  # no model can use it
    tagger = safetensors.torch.load_file(folder / "tagger.safetensors")
    safetensors.torch.save_file(tagger, folder / "renamed_no_metadata.safetensors")  # recognised by its keys
    monkeypatch.setattr(illustpose.checkpoints, "read_checkpoint", lambda *a: pytest.fail("a file was loaded"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a file was unpickled"))
    try:
        listed = {node_id.split("|")[0]: weights_options(pack, node_id) for node_id in LOADERS}
    finally:
        for name in ("tags.txt", "mystery.ckpt", "broken.safetensors", "renamed_no_metadata.safetensors"):
            (folder / name).unlink()
    assert listed == {
        "LoadCharacterSegmenter": ["auto", "mystery.ckpt", "segmenter.safetensors"],
        "LoadDanbooruTagger": ["auto", "mystery.ckpt", "renamed_no_metadata.safetensors", "tagger.safetensors"],
        "LoadPoseEstimator": ["auto", "auto: feat_concat+data", "feat_match+data.safetensors", "mystery.ckpt"],
    }


def test_known_file_names_decide_without_reading_the_file(pack, comfy_base):
    folder = comfy_base / "models" / "illustpose"
    for name in ("segmenter.pth", "tagger.pth"):
        (folder / name).write_bytes(b"")  # empty: only the name can tell
    try:
        assert "segmenter.pth" in weights_options(pack, "LoadCharacterSegmenter|illustpose")
        assert "segmenter.pth" not in weights_options(pack, "LoadDanbooruTagger|illustpose")
        assert "tagger.pth" in weights_options(pack, "LoadDanbooruTagger|illustpose")
    finally:
        for name in ("segmenter.pth", "tagger.pth"):
            (folder / name).unlink()


def test_a_loaded_detector_is_cached_by_file(pack):
    a, b = pack.load("tagger", "tagger.safetensors"), pack.load("tagger", "auto")
    assert a is b and a.tag_names[0] == "long_hair"


def test_the_cache_keeps_no_detector_alive(pack, comfy_base):
    cache = pack.module.nodes.models._cache
    copy = comfy_base / "models" / "illustpose" / "sub" / "tagger_copy.safetensors"
    copy.parent.mkdir(exist_ok=True)
    shutil.copy(comfy_base / "models" / "illustpose" / "tagger.safetensors", copy)
    detector = pack.load("tagger", "sub/tagger_copy.safetensors")
    assert detector in cache.values()
    gone = weakref.ref(detector)
    del detector
    gc.collect()
    assert gone() is None and not any(d.source == str(copy) for d in cache.values())  # ComfyUI's cache decides
    copy.unlink()


def test_loaders_rerun_when_their_file_changes(pack, comfy_base):
    fingerprint = pack.node("LoadPoseEstimator|illustpose").fingerprint_inputs
    path = comfy_base / "models" / "illustpose" / "feat_match+data.safetensors"
    auto, chosen = fingerprint(weights="auto", precision="fp32"), fingerprint(weights=path.name, precision="fp32")
    assert fingerprint(weights="auto", precision="fp32") == auto and auto == chosen  # the one pose file
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1000))
    assert fingerprint(weights="auto", precision="fp32") != auto
    assert fingerprint(weights=path.name, precision="fp32") != chosen
    assert fingerprint(weights="gone.safetensors") != fingerprint(weights="gone.safetensors")  # NaN: re-run


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
    copy.unlink()  # the other tests see the folder as it was


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
