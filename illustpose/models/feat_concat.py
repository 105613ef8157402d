"""Pose estimator, feature-concatenation variant (reference ``_train/character_pose_estim/models/passup.py``).

feat_concat runs the frozen Detectron2 Keypoint R-CNN at every forward pass
(:class:`~illustpose.models.keypoint_rcnn.KeypointRCNNBranch`) and concatenates its raw
17x56x56 keypoint logits, through a 1x1 conv, with the tagger-trunk features.  Keys are the
Lightning checkpoint's: ``resnet.*`` (258, tagger ResNet-50 conv1..layer3, from *this*
file), ``rcnn.model.*`` (554 of the file's 573/575/568; the others are listed in
:data:`IGNORED_CHECKPOINT_KEYS`) and ``keypoint_head.*`` (78).
"""

from __future__ import annotations

import torch
from torch import nn

from .keypoint_rcnn import NUM_KEYPOINTS, UNUSED_DETECTRON2_KEYS, KeypointRCNNBranch
from .pose import ResnetFeatureConverter, ResnetTrunk, Resize, heatmap_head

__all__ = ["FeatConcatPoseNet", "IGNORED_CHECKPOINT_KEYS", "RCNN_PREFIX"]

#: where the R-CNN's Detectron2 state dict sits in a feat_concat checkpoint
#: (``passup.Model.rcnn`` = ``PretrainedKeypointDetector``, its ``.model`` the GeneralizedRCNN)
RCNN_PREFIX = "rcnn.model."

#: checkpoint keys inference never reads (RPN, anchors, box head, pixel statistics), as
#: ``ignore_prefixes`` for :func:`illustpose.loading.load_strict`; each is an exact key name.
IGNORED_CHECKPOINT_KEYS: tuple[str, ...] = tuple(RCNN_PREFIX + k for k in UNUSED_DETECTRON2_KEYS)


class FeatConcatPoseNet(nn.Module):
    """feat_concat pose network (``passup.Model.forward``).

    Args:
        heatmap_size: ``margs.size`` (128 released): the head's working resolution.
        trunk_input_size: the tagger's ``largs.danbooru_sfw.size`` (256 released).

    Forward:
        x: float32 (B, 3, S, S) in [0, 1], the pose crop (S = ``largs.danbooru_coco.size``).
        returns: float32 (B, 25, heatmap_size, heatmap_size) heatmap logits (channels 0..16
            COCO-17, 17..24 extra), decoded with :func:`~illustpose.models.pose.decode_heatmaps`.

    The head input is ``cat([resize(x), resize(converter_resnet(resnet(x))),
    resize(converter_rcnn(rcnn(x)))])`` = 3 + 128 + 32 = 163 channels, ``resize`` being
    ``TT.Resize(heatmap_size)`` (2021 semantics); ``converter_rcnn`` is a plain 1x1 conv
    17 -> 32 on the 56x56 logits (feat_match's is 512 -> 32 inside a Sequential); the head is
    feat_match's.  Call ``.eval()`` first, as the reference does for its frozen parts.
    """

    def __init__(self, heatmap_size: int = 128, trunk_input_size: int = 256):
        super().__init__()
        self.heatmap_size = heatmap_size
        self.resnet = ResnetTrunk(trunk_input_size)
        self.rcnn = nn.ModuleDict({"model": KeypointRCNNBranch()})
        self.resizer = Resize(heatmap_size)
        self.keypoint_head = nn.ModuleDict({
            "converter_resnet": ResnetFeatureConverter(heatmap_size),
            "converter_rcnn": nn.Conv2d(NUM_KEYPOINTS, 32, kernel_size=1),
            "head": heatmap_head(),
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.keypoint_head
        rcnn_logits = self.rcnn["model"](x)
        feats = torch.cat([
            self.resizer(x),
            self.resizer(head["converter_resnet"](self.resnet(x))),
            self.resizer(head["converter_rcnn"](rcnn_logits)),
        ], dim=1)
        return head["head"](feats)
