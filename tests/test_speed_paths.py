"""The fast paths: precision options and trunk sharing (correctness only; timings live in benchmarks/)."""

from __future__ import annotations

import gc
import json
import os
import sys
import warnings

import pytest
import torch

from illustpose import detector
from illustpose.checkpoints import save_safetensors
from illustpose.detector import resolve_precision
from illustpose.models.feat_match import FeatMatchPoseNet
from illustpose.models.tagger import DanbooruTaggerNet
from illustpose.pipeline import Pipeline, share_trunk
from illustpose.models.pose import PoseEstimator
from illustpose.models.tagger import DanbooruTagger


def _pair(same: bool, device: str = "cpu"):
    torch.manual_seed(0)
    tagger = DanbooruTagger(DanbooruTaggerNet(4), ["a", "b", "c", "d"])
    pose_net = FeatMatchPoseNet(heatmap_size=32)
    if same:
        sd = {k: v for k, v in tagger.net.resnet.state_dict().items() if not k.startswith(("layer4", "fc"))}
        pose_net.resnet.load_state_dict(sd)
    return tagger.to(device), PoseEstimator(pose_net.eval(), crop_size=64).to(device)


def test_identical_trunks_are_shared_and_outputs_unchanged(device):
    tagger, pose = _pair(same=True, device=device)
    x = torch.rand(1, 3, 64, 64)
    before = pose.heatmaps(x)
    pipe = Pipeline(tagger=tagger, pose=pose)
    assert pipe.trunk_shared and pose.net.resnet.layer3 is tagger.net.resnet.layer3
    assert torch.equal(pose.heatmaps(x), before)
    params = {id(p) for p in (*tagger.net.parameters(), *pose.net.parameters())}
    assert len(params) < len(list(tagger.net.parameters())) + len(list(pose.net.parameters()))


def test_different_trunks_are_not_shared(device):
    tagger, pose = _pair(same=False, device=device)
    assert not share_trunk(tagger, pose)
    assert pose.net.resnet.layer3 is not tagger.net.resnet.layer3


def test_precision_option_validated_and_bf16_close(device):
    tagger, pose = _pair(same=False, device=device)
    x = torch.rand(2, 3, 64, 64)
    ref = pose.heatmaps(x)
    pose.to(precision="bf16")
    fast = pose.heatmaps(x)
    assert fast.dtype == torch.float32 and fast.shape == ref.shape
    assert torch.allclose(fast, ref, atol=0.5)
    with pytest.raises(ValueError, match="precision must be one of"):
        pose.to(precision="int8")


def test_half_precision_stores_half_weights_and_cannot_go_back(device):
    tagger, pose = _pair(same=False, device=device)
    conv, bn = pose.net.resnet.conv1, pose.net.resnet.bn1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pose.to(precision="fp16")
    assert any("fp16 on a CPU" in str(w.message) for w in caught) == (pose.device.type == "cpu")
    x = torch.rand(2, 3, 64, 64)
    assert torch.isfinite(pose.heatmaps(x)).all()
    assert conv.weight.dtype == torch.float16 and bn.running_var.dtype == torch.float32
    with pytest.raises(ValueError, match="load it again with precision='fp32'"):
        pose.to(precision="fp32")


def test_trunks_in_different_precisions_are_not_shared(device):
    tagger, pose = _pair(same=True, device=device)
    tagger.to(precision="bf16")
    assert not share_trunk(tagger, pose)
    pose.to(precision="bf16")
    assert share_trunk(tagger, pose)


def test_compiled_detector_refuses_later_changes(device):
    _, pose = _pair(same=False, device=device)
    assert pose.compile() is pose  # wrapping only: nothing compiles before the first call
    assert pose.to(device, precision="fp32") is pose  # no change: fine
    with pytest.raises(ValueError, match="compiled"):
        pose.to(precision="bf16")


def _mapped(path) -> bool:
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(str(path)) for line in f)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_half_precision_load_lets_go_of_the_mapped_file(tmp_path):
    path = tmp_path / "tagger.safetensors"
    save_safetensors(path, DanbooruTaggerNet(4).state_dict(),
                     model="tagger", hparams={}, extra={"tags": json.dumps(list("abcd"))})
    exact = DanbooruTagger.from_pretrained(path)
    assert _mapped(path)  # fp32: the weights are the file's pages
    del exact
    gc.collect()
    half = DanbooruTagger.from_pretrained(path, precision="bf16")
    gc.collect()
    assert not _mapped(path), "a half-precision detector still holds a view of the float32 file"
    assert half.net.resnet.fc.weight.dtype == torch.bfloat16


def test_no_tf32_inside_and_restored_after():
    from illustpose.detector import _no_tf32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with _no_tf32():
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_auto_precision_is_exact_on_every_cpu_and_fp16_on_cuda(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(detector, "native_bf16_cpu", lambda native=native: native)
        assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda:1") == "fp16"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be auto or one of fp32, bf16, fp16"):
        resolve_precision("half", "cpu")


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch, native):
    monkeypatch.setattr(detector, "native_bf16_cpu", lambda: native)
    tagger, _ = _pair(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tagger.to(precision="bf16")
    assert [str(w.message) for w in caught if "emulated" in str(w.message)] == ([] if native else [
        "bf16 on this CPU (no AVX512-BF16, AMX or Arm BF16) is emulated and runs about 7x slower than fp32; "
        "use fp32 (--precision auto)"])


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    real_open = open

    def cpuinfo(text):
        def fake_open(path, *a, **k):
            if path == "/proc/cpuinfo":
                (tmp_path / "cpuinfo").write_text(text)
                return real_open(tmp_path / "cpuinfo", *a, **k)
            return real_open(path, *a, **k)
        return fake_open

    for text, expected in (("flags\t\t: fpu avx2 avx512f avx512_bf16\n", True), ("flags\t: fpu avx2 fma\n", False),
                           ("Features\t: fp asimd bf16 i8mm\n", True), ("processor\t: 0\n", False)):
        monkeypatch.setattr("builtins.open", cpuinfo(text))
        assert detector.native_bf16_cpu() is expected, text


class _TinyDetector(detector.Detector):
    """A detector around one convolution: compiles in moments."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(torch.nn.Conv2d(3, 4, 3, padding=1))


def test_compile_keeps_its_caches_in_the_user_cache_unless_told(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    _TinyDetector().compile()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "illustpose" / "compile")
    assert detector.compile_cache_dir() == tmp_path / "illustpose" / "compile"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    _TinyDetector().compile()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "mine")


def _count_compiles(monkeypatch):
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda net, **kw: real_compile(net, backend=counter))
    torch._dynamo.reset()
    return counter


def test_a_compiled_detector_compiles_once_for_every_batch_size_past_one(monkeypatch, device):
    """The batch dimension is marked dynamic: batch 2 compiles, 3 and 5 reuse that graph (before,
    torch's automatic dynamic shapes compiled batch 3 again)."""
    counter = _count_compiles(monkeypatch)
    det = _TinyDetector().to(device).compile()
    outs = [det.forward(torch.rand(b, 3, 8, 8)) for b in (2, 3, 5)]
    assert [tuple(o.shape) for o in outs] == [(2, 4, 8, 8), (3, 4, 8, 8), (5, 4, 8, 8)]
    assert counter.frame_count == 1
    x = torch.rand(3, 3, 8, 8)
    assert torch.equal(det.forward(x), _TinyDetector().to(device).forward(x))  # same seed, eager


def test_a_compiled_segmenter_compiles_once_for_every_image_size(monkeypatch, device):
    """Its height and width are marked dynamic too: its input follows each image's aspect ratio."""
    from illustpose.models.segmenter import CharacterSegmenter, CharacterSegmenterNet

    counter = _count_compiles(monkeypatch)
    torch.manual_seed(0)
    seg = CharacterSegmenter(CharacterSegmenterNet()).to(device).compile()
    sizes = ((96, 128), (128, 96), (96, 160))  # past a size threshold in convolution layout choice
    assert [tuple(seg.forward(torch.rand(1, 3, h, w)).shape) for h, w in sizes] == [(1, 2, h, w) for h, w in sizes]
    assert counter.frame_count == 1
