"""Detectron2 ``COCO-Keypoints/keypoint_rcnn_R_101_FPN_3x``, keypoint branch only, for one
given box per image: the frozen R-CNN of feat_concat (reference ``passup.py``,
``PretrainedKeypointDetector``), rebuilt from torch/torchvision ops without Detectron2.

What the reference computes, step by step (Detectron2 v0.3 to v0.6 agree on every step):

1. ``255 * TT.Resize(800)(x).flip(1)``: short side to 800 with torchvision 0.9's tensor
   resize (bilinear, no antialias, :func:`~illustpose.models._common.resize_short_side`),
   RGB -> BGR, [0, 1] -> [0, 255].  No ``MIN_SIZE_TEST``/``MAX_SIZE_TEST`` resize: the
   reference calls ``model.preprocess_image`` directly, not ``DefaultPredictor``.
2. ``GeneralizedRCNN.preprocess_image``: ``(x - PIXEL_MEAN) / PIXEL_STD`` with the config's
   BGR ``PIXEL_MEAN = (103.530, 116.280, 123.675)``, ``PIXEL_STD = (1, 1, 1)``, then
   ``ImageList.from_tensors(..., size_divisibility=32)``: zeros appended at the bottom and
   right (after normalisation) up to multiples of 32 (FPN's ``size_divisibility`` is the
   stride of res5).
3. ``backbone`` = ``build_resnet_fpn_backbone``: ResNet-101 (``BasicStem``, stages res2..res5
   of 3/4/23/3 ``BottleneckBlock``; ``NORM: FrozenBN``; ``STRIDE_IN_1X1: True``, i.e. a
   stage's stride sits in the first 1x1 conv, the MSRA layout) and an FPN (``norm ""``,
   ``fuse_type "sum"``, 256 channels, nearest 2x top-down) giving P2..P5 at strides 4..32.
   The config's ``LastLevelMaxPool`` P6 is read only by the RPN (``RPN.IN_FEATURES``), not by
   the ROI heads (``ROI_HEADS.IN_FEATURES = p2..p5``), so it is not computed here.
4. ``roi_heads.forward_with_given_boxes`` with one box per image,
   ``Boxes(torch.tensor([0, 0, h, w]))`` where ``(h, w)`` is the resized image *before*
   padding (``ImageList.__getitem__`` crops the padding).  Boxes are XYXY, so the reference
   passes ``x2 = h``, ``y2 = w``: swapped, which is harmless on its square 800x800 input and
   reproduced as is for other shapes.  No clipping.
5. ``ROIPooler`` (``ROI_KEYPOINT_HEAD``: ``POOLER_TYPE ROIAlignV2``, ``POOLER_RESOLUTION 14``,
   ``POOLER_SAMPLING_RATIO 0``; canonical box size 224 at level 4): each box goes to level
   ``clamp(floor(4 + log2(sqrt(area) / 224 + 1e-8)), 2, 5)`` and is pooled by
   ``torchvision.ops.roi_align(..., spatial_scale=1/stride, sampling_ratio=0, aligned=True)``
   on that level.  An 800x800 box goes to P5, so only P5 is computed for it (the FPN stops
   its top-down pass at the lowest level a box needs; the values are unchanged).
6. ``KRCNNConvDeconvUpsampleHead``: eight 3x3 convs 512 + ReLU (``conv_fcn1..8``),
   ``score_lowres`` = ``ConvTranspose2d(512, 17, 4, stride=2, padding=1)`` and
   ``interpolate(scale_factor=2, bilinear, align_corners=False)``: (B, 17, 56, 56) raw
   keypoint logits, what ``keypoint_rcnn_inference`` stores as ``pred_keypoint_heatmaps``.

No RPN and no box head run (the box is given).  Module names equal Detectron2's, so the
state dict of :class:`KeypointRCNNBranch` is the checkpoint's ``rcnn.model.*`` minus the
prefix and minus :data:`UNUSED_DETECTRON2_KEYS`; :func:`branch_weights` takes them from the
Detectron2 model-zoo file (``model_final_997cc7.pkl``, read without executing pickled code by
:func:`illustpose.checkpoints.read_model_zoo_pkl`).

Checked once outside CI: on random weights the logits are bit-identical (CPU, float32) to
``passup.py``'s ``PretrainedKeypointDetector.forward`` run on the Detectron2 v0.4 and v0.6
sources, for 256x256, 300x200 and batched 256x384 inputs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import misc as tv_misc
from torchvision.ops import roi_align

from ..errors import CheckpointError
from ..loading import check_keys
from ._common import resize_short_side

__all__ = [
    "KeypointRCNNBranch",
    "FrozenBatchNorm2d",
    "ConvFrozenBN",
    "BasicStem",
    "BottleneckBlock",
    "ResNet",
    "FPN",
    "KeypointHead",
    "reference_boxes",
    "assign_boxes_to_levels",
    "pool_box_features",
    "check_pixel_statistics",
    "branch_weights",
    "UNUSED_DETECTRON2_KEYS",
    "PIXEL_MEAN_BGR",
    "PIXEL_STD_BGR",
    "INPUT_SHORT_SIDE",
    "SIZE_DIVISIBILITY",
    "FPN_STRIDES",
    "POOLER_RESOLUTION",
    "CANONICAL_BOX_SIZE",
    "CANONICAL_LEVEL",
    "NUM_KEYPOINTS",
    "RESNET101_BLOCKS",
]

#: ``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD`` (Detectron2 ``config/defaults.py``), BGR, 0..255.
PIXEL_MEAN_BGR = (103.530, 116.280, 123.675)
PIXEL_STD_BGR = (1.0, 1.0, 1.0)
#: ``TT.Resize(800)`` of ``PretrainedKeypointDetector``.
INPUT_SHORT_SIDE = 800
#: ``FPN.size_divisibility``: the stride of its last input feature (res5).
SIZE_DIVISIBILITY = 32
#: strides of P2, P3, P4, P5; the pooler's scales are their inverses.
FPN_STRIDES = (4, 8, 16, 32)
#: ``ROI_KEYPOINT_HEAD.POOLER_RESOLUTION``.
POOLER_RESOLUTION = 14
#: ``ROIPooler`` defaults (FPN paper eq. 1), not changed by the config.
CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4
#: ``ROI_KEYPOINT_HEAD.NUM_KEYPOINTS`` (COCO-17 order).
NUM_KEYPOINTS = 17
#: ResNet-101 blocks per stage res2..res5 (``build_resnet_backbone``).
RESNET101_BLOCKS = (3, 4, 23, 3)

#: Tensors of a Detectron2 ``keypoint_rcnn_R_101_FPN_3x`` state dict that inference with a
#: given box never reads, with their shapes: the RPN (and its anchor buffers, persisted up
#: to v0.4), the box head and box predictor, and the input statistics (persisted only by
#: v0.3; the values used are :data:`PIXEL_MEAN_BGR`/:data:`PIXEL_STD_BGR`, see
#: :func:`check_pixel_statistics`).  A file holds 573 (v0.4), 575 (v0.3) or 568 (v0.5+).
UNUSED_DETECTRON2_KEYS: dict[str, tuple[int, ...]] = {
    **{f"proposal_generator.anchor_generator.cell_anchors.{i}": (3, 4) for i in range(5)},
    "proposal_generator.rpn_head.conv.weight": (256, 256, 3, 3),
    "proposal_generator.rpn_head.conv.bias": (256,),
    "proposal_generator.rpn_head.objectness_logits.weight": (3, 256, 1, 1),
    "proposal_generator.rpn_head.objectness_logits.bias": (3,),
    "proposal_generator.rpn_head.anchor_deltas.weight": (12, 256, 1, 1),
    "proposal_generator.rpn_head.anchor_deltas.bias": (12,),
    "roi_heads.box_head.fc1.weight": (1024, 256 * 7 * 7),
    "roi_heads.box_head.fc1.bias": (1024,),
    "roi_heads.box_head.fc2.weight": (1024, 1024),
    "roi_heads.box_head.fc2.bias": (1024,),
    "roi_heads.box_predictor.cls_score.weight": (2, 1024),
    "roi_heads.box_predictor.cls_score.bias": (2,),
    "roi_heads.box_predictor.bbox_pred.weight": (4, 1024),
    "roi_heads.box_predictor.bbox_pred.bias": (4,),
    "pixel_mean": (3, 1, 1),
    "pixel_std": (3, 1, 1),
}


class FrozenBatchNorm2d(tv_misc.FrozenBatchNorm2d):
    """Detectron2 ``layers.FrozenBatchNorm2d`` (``eps = 1e-5``): buffers ``weight``, ``bias``,
    ``running_mean``, ``running_var``, no parameters, no ``num_batches_tracked``.

    The value is ``(x - running_mean) * weight / sqrt(running_var + eps) + bias`` on
    (B, C, H, W).  torchvision's class (reused for the buffers and key handling) evaluates it
    as ``x * scale + shift`` with ``rsqrt``, which is Detectron2's path for inputs that need
    gradients; the reference runs the R-CNN under ``torch.no_grad()``, where Detectron2 calls
    ``F.batch_norm(..., training=False, eps=eps)``.  That call is used here.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class ConvFrozenBN(nn.Conv2d):
    """Detectron2 ``layers.Conv2d(..., bias=False, norm=FrozenBN)``: a bias-free conv then
    :class:`FrozenBatchNorm2d` ``norm``.  Keys ``weight`` and ``norm.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.norm = FrozenBatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BasicStem(nn.Module):
    """Detectron2 ``BasicStem``: 7x7 stride-2 conv (pad 3) + FrozenBN, ReLU, 3x3 stride-2 max
    pool (pad 1).  (B, 3, H, W) -> (B, 64, H/4, W/4)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 64):
        super().__init__()
        self.conv1 = ConvFrozenBN(in_channels, out_channels, 7, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """Detectron2 ``BottleneckBlock`` (1x1, 3x3, 1x1 convs, each with FrozenBN).

    With ``stride_in_1x1`` (the config's ``RESNETS.STRIDE_IN_1X1 = True``) the block's stride
    is in ``conv1`` (1x1) and ``conv2`` has stride 1; otherwise in ``conv2``.  A projection
    ``shortcut`` (1x1 conv with the block's stride + FrozenBN) exists when the channel count
    changes.  ``relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x))``.
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int = 1,
                 stride_in_1x1: bool = True):
        super().__init__()
        self.shortcut = (ConvFrozenBN(in_channels, out_channels, 1, stride=stride)
                         if in_channels != out_channels else None)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvFrozenBN(in_channels, bottleneck_channels, 1, stride=stride_1x1)
        self.conv2 = ConvFrozenBN(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=1)
        self.conv3 = ConvFrozenBN(bottleneck_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    """Detectron2 ``build_resnet_backbone`` with ``NUM_GROUPS 1``, ``WIDTH_PER_GROUP 64``,
    ``RES2_OUT_CHANNELS 256``, ``RES5_DILATION 1``, no deformable convs.

    Args:
        num_blocks: blocks of res2..res5 (ResNet-101: 3, 4, 23, 3).
        stride_in_1x1: see :class:`BottleneckBlock`.

    Forward: (B, 3, H, W) -> ``{"res2": (B, 256, H/4, W/4), "res3": (B, 512, H/8, W/8),
    "res4": (B, 1024, H/16, W/16), "res5": (B, 2048, H/32, W/32)}``; res2's first block has
    stride 1, the others' first blocks stride 2.
    """

    def __init__(self, num_blocks: tuple[int, int, int, int] = RESNET101_BLOCKS, stride_in_1x1: bool = True):
        super().__init__()
        self.stem = BasicStem()
        in_ch, out_ch, bottleneck = 64, 256, 64
        for i, n in enumerate(num_blocks):
            first_stride = 1 if i == 0 else 2
            self.add_module(f"res{i + 2}", nn.Sequential(*(
                BottleneckBlock(in_ch if b == 0 else out_ch, out_ch, bottleneck,
                                stride=first_stride if b == 0 else 1, stride_in_1x1=stride_in_1x1)
                for b in range(n))))
            in_ch, out_ch, bottleneck = out_ch, out_ch * 2, bottleneck * 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        out = {}
        for name in ("res2", "res3", "res4", "res5"):
            x = out[name] = getattr(self, name)(x)
        return out


class FPN(nn.Module):
    """Detectron2 ``FPN`` with ``norm ""`` (convs with bias) and ``fuse_type "sum"``, without
    the P6 top block (read only by the RPN).

    ``fpn_lateral{s}`` are 1x1 convs and ``fpn_output{s}`` 3x3 convs (pad 1) for stages
    s = 2..5.  Top-down: ``prev = lateral5(res5)``, ``p5 = output5(prev)``; then for s = 4, 3,
    2: ``prev = lateral_s(res_s) + interpolate(prev, scale_factor=2, nearest)``,
    ``p_s = output_s(prev)``.  Inputs must be padded to multiples of 32.

    Args:
        bottom_up: a module returning ``{"res2".."res5"}`` (:class:`ResNet`).
        in_channels: channels of res2..res5.
        out_channels: FPN width (``FPN.OUT_CHANNELS``, 256).

    Forward:
        x: (B, 3, H, W).
        levels: the stages s whose ``p{s}`` to return (default all of 2..5).  The top-down
            pass stops at the lowest one and unrequested output convs are skipped; each
            returned level equals the full computation's (the pooler reads only the levels
            its boxes are assigned to: P5 alone for the reference's 800x800 box).
        returns: ``{"p{s}": (B, out_channels, H / 2**s, W / 2**s)}`` for s in ``levels``.
    """

    def __init__(self, bottom_up: nn.Module, in_channels: tuple[int, ...] = (256, 512, 1024, 2048),
                 out_channels: int = 256):
        super().__init__()
        for stage, c in zip(range(2, 6), in_channels):
            self.add_module(f"fpn_lateral{stage}", nn.Conv2d(c, out_channels, kernel_size=1))
            self.add_module(f"fpn_output{stage}", nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1))
        self.bottom_up = bottom_up

    def forward(self, x: torch.Tensor, levels: Collection[int] = (2, 3, 4, 5)) -> dict[str, torch.Tensor]:
        feats = self.bottom_up(x)
        prev = self.fpn_lateral5(feats["res5"])
        out = {"p5": self.fpn_output5(prev)} if 5 in levels else {}
        for stage in range(4, min(levels) - 1, -1):
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = getattr(self, f"fpn_lateral{stage}")(feats[f"res{stage}"]) + top_down
            if stage in levels:
                out[f"p{stage}"] = getattr(self, f"fpn_output{stage}")(prev)
        return out


class KeypointHead(nn.Sequential):
    """Detectron2 ``KRCNNConvDeconvUpsampleHead`` (``CONV_DIMS = (512,) * 8``).

    ``conv_fcn{i}`` 3x3 conv (pad 1, bias) + ``conv_fcn_relu{i}``, then ``score_lowres`` =
    ``ConvTranspose2d(k=4, stride=2, padding=4 // 2 - 1)``, then bilinear ``interpolate``
    with ``scale_factor=2``, ``align_corners=False``.
    (N, in_channels, 14, 14) -> (N, num_keypoints, 56, 56) raw logits.
    """

    def __init__(self, in_channels: int = 256, conv_dims: tuple[int, ...] = (512,) * 8,
                 num_keypoints: int = NUM_KEYPOINTS):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, c in enumerate(conv_dims, 1):
            layers[f"conv_fcn{i}"] = nn.Conv2d(in_channels, c, kernel_size=3, padding=1)
            layers[f"conv_fcn_relu{i}"] = nn.ReLU()
            in_channels = c
        layers["score_lowres"] = nn.ConvTranspose2d(in_channels, num_keypoints, kernel_size=4, stride=2,
                                                    padding=4 // 2 - 1)
        super().__init__(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), scale_factor=2.0, mode="bilinear", align_corners=False)

    def features_last(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv features, after ``conv_fcn8`` and its ReLU: (N, 512, 14, 14) from (N, in, 14, 14).

        Every layer but ``score_lowres``, as the reference's ``fermat.py`` takes them
        (``roi.keypoint_head[i]`` for ``i < len - 1``) for feat_match's matching loss.
        """
        for layer in list(self)[:-1]:
            x = layer(x)
        return x


def reference_boxes(batch: int, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """The reference's one box per image: float32 (batch, 4) XYXY rows ``[0, 0, height, width]``.

    ``(height, width)`` is the resized, unpadded image.  As in ``passup.py`` the height is
    passed as x2 and the width as y2 (an XYXY-order slip; the same box on square inputs).
    """
    return torch.tensor([[0.0, 0.0, float(height), float(width)]], device=device).expand(batch, 4)


def assign_boxes_to_levels(boxes: torch.Tensor) -> torch.Tensor:
    """Detectron2 ``poolers.assign_boxes_to_levels`` for P2..P5.

    ``clamp(floor(4 + log2(sqrt(area) / 224 + 1e-8)), 2, 5) - 2`` in float32.

    Args:
        boxes: float (N, 4) XYXY in input pixels.

    Returns:
        int64 (N,) level indices, 0..3 for P2..P5.
    """
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(CANONICAL_LEVEL + torch.log2(sizes / CANONICAL_BOX_SIZE + 1e-8))
    min_level, max_level = 2, 1 + len(FPN_STRIDES)
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


def pool_box_features(features: Mapping[str, torch.Tensor], boxes: torch.Tensor) -> torch.Tensor:
    """Detectron2 ``ROIPooler`` with ``ROIAlignV2``: one box per image, each on its level.

    Args:
        features: ``{"p2".."p5"}``, float (B, C, H/s, W/s) for s in :data:`FPN_STRIDES`; only
            the levels some box is assigned to (:func:`assign_boxes_to_levels`) are read.
        boxes: float (B, 4) XYXY in input pixels, box ``i`` belonging to image ``i``.

    Returns:
        (B, C, 14, 14): ``torchvision.ops.roi_align(p, [[i, x1, y1, x2, y2]],
        output_size=14, spatial_scale=1/s, sampling_ratio=0, aligned=True)`` per box, ``p``
        the box's level and ``s`` its stride.
    """
    batch = boxes.shape[0]
    rois = torch.cat([torch.arange(batch, dtype=boxes.dtype, device=boxes.device)[:, None], boxes], dim=1)
    levels = assign_boxes_to_levels(boxes)
    out = None
    for level, stride in enumerate(FPN_STRIDES):
        inds = torch.nonzero(levels == level, as_tuple=True)[0]
        if inds.numel():
            feat = features[f"p{level + 2}"]
            if out is None:
                out = feat.new_zeros((batch, feat.shape[1], POOLER_RESOLUTION, POOLER_RESOLUTION))
            pooled = roi_align(feat, rois[inds].to(feat.dtype), POOLER_RESOLUTION, spatial_scale=1.0 / stride,
                               sampling_ratio=0, aligned=True)
            out.index_put_((inds,), pooled)
    return out


class KeypointRCNNBranch(nn.Module):
    """The frozen ``keypoint_rcnn_R_101_FPN_3x`` of feat_concat, run on one full-image box.

    State-dict keys are Detectron2's (``backbone.bottom_up.stem.conv1.weight``,
    ``backbone.fpn_lateral2.weight``, ``roi_heads.keypoint_head.conv_fcn1.weight``, ...): 554
    tensors, the checkpoint's ``rcnn.model.*`` without the prefix and without
    :data:`UNUSED_DETECTRON2_KEYS`.  Holds no other tensors (safe to build on ``meta``).

    Forward:
        x: float (B, 3, H, W) RGB in [0, 1], B >= 1 (the 256x256 pose crop in feat_concat).
        returns: float (B, 17, 56, 56) raw keypoint logits (COCO-17 order), the reference's
            ``pred_keypoint_heatmaps`` for the box :func:`reference_boxes`.
    """

    def __init__(self):
        super().__init__()
        self.backbone = FPN(ResNet())
        self.roi_heads = nn.ModuleDict({"keypoint_head": KeypointHead()})

    @staticmethod
    def preprocess(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Steps 1-2 of the module docstring.

        Args:
            x: float (B, 3, H, W) RGB in [0, 1].

        Returns:
            the normalised BGR batch, (B, 3, Hp, Wp) with ``Hp``, ``Wp`` the resized size
            rounded up to multiples of 32 (zero padding at the bottom and right), and the
            resized size ``(h, w)`` before padding.
        """
        x = 255 * resize_short_side(x, INPUT_SHORT_SIDE).flip(1)
        mean = torch.as_tensor(PIXEL_MEAN_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.as_tensor(PIXEL_STD_BGR, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        h, w = x.shape[-2:]
        pad_h = -h % SIZE_DIVISIBILITY
        pad_w = -w % SIZE_DIVISIBILITY
        return F.pad(x, [0, pad_w, 0, pad_h], value=0.0), (h, w)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 1-5 of the module docstring: (B, 3, H, W) in [0, 1] -> the box's (B, 256, 14, 14) ROI features."""
        images, (h, w) = self.preprocess(x)
        boxes = reference_boxes(images.shape[0], h, w, device=images.device)
        levels = {int(level) + 2 for level in assign_boxes_to_levels(boxes)}
        feats = self.backbone(images, levels=levels)
        return pool_box_features(feats, boxes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.roi_heads["keypoint_head"](self.pooled(x))

    def features_last(self, x: torch.Tensor) -> torch.Tensor:
        """The reference ``fermat.py`` ``PretrainedKeypointDetector.forward``'s ``features_last``:
        the keypoint head's features after ``conv_fcn8`` + ReLU for the same box as :meth:`forward`.

        Args:
            x: float (B, 3, H, W) RGB in [0, 1] (the pose crop).

        Returns:
            float (B, 512, 14, 14): the target of feat_match's ``matcher_rcnn`` in training.
        """
        return self.roi_heads["keypoint_head"].features_last(self.pooled(x))


def check_pixel_statistics(state_dict: Mapping[str, torch.Tensor], source: str, prefix: str = "") -> None:
    """Refuse a file whose persisted ``pixel_mean``/``pixel_std`` (Detectron2 v0.3 layouts)
    differ from the config's :data:`PIXEL_MEAN_BGR`/:data:`PIXEL_STD_BGR`, which this port
    uses as constants.  Absent keys (v0.4+) pass.

    Raises:
        CheckpointError: naming the key and both values.
    """
    for name, expected in (("pixel_mean", PIXEL_MEAN_BGR), ("pixel_std", PIXEL_STD_BGR)):
        t = state_dict.get(prefix + name)
        if t is None:
            continue
        got = t.detach().double().flatten().tolist()
        if len(got) != 3 or any(abs(g - e) > 1e-3 for g, e in zip(got, expected)):
            raise CheckpointError(f"{source}: '{prefix}{name}' is {got}, but keypoint_rcnn_R_101_FPN_3x uses "
                                  f"{list(expected)}; this is not the model feat_concat was trained with")


def branch_weights(weights: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The tensors of :class:`KeypointRCNNBranch` from a Detectron2 ``keypoint_rcnn_R_101_FPN_3x``
    state dict (e.g. :func:`~illustpose.checkpoints.read_model_zoo_pkl` of the model-zoo file).

    Detectron2 names are this module's names; :data:`UNUSED_DETECTRON2_KEYS` are dropped (after
    :func:`check_pixel_statistics`), and every remaining name and shape must match the branch.

    Returns:
        exactly the branch's 554 state-dict keys, in its order.

    Raises:
        CheckpointError: other pixel statistics, or names or shapes that are not those of
            ``keypoint_rcnn_R_101_FPN_3x``.
    """
    check_pixel_statistics(weights, source)
    weights = {k: v for k, v in weights.items() if k not in UNUSED_DETECTRON2_KEYS}
    with torch.device("meta"):
        own = KeypointRCNNBranch().state_dict()
    check_keys({k: v.shape for k, v in own.items()}, weights, source, "not keypoint_rcnn_R_101_FPN_3x weights")
    return {k: weights[k] for k in own}
