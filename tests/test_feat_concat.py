"""feat_concat (reference passup.py) and its Detectron2-free keypoint_rcnn_R_101_FPN_3x branch.

No Detectron2 and no golden data for feat_concat exist here, so each step is pinned to its
documented definition (Detectron2 v0.3-v0.6 sources and the COCO-Keypoints config): frozen
BN, stride placement, FPN top-down order, ROIAlignV2 sampling, pooler level assignment,
size-divisibility padding, keypoint head shapes; then the whole network round-trips through
an authors'-format checkpoint with random weights.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from checkpoint_factory import write_lightning_ckpt
from illustpose.checkpoints import read_checkpoint, read_model_zoo_pkl
from illustpose.errors import CheckpointError, UnsafeCheckpointError
from illustpose.loading import load_strict
from illustpose.registry import detect_architecture
from illustpose.models._common import resize_short_side
from illustpose.models.feat_concat import IGNORED_CHECKPOINT_KEYS, RCNN_PREFIX, FeatConcatPoseNet
from illustpose.models.keypoint_rcnn import (FPN, PIXEL_MEAN_BGR, UNUSED_DETECTRON2_KEYS, BottleneckBlock,
                                             FrozenBatchNorm2d, KeypointHead, KeypointRCNNBranch, ResNet,
                                             assign_boxes_to_levels, branch_weights, pool_box_features,
                                             reference_boxes)


def load_model_zoo_pkl(path) -> dict[str, torch.Tensor]:
    """The R-CNN branch's tensors from a model-zoo file, as feat_concat's builder reads them."""
    return branch_weights(read_model_zoo_pkl(path), str(path))


def _unused_tensors(layout: str = "v0.4") -> dict[str, torch.Tensor]:
    """The Detectron2 tensors inference never reads, as a file of that layout holds them."""
    out = {}
    for k, shape in UNUSED_DETECTRON2_KEYS.items():
        if k.startswith("pixel_"):
            if layout == "v0.3":
                out[k] = torch.tensor(PIXEL_MEAN_BGR if k == "pixel_mean" else (1.0, 1.0, 1.0)).view(3, 1, 1)
        elif not (layout == "v0.5" and "cell_anchors" in k):
            out[k] = torch.randn(shape)
    return out


@pytest.fixture(scope="module")
def model_sd() -> dict[str, torch.Tensor]:
    """A random FeatConcatPoseNet state dict (890 keys) with non-trivial frozen-BN statistics."""
    torch.manual_seed(0)
    sd = FeatConcatPoseNet().state_dict()
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():
        if k.startswith(RCNN_PREFIX) and ".norm." in k:
            if k.endswith("running_var"):
                v.copy_(0.5 + torch.rand(v.shape, generator=g))
            elif k.endswith(("running_mean", "bias")):
                v.copy_(0.1 * torch.randn(v.shape, generator=g))
            else:
                v.copy_(0.8 + 0.4 * torch.rand(v.shape, generator=g))
    return sd


# ----------------------------------------------------------------------------- frozen BN


def test_frozen_bn_is_detectron2s_formula_with_eps_1e5():
    bn = FrozenBatchNorm2d(6)
    assert bn.eps == 1e-5 and not list(bn.parameters())
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    g = torch.Generator().manual_seed(0)
    for name in ("weight", "bias", "running_mean"):
        getattr(bn, name).copy_(torch.randn(6, generator=g))
    bn.running_var.copy_(torch.rand(6, generator=g) * 1e-4)  # small var: eps matters
    x = torch.randn(2, 6, 5, 4, generator=g)
    expect = ((x.double() - bn.running_mean.double().view(1, -1, 1, 1))
              / torch.sqrt(bn.running_var.double().view(1, -1, 1, 1) + 1e-5)
              * bn.weight.double().view(1, -1, 1, 1) + bn.bias.double().view(1, -1, 1, 1))
    torch.testing.assert_close(bn(x).double(), expect, rtol=1e-5, atol=1e-5)
    # Detectron2's no-grad path is F.batch_norm(training=False); equal to the rsqrt form to rounding
    from torchvision.ops.misc import FrozenBatchNorm2d as TvFrozen
    tv = TvFrozen(6)
    tv.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn(x), tv(x), rtol=1e-6, atol=1e-5)
    # a num_batches_tracked key (torchvision BN layout) is tolerated, as in Detectron2
    bn.load_state_dict({**bn.state_dict(), "num_batches_tracked": torch.tensor(0)})


# ----------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize("stride_in_1x1, s1, s3", [(True, 2, 1), (False, 1, 2)])
def test_bottleneck_stride_placement(stride_in_1x1, s1, s3):
    block = BottleneckBlock(256, 512, 128, stride=2, stride_in_1x1=stride_in_1x1)
    assert block.conv1.stride == (s1, s1) and block.conv1.kernel_size == (1, 1)
    assert block.conv2.stride == (s3, s3) and block.conv2.kernel_size == (3, 3) and block.conv2.padding == (1, 1)
    assert block.conv3.stride == (1, 1) and block.shortcut.stride == (2, 2)
    assert block(torch.randn(1, 256, 16, 16)).shape == (1, 512, 8, 8)
    assert BottleneckBlock(512, 512, 128).shortcut is None
    # Detectron2 names: bias-free convs with a FrozenBN 'norm'; shortcut registered first
    assert list(block.state_dict())[:6] == ["shortcut.weight", "shortcut.norm.weight", "shortcut.norm.bias",
                                            "shortcut.norm.running_mean", "shortcut.norm.running_var", "conv1.weight"]
    assert not any(k.endswith(".bias") and ".norm." not in k for k in block.state_dict())


def test_resnet101_layout_follows_the_config():
    with torch.device("meta"):
        net = ResNet()
    assert [len(getattr(net, f"res{i}")) for i in range(2, 6)] == [3, 4, 23, 3]
    assert len(net.state_dict()) == 520  # stem 5 + 33 blocks * 15 + 4 shortcuts * 5
    assert net.stem.conv1.kernel_size == (7, 7) and net.stem.conv1.stride == (2, 2) and net.stem.conv1.padding == (3, 3)
    assert net.res2[0].conv1.stride == (1, 1)  # res2 keeps the stem's stride
    for i in (3, 4, 5):  # STRIDE_IN_1X1: the stage's stride is in its first block's 1x1 conv
        stage = getattr(net, f"res{i}")
        assert stage[0].conv1.stride == (2, 2) and stage[0].conv2.stride == (1, 1)
        assert all(b.conv1.stride == (1, 1) and b.conv2.stride == (1, 1) and b.shortcut is None for b in stage[1:])
    small = ResNet(num_blocks=(1, 1, 1, 1)).eval()
    feats = small(torch.randn(1, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "res2": (1, 256, 16, 24), "res3": (1, 512, 8, 12), "res4": (1, 1024, 4, 6), "res5": (1, 2048, 2, 3)}


# ----------------------------------------------------------------------------- FPN


class _Fixed(torch.nn.Module):
    def __init__(self, feats):
        super().__init__()
        self.feats = feats

    def forward(self, x):
        return self.feats


def test_fpn_top_down_order_and_shapes():
    g = torch.Generator().manual_seed(0)
    chans = (3, 4, 5, 6)
    c = {f"res{s}": torch.randn(1, ch, 2 ** (6 - s), 3 * 2 ** (6 - s), generator=g)
         for s, ch in zip(range(2, 6), chans)}
    fpn = FPN(_Fixed(c), in_channels=chans, out_channels=2)
    assert [n for n, _ in fpn.named_children()] == [
        "fpn_lateral2", "fpn_output2", "fpn_lateral3", "fpn_output3", "fpn_lateral4", "fpn_output4",
        "fpn_lateral5", "fpn_output5", "bottom_up"]
    for p in fpn.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g))

    def lat(s):
        m = getattr(fpn, f"fpn_lateral{s}")
        return F.conv2d(c[f"res{s}"], m.weight, m.bias)

    def out(s, t):
        m = getattr(fpn, f"fpn_output{s}")
        return F.conv2d(t, m.weight, m.bias, padding=1)

    def up2(t):  # nearest 2x, written without F.interpolate
        return t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    with torch.no_grad():
        got = fpn(None)
        inner5 = lat(5)
        inner4 = lat(4) + up2(inner5)
        inner3 = lat(3) + up2(inner4)
        inner2 = lat(2) + up2(inner3)
        expect = {"p5": out(5, inner5), "p4": out(4, inner4), "p3": out(3, inner3), "p2": out(2, inner2)}
        assert sorted(got) == ["p2", "p3", "p4", "p5"]
        for k in expect:
            torch.testing.assert_close(got[k], expect[k])
        assert got["p2"].shape == (1, 2, 16, 48) and got["p5"].shape == (1, 2, 2, 6)
        # a subset of levels stops the top-down pass early and keeps the values
        assert torch.equal(fpn(None, levels={5})["p5"], got["p5"]) and list(fpn(None, levels={5})) == ["p5"]
        sub = fpn(None, levels={3, 5})
        assert sorted(sub) == ["p3", "p5"] and torch.equal(sub["p3"], got["p3"])


# ----------------------------------------------------------------------------- pooler


def _roi_align_v2_reference(feat: np.ndarray, box, scale: float, out: int = 14) -> np.ndarray:
    """ROIAlign as Detectron2's ROIAlign(aligned=True) docstring and kernel define it, in float64.

    Box corners are scaled then shifted by -0.5 (pixel centres at integer + 0.5); each of the
    out x out bins averages ceil(roi / out) x ceil(roi / out) bilinear samples at the centres
    of a regular sub-grid; a sample beyond one pixel outside the map is 0, others are clamped.
    """
    c, h, w = feat.shape
    x1, y1, x2, y2 = (v * scale - 0.5 for v in box)
    bin_h, bin_w = (y2 - y1) / out, (x2 - x1) / out
    gh, gw = math.ceil((y2 - y1) / out), math.ceil((x2 - x1) / out)

    def sample(y, x):
        if y < -1.0 or y > h or x < -1.0 or x > w:
            return np.zeros(c)
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= h - 1:
            y0 = y1_ = h - 1
            y = float(y0)
        else:
            y1_ = y0 + 1
        if x0 >= w - 1:
            x0 = x1_ = w - 1
            x = float(x0)
        else:
            x1_ = x0 + 1
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * feat[:, y0, x0] + (1 - ly) * lx * feat[:, y0, x1_]
                + ly * (1 - lx) * feat[:, y1_, x0] + ly * lx * feat[:, y1_, x1_])

    res = np.zeros((c, out, out))
    for ph in range(out):
        for pw in range(out):
            acc = np.zeros(c)
            for iy in range(gh):
                for ix in range(gw):
                    acc += sample(y1 + ph * bin_h + (iy + 0.5) * bin_h / gh, x1 + pw * bin_w + (ix + 0.5) * bin_w / gw)
            res[:, ph, pw] = acc / (gh * gw)
    return res


def test_roi_align_v2_hand_computed_on_a_linear_map():
    # f(y, x) = 16 y + x on P2 (stride 4) of a 64x64 image: bilinear sampling is exact on it,
    # so each bin is f at its centre, shifted by half a pixel (aligned=True)
    p2 = (16 * torch.arange(16.0)[:, None] + torch.arange(16.0)[None, :]).view(1, 1, 16, 16)
    box = torch.tensor([[10.0, 14.0, 50.0, 42.0]])  # XYXY image pixels, sqrt(area) 33 -> P2
    assert assign_boxes_to_levels(box).tolist() == [0]
    pooled = pool_box_features({"p2": p2}, box)[0, 0].double()
    x1, y1 = 10 / 4 - 0.5, 14 / 4 - 0.5
    bin_w, bin_h = (50 - 10) / 4 / 14, (42 - 14) / 4 / 14
    ph, pw = torch.meshgrid(torch.arange(14.0), torch.arange(14.0), indexing="ij")
    expect = 16 * (y1 + (ph + 0.5) * bin_h) + (x1 + (pw + 0.5) * bin_w)
    torch.testing.assert_close(pooled, expect.double(), rtol=0, atol=1e-4)
    assert pooled[0, 0].item() == pytest.approx(16 * (3.0 + 0.25) + (2.0 + 5 / 14), abs=1e-4)


@pytest.mark.parametrize("hw, box", [
    ((800, 800), [0.0, 0.0, 800.0, 800.0]),        # the reference's box: P5, 2x2 samples per bin
    ((800, 1216), [0.0, 0.0, 800.0, 1200.0]),      # its swapped-order box on a padded 800x1200 image
    ((256, 256), [-20.0, 37.5, 301.0, 250.0]),     # crossing the borders
])
def test_roi_align_v2_matches_the_documented_sampling(hw, box):
    g = torch.Generator().manual_seed(0)
    feats = {f"p{s}": torch.randn(1, 3, hw[0] // 2 ** s, hw[1] // 2 ** s, generator=g) for s in range(2, 6)}
    boxes = torch.tensor([box])
    level = assign_boxes_to_levels(boxes).item()
    got = pool_box_features(feats, boxes)[0].double().numpy()
    ref = _roi_align_v2_reference(feats[f"p{level + 2}"][0].double().numpy(), box, 1 / 2 ** (level + 2))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    # aligned=False (ROIAlign v1) would give something else: the half-pixel shift is in use
    from torchvision.ops import roi_align
    v1 = roi_align(feats[f"p{level + 2}"], torch.tensor([[0.0, *box]]), 14, 1 / 2 ** (level + 2), 0, aligned=False)
    assert not np.allclose(v1[0].numpy(), ref, atol=1e-3)


def test_level_assignment_is_detectron2s_formula():
    def formula(side):  # poolers.assign_boxes_to_levels, canonical 224 at level 4, P2..P5
        return min(max(math.floor(4 + math.log2(side / 224 + 1e-8)), 2), 5) - 2

    # the reference's box on its 800x800 input (a 256x256 crop resized to 800)
    assert formula(math.sqrt(800 * 800)) == 3  # P5
    assert assign_boxes_to_levels(reference_boxes(1, 800, 800)).tolist() == [formula(800)]
    sides = [4.0, 60.0, 111.9, 112.0, 150.0, 223.9, 224.0, 300.0, 447.9, 448.0, 1000.0, 5000.0]
    boxes = torch.tensor([[5.0, 7.0, 5.0 + s, 7.0 + s] for s in sides])
    assert assign_boxes_to_levels(boxes).tolist() == [formula(s) for s in sides]
    # a batch pools each box on its own level, as one box at a time
    g = torch.Generator().manual_seed(0)
    feats = {f"p{s}": torch.randn(3, 2, 256 // 2 ** s, 256 // 2 ** s, generator=g) for s in range(2, 6)}
    batch = torch.tensor([[0.0, 0.0, 256.0, 256.0], [10.0, 10.0, 40.0, 50.0], [0.0, 30.0, 150.0, 200.0]])
    assert assign_boxes_to_levels(batch).tolist() == [2, 0, 1]
    pooled = pool_box_features(feats, batch)
    for i in range(3):
        one = pool_box_features({k: v[i:i + 1] for k, v in feats.items()}, batch[i:i + 1])
        assert torch.equal(pooled[i:i + 1], one)


def test_reference_box_keeps_the_xyxy_order_slip():
    # passup.py: Boxes([0, 0, h, w]) with (h, w) the unpadded resized size: x2 = h, y2 = w
    assert reference_boxes(2, 800, 1200).tolist() == [[0.0, 0.0, 800.0, 1200.0]] * 2
    assert reference_boxes(1, 1200, 800).dtype == torch.float32


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_resize_bgr_mean_and_size_divisibility_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 256, 384, generator=g)
    images, hw = KeypointRCNNBranch.preprocess(x)
    assert hw == (800, 1200) and images.shape == (2, 3, 800, 1216)  # 1200 -> next multiple of 32
    assert torch.count_nonzero(images[..., 1200:]) == 0  # zero padding after normalisation
    resized = F.interpolate(x, size=(800, 1200), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(PIXEL_MEAN_BGR).view(1, 3, 1, 1)
    torch.testing.assert_close(images[..., :1200], 255 * resized.flip(1) - mean)
    # channel order: a pure red input lands in channel 2 (BGR)
    red = torch.zeros(1, 3, 256, 256)
    red[:, 0] = 1
    images, hw = KeypointRCNNBranch.preprocess(red)
    assert hw == (800, 800) and images.shape == (1, 3, 800, 800)  # 800 is already a multiple of 32
    assert images[0, :, 0, 0].tolist() == pytest.approx([-103.53, -116.28, 255 - 123.675])
    assert resize_short_side(torch.zeros(1, 3, 300, 200), 800).shape == (1, 3, 1200, 800)


# ----------------------------------------------------------------------------- keypoint head


def test_keypoint_head_shapes_and_upsampling():
    head = KeypointHead().eval()
    names = [n for n, _ in head.named_children()]
    assert names == [f"{k}{i}" for i in range(1, 9) for k in ("conv_fcn", "conv_fcn_relu")] + ["score_lowres"]
    assert head.score_lowres.weight.shape == (512, 17, 4, 4)
    assert (head.score_lowres.stride, head.score_lowres.padding) == ((2, 2), (1, 1))
    lowres = {}
    head.score_lowres.register_forward_hook(lambda m, i, o: lowres.setdefault("x", o))
    with torch.no_grad():
        out = head(torch.randn(2, 256, 14, 14))
    assert lowres["x"].shape == (2, 17, 28, 28) and out.shape == (2, 17, 56, 56)
    torch.testing.assert_close(out, F.interpolate(lowres["x"], size=(56, 56), mode="bilinear", align_corners=False))


# ----------------------------------------------------------------------------- model-zoo pkl


def test_model_zoo_pkl_round_trip(tmp_path, model_sd):
    branch = {k[len(RCNN_PREFIX):]: v for k, v in model_sd.items() if k.startswith(RCNN_PREFIX)}
    assert len(branch) == 554
    model = {**{k: v.numpy() for k, v in branch.items()}, **{k: v.numpy() for k, v in _unused_tensors().items()}}
    path = tmp_path / "model_final_997cc7.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f, protocol=4)
    got = load_model_zoo_pkl(path)
    assert list(got) == list(branch)
    assert all(torch.equal(got[k], branch[k]) for k in branch)
    branch_module = load_strict(KeypointRCNNBranch, got, str(path))
    assert len(branch_module.state_dict()) == 554


def _shared_array_pkl(path: Path, model_sd, *, drop=(), add=None, pixel_mean=None, protocol=4) -> Path:
    # one array per shape, referenced by every key of that shape (pickle writes it once)
    by_shape = {}
    model = {}
    names = {k[len(RCNN_PREFIX):]: tuple(v.shape) for k, v in model_sd.items() if k.startswith(RCNN_PREFIX)}
    names.update(UNUSED_DETECTRON2_KEYS)
    for k, shape in names.items():
        if k not in drop:
            model[k] = by_shape.setdefault(shape, np.zeros(shape, np.float32))
    if pixel_mean is not None:
        model["pixel_mean"] = np.asarray(pixel_mean, np.float32).reshape(3, 1, 1)
    model["pixel_std"] = np.ones((3, 1, 1), np.float32)
    model.update(add or {})
    with open(path, "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f, protocol=protocol)
    return path


def test_model_zoo_pkl_is_strict(tmp_path, model_sd):
    for protocol in (2, 4):  # protocol 2 from Python 3 spells bytes as _codecs.encode(str, 'latin1')
        ok = _shared_array_pkl(tmp_path / "ok.pkl", model_sd, pixel_mean=PIXEL_MEAN_BGR, protocol=protocol)
        assert len(load_model_zoo_pkl(ok)) == 554
    cases = {
        "missing": dict(drop=("roi_heads.keypoint_head.score_lowres.bias",)),
        "unexpected": dict(add={"roi_heads.mask_head.predictor.weight": np.zeros((80, 256, 1, 1), np.float32)}),
        "wrong shapes": dict(add={"backbone.fpn_lateral2.bias": np.zeros(255, np.float32)}),
        "pixel_mean": dict(pixel_mean=(123.675, 116.28, 103.53)),  # RGB order: another model
    }
    for word, kw in cases.items():
        with pytest.raises(CheckpointError, match=word):
            load_model_zoo_pkl(_shared_array_pkl(tmp_path / f"{word}.pkl", model_sd, **kw))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_model_zoo_pkl_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    for i, payload in enumerate([
        {"model": {"w": _Evil(marker)}, "__author__": "x"},
        {"model": {"w": np.zeros(2, np.float32)}, "__author__": _Evil(marker)},
    ]):
        path = tmp_path / f"evil{i}.pkl"
        path.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(UnsafeCheckpointError, match=r"(posix|nt|os)\.system"):
            load_model_zoo_pkl(path)
    evil_eval = b"cbuiltins\neval\n(S'print(1)'\ntR."
    (tmp_path / "eval.pkl").write_bytes(evil_eval)
    with pytest.raises(UnsafeCheckpointError, match="builtins.eval"):
        load_model_zoo_pkl(tmp_path / "eval.pkl")
    assert not marker.exists()
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x02}q\x00(X\x05")  # truncated
    with pytest.raises(CheckpointError):
        load_model_zoo_pkl(tmp_path / "junk.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="'model'"):
        load_model_zoo_pkl(tmp_path / "list.pkl")


# ----------------------------------------------------------------------------- end to end


def test_checkpoint_layouts_map_strictly(model_sd):
    """The authors' 909 keys (v0.4), and the 911 (v0.3) and 904 (v0.5+) layouts, all load strictly."""
    for layout, n in (("v0.4", 909), ("v0.3", 911), ("v0.5", 904)):
        sd = {**model_sd, **{RCNN_PREFIX + k: v for k, v in _unused_tensors(layout).items()}}
        assert len(sd) == n and sum(k.startswith(RCNN_PREFIX) for k in sd) == n - 336
        load_strict(FeatConcatPoseNet, sd, layout, ignore_prefixes=IGNORED_CHECKPOINT_KEYS)
    broken = {k: v for k, v in model_sd.items() if k != "rcnn.model.backbone.bottom_up.res4.22.conv3.norm.bias"}
    with pytest.raises(CheckpointError, match="res4.22.conv3.norm.bias"):
        load_strict(FeatConcatPoseNet, broken, "broken", ignore_prefixes=IGNORED_CHECKPOINT_KEYS)
    extra = {**model_sd, "rcnn.model.roi_heads.mask_head.predictor.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="mask_head"):
        load_strict(FeatConcatPoseNet, extra, "extra", ignore_prefixes=IGNORED_CHECKPOINT_KEYS)


def test_feat_concat_lightning_checkpoint_end_to_end(tmp_path, model_sd):
    sd = {**model_sd, **{RCNN_PREFIX + k: v for k, v in _unused_tensors("v0.4").items()}}
    path = write_lightning_ckpt(tmp_path / "feat_concat.ckpt", "feat_concat", sd, trainable_prefix="keypoint_head.")
    ckpt = read_checkpoint(path)
    assert len(ckpt.state_dict) == 909 and detect_architecture(ckpt.state_dict) == "feat_concat"
    counts = {p: sum(k.startswith(p) for k in ckpt.state_dict) for p in ("resnet.", "rcnn.model.", "keypoint_head.")}
    assert counts == {"resnet.": 258, "rcnn.model.": 573, "keypoint_head.": 78}
    net = load_strict(FeatConcatPoseNet, ckpt.state_dict, ckpt.path, ignore_prefixes=IGNORED_CHECKPOINT_KEYS).eval()
    own = net.state_dict()
    assert len(own) + len(IGNORED_CHECKPOINT_KEYS) == 909 + 2  # + the v0.3-only pixel_mean/std
    assert all(torch.equal(own[k], model_sd[k]) for k in own)

    rcnn_out = []
    net.rcnn["model"].register_forward_hook(lambda m, i, o: rcnn_out.append(o))
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        first = net(x)
        second = net(x)
    assert rcnn_out[0].shape == (1, 17, 56, 56) and rcnn_out[0].std() > 0
    assert first.shape == (1, 25, 128, 128) and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(first, second)


def test_pose_estimator_runs_feat_concat_end_to_end(tmp_path, device):
    """A 909-key feat_concat Lightning checkpoint through PoseEstimator on a real sample."""
    from checkpoint_factory import write_lightning_ckpt
    from illustpose.models.pose import PoseEstimator

    torch.manual_seed(0)
    sd = FeatConcatPoseNet().state_dict()
    sd.update({RCNN_PREFIX + k: v for k, v in _unused_tensors("v0.4").items()})
    assert len(sd) == 909
    path = write_lightning_ckpt(tmp_path / "feat_concat+data.ckpt", "feat_match", sd, trainable_prefix="keypoint_head.")
    est = PoseEstimator.from_pretrained(path, device=device)
    assert est.kind == "feat_concat" and isinstance(est.net, FeatConcatPoseNet)
    from shared_data import SAMPLES, load_golden

    if not (SAMPLES / "megumin.png").is_file():
        pytest.skip("../shared/samples is not present")
    from illustpose.images import load_image

    bbox = load_golden("megumin")["bbox_xywh"].tolist()  # the reference segmenter's box
    result = est(load_image(SAMPLES / "megumin.png"), bbox)
    assert result.keypoints.shape == (25, 2) and np.isfinite(result.keypoints).all()


def test_animepose_head_loads_with_rcnn_weights(tmp_path, model_sd):
    """ComfyUI-AnimePose's ``anime_pose_head.safetensors`` (feat_concat+data without ``rcnn.*``)
    asks for the model-zoo file, then loads with it, every tensor in place."""
    from checkpoint_factory import write_animepose_head
    from illustpose.models.pose import PoseEstimator
    from illustpose.registry import RCNN_ZOO_URL

    head = write_animepose_head(tmp_path / "anime_pose_head.safetensors", model_sd)
    assert len(read_checkpoint(head).state_dict) == 336 and detect_architecture(read_checkpoint(head).state_dict) \
        == "feat_concat"
    with pytest.raises(CheckpointError) as e:
        PoseEstimator.from_pretrained(head)
    assert "anime_pose_head.safetensors" in str(e.value) and "--rcnn-weights" in str(e.value)
    assert RCNN_ZOO_URL in str(e.value)
    zoo = {k[len(RCNN_PREFIX):]: v.numpy() for k, v in model_sd.items() if k.startswith(RCNN_PREFIX)}
    zoo.update({k: v.numpy() for k, v in _unused_tensors().items()})
    pkl = tmp_path / "model_final_997cc7.pkl"
    pkl.write_bytes(pickle.dumps({"model": zoo, "__author__": "Detectron2 Model Zoo"}, protocol=4))
    est = PoseEstimator.from_pretrained(head, rcnn_weights=pkl)
    own = est.net.state_dict()
    assert est.kind == "feat_concat" and (est.crop_size, est.padding) == (256, 0.1)
    assert set(own) == set(model_sd) and all(torch.equal(own[k], model_sd[k]) for k in own)
