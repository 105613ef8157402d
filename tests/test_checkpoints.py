"""Checkpoint reading: every released format, untrusted pickles, damaged and wrong files."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import pytest
import torch

from checkpoint_factory import AUTHORS_PATHS
from illustpose.checkpoints import read_checkpoint, read_torch_zip
from illustpose.convert import convert
from illustpose.errors import CheckpointError, UnsafeCheckpointError, WrongModelError
from illustpose.models.pose import PoseEstimator
from illustpose.models.segmenter import CharacterSegmenter
from illustpose.models.tagger import DanbooruTagger


def test_lightning_ckpt_reads_without_lightning_or_easydict(authors_tree, golden_state_dicts):
    import sys

    assert "pytorch_lightning" not in sys.modules and "easydict" not in sys.modules
    ck = read_checkpoint(authors_tree / AUTHORS_PATHS["tagger"])
    assert ck.format == "lightning"
    assert ck.hparams["largs"]["danbooru_sfw"]["size"] == 256
    assert isinstance(ck.hparams["largs"], dict) and type(ck.hparams["largs"]) is dict
    assert set(ck.state_dict) == set(golden_state_dicts["tagger"])
    for k, v in golden_state_dicts["tagger"].items():
        assert torch.equal(ck.state_dict[k], v), k
    with zipfile.ZipFile(authors_tree / AUTHORS_PATHS["tagger"]) as zf:
        assert "archive/data.pkl" in zf.namelist()  # the authors' layout, storages tagged cuda:0
        assert b"cuda:0" in zf.read("archive/data.pkl")
    assert "pytorch_lightning" not in sys.modules and "easydict" not in sys.modules


def test_pose_ckpt_keeps_all_916_keys(authors_tree):
    ck = read_checkpoint(authors_tree / AUTHORS_PATHS["feat_match+data"])
    assert len(ck.state_dict) == 916
    assert sum(k.startswith("rcnn.") for k in ck.state_dict) == 573


def test_hf_formats_equal_lightning(hf_tree, golden_state_dicts):
    for name, model in (("tagger.pth", "tagger"), ("segmenter.pth", "segmenter")):
        ck = read_checkpoint(hf_tree / name)
        assert ck.format == "hf_pth" and ck.hparams == {}
        assert set(ck.state_dict) == set(golden_state_dicts[model])
        assert all(torch.equal(ck.state_dict[k], v) for k, v in golden_state_dicts[model].items())


def test_hf_tagger_finds_tags_txt(hf_tree):
    tagger = DanbooruTagger.from_pretrained(hf_tree / "tagger.pth")
    assert tagger.tag_names[:2] == ["tag_0000", "tag_0001"] and tagger.size == 256


def test_convert_round_trip(authors_tree, tmp_path, golden_state_dicts):
    for kind, rel in (("tagger", AUTHORS_PATHS["tagger"]), ("segmenter", AUTHORS_PATHS["segmenter"]),
                      ("feat_match", AUTHORS_PATHS["feat_match+data"])):
        dst = convert(authors_tree / rel, tmp_path / f"{kind}.safetensors")
        ck = read_checkpoint(dst)
        assert ck.format == "safetensors" and ck.metadata["model"] == kind
        assert ck.metadata["source"] == os.path.basename(rel) and len(ck.metadata["source_sha256"]) == 64
        assert not any(k.startswith("rcnn.") for k in ck.state_dict)
        for k, v in ck.state_dict.items():
            assert torch.equal(v, golden_state_dicts[kind][k]), k
    det = PoseEstimator.from_pretrained(tmp_path / "feat_match.safetensors")
    assert (det.crop_size, det.padding, det.net.heatmap_size) == (256, 0.1, 128)
    tagger = DanbooruTagger.from_pretrained(tmp_path / "tagger.safetensors")
    assert len(tagger.tag_names) == 1062  # names travel inside the converted file


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _torch_zip_with(obj, path):
    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())
    return path


def test_malicious_pickle_executes_nothing(tmp_path, monkeypatch):
    path = _torch_zip_with({"state_dict": {"x": _Evil()}}, tmp_path / "evil.ckpt")
    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    with pytest.raises(UnsafeCheckpointError, match=r"'(posix|os|nt)\.system'"):
        read_checkpoint(path)
    assert calls == []


def test_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(CheckpointError, match="legacy"):
        read_checkpoint(path)


def test_truncated_checkpoint(authors_tree, tmp_path):
    data = (authors_tree / AUTHORS_PATHS["tagger"]).read_bytes()
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|damaged"):
        read_checkpoint(bad)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.ckpt"
    p.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        read_checkpoint(p)
    with pytest.raises(CheckpointError, match="no such"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_wrong_model_is_named(authors_tree, hf_tree):
    with pytest.raises(WrongModelError, match="holds a Danbooru tagger.*segmenter"):
        CharacterSegmenter.from_pretrained(authors_tree / AUTHORS_PATHS["tagger"])
    with pytest.raises(WrongModelError, match="holds a character segmenter"):
        PoseEstimator.from_pretrained(hf_tree / "segmenter.pth")


def test_missing_and_unexpected_keys_listed(golden_state_dicts, tmp_path):
    sd = dict(golden_state_dicts["tagger"])
    sd.pop("resnet.layer1.0.conv1.weight")
    sd["resnet.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"missing resnet\.layer1\.0\.conv1\.weight; unexpected resnet\.extra\.weight"):
        _load_tagger(sd, tmp_path)


def _load_tagger(sd, tmp_path):
    (tmp_path / "tags.txt").write_text("".join(f"t{i}\n" for i in range(1062)))
    return DanbooruTagger.from_pretrained(_torch_zip_with(sd, tmp_path / "t.pth"))


def test_tag_count_mismatch(hf_tree, tmp_path):
    names = tmp_path / "few.txt"
    names.write_text("a\nb\n")
    with pytest.raises(CheckpointError, match="expected 1062 tag names.*got 2"):
        DanbooruTagger.from_pretrained(hf_tree / "tagger.pth", tags=names)


def test_feat_concat_head_without_rcnn_asks_for_it(golden_state_dicts, tmp_path):
    sd = {k: v for k, v in golden_state_dicts["feat_match"].items() if "matcher_rcnn" not in k and not k.startswith("rcnn.")}
    sd["keypoint_head.converter_rcnn.weight"] = sd.pop("keypoint_head.converter_rcnn.0.weight")[:, :17]
    with pytest.raises(CheckpointError, match="feat_concat pose head without the Keypoint R-CNN.*rcnn_weights"):
        PoseEstimator.from_pretrained(_torch_zip_with({"state_dict": sd, "hyper_parameters": {}}, tmp_path / "feat_concat.ckpt"))


def test_read_torch_zip_refuses_unknown_global(tmp_path):
    path = _torch_zip_with({"a": zipfile.ZipFile}, tmp_path / "x.pt")
    with pytest.raises(UnsafeCheckpointError, match="zipfile.ZipFile"):
        read_torch_zip(path)


# ---------------------------------------------------------------- ComfyUI-AnimePose's files


def test_animepose_segmenter_loads_as_is(golden_state_dicts, tmp_path):
    """``character_bg_seg.safetensors`` (Lightning key names, the authors' dtypes, free-text
    metadata) loads directly; converting it names it, not the text of its metadata."""
    from checkpoint_factory import write_animepose_segmenter
    from illustpose.fileio import sha256_file

    path = write_animepose_segmenter(tmp_path / "character_bg_seg.safetensors", golden_state_dicts["segmenter"])
    ck = read_checkpoint(path)
    assert ck.format == "safetensors" and ck.hparams == {} and ck.metadata == {}  # not illustpose's metadata
    assert {v.dtype for v in ck.state_dict.values()} == {torch.float32, torch.int64} and len(ck.state_dict) == 690
    seg = CharacterSegmenter.from_pretrained(path)
    own = seg.net.state_dict()
    assert seg.size == 256 and all(torch.equal(own[k], v) for k, v in golden_state_dicts["segmenter"].items())
    meta = read_checkpoint(convert(path, tmp_path / "segmenter.safetensors")).metadata
    assert meta["source"] == "character_bg_seg.safetensors" and meta["source_sha256"] == sha256_file(path)


def test_saved_safetensors_have_the_umask_mode(tmp_path):
    import os
    import stat

    import torch

    from illustpose.checkpoints import save_safetensors

    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "w.safetensors"
    save_safetensors(path, {"x": torch.zeros(2)}, model="segmenter", hparams={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not safetensors' own 0600


def test_safetensors_without_hparams_load_with_the_released_values(tmp_path):
    import torch

    from illustpose.checkpoints import read_checkpoint, save_safetensors
    from illustpose.errors import CheckpointError
    from illustpose.models.feat_match import FeatMatchPoseNet
    from illustpose.models.pose import PoseEstimator

    path = tmp_path / "pose.safetensors"
    save_safetensors(path, FeatMatchPoseNet().state_dict(), model="feat_match", hparams=None)
    assert PoseEstimator.from_checkpoint(read_checkpoint(path)).crop_size == 256
    save_safetensors(path, {"x": torch.zeros(1)}, model="feat_match", hparams=[1])
    with pytest.raises(CheckpointError, match="not a JSON object"):
        read_checkpoint(path)


# ---------------------------------------------------------------- allow-list stand-ins


def test_model_zoo_pkl_refuses_numpy_calls_that_allocate(tmp_path):
    import numpy as np

    from illustpose.checkpoints import read_model_zoo_pkl

    view = pickle.dumps({"model": {"w": _Reduce(np.ndarray, (2_000_000, 300), "f8", b"\0" * 8, 0, (0, 0))}}, 2)
    reconstruct = np.zeros(1).__reduce__()[0]
    big = pickle.dumps({"model": {"w": _Reduce(reconstruct, np.ndarray, (1000,), b"b")}}, 2)
    many = pickle.dumps({"model": {"w": _Reduce(bytes, 10**6)}}, 2)
    for name, blob, match in (("view", view, "numpy.ndarray"), ("big", big, r"shape \(1000,\)"),
                              ("many", many, r"bytes\(1000000,\)"),
                              ("old", big.replace(b"numpy._core", b"numpy.core"), r"shape \(1000,\)")):
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(blob)
        with pytest.raises(UnsafeCheckpointError, match=rf"{name}\.pkl: refused: .*{match}"):
            read_model_zoo_pkl(path)
    good = tmp_path / "good.pkl"  # a protocol-2 file with numpy 1.x names and an empty array reads
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "e": np.zeros((0, 4), dtype=np.float32)}
    good.write_bytes(pickle.dumps({"model": arrays}, 2).replace(b"numpy._core", b"numpy.core"))
    got = read_model_zoo_pkl(good)
    assert got["w"].tolist() == arrays["w"].tolist() and tuple(got["e"].shape) == (0, 4)


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_build_on_allowed_globals_does_not_reach_the_next_load(tmp_path):
    """A pickle's BUILD step sets attributes on what find_class gives it; the shared allow-list
    objects (storage markers, placeholders, Python functions, classes) stay as they were."""
    from illustpose.checkpoints import _TORCH_ALLOWED, _ZOO_ALLOWED, RestrictedUnpickler

    class Unpickler(RestrictedUnpickler):
        allowed = {**_TORCH_ALLOWED, **_ZOO_ALLOWED}

    float_storage = _TORCH_ALLOWED[("torch", "FloatStorage")]
    try:
        for module, name in Unpickler.allowed:
            for attr, value in (("zz_changed", b"K\x01"), ("dtype", b"N")):  # dtype: the storage markers'
                blob = (b"\x80\x02" + f"c{module}\n{name}\n".encode() + b"N}X" + len(attr).to_bytes(4, "little")
                        + attr.encode() + value + b"s\x86b.")
                try:
                    Unpickler(io.BytesIO(blob), "t.pkl").load()
                except (CheckpointError, TypeError, AttributeError):
                    pass  # C objects cannot be changed at all
        assert [key for key, obj in Unpickler.allowed.items() if hasattr(obj, "zz_changed")] == []
        assert float_storage.dtype is torch.float32
    finally:
        float_storage.dtype = torch.float32
        for obj in Unpickler.allowed.values():
            if "zz_changed" in getattr(obj, "__dict__", {}):
                delattr(obj, "zz_changed")
