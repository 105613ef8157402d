"""Pose estimator, feature-matching variant (reference ``_train/character_pose_estim/models/fermat.py``).

At inference (``inference=True`` in the reference) feat_match never runs the Detectron2
R-CNN: ``matcher_rcnn`` predicts the R-CNN keypoint-head features from the ResNet features,
so the model is exactly reproducible with torchvision.  Keys: ``resnet.*`` (tagger ResNet-50
conv1..layer3, frozen; taken from *this* checkpoint) and ``keypoint_head.*``; the file's
``rcnn.*`` tensors are unused here.

This module holds the network (:class:`FeatMatchPoseNet`) and its builder (:func:`build`); the
detector is :class:`~illustpose.models.pose.PoseEstimator`, the registry records
``feat_match`` and ``feat_match+data``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checkpoints import Checkpoint
from ..loading import hparam, load_strict
from ..registry import ModelWeights
from .pose import NUM_HEATMAPS, ResnetFeatureConverter, ResnetTrunk, Resize, heatmap_head

__all__ = ["FeatMatchPoseNet", "build"]


class FeatMatchPoseNet(nn.Module):
    """feat_match pose network (inference path).

    Args:
        heatmap_size: ``margs.size`` (128 released): the head's working resolution.
        trunk_input_size: the tagger's ``largs.danbooru_sfw.size`` (256 released).

    Forward:
        x: float32 (B, 3, S, S) in [0, 1], the pose crop (S = ``largs.danbooru_coco.size``).
        returns: float32 (B, 25, heatmap_size, heatmap_size) heatmap logits
            (channels 0..16 COCO-17, 17..24 extra).
    """

    architecture = "feat_match"  #: its registry architecture (the detector's ``kind``)

    def __init__(self, heatmap_size: int = 128, trunk_input_size: int = 256, num_heatmaps: int = NUM_HEATMAPS):
        super().__init__()
        self.heatmap_size = heatmap_size
        self.resnet = ResnetTrunk(trunk_input_size)
        self.resizer = Resize(heatmap_size)
        self.keypoint_head = nn.ModuleDict({
            "converter_resnet": ResnetFeatureConverter(heatmap_size),
            "matcher_rcnn": nn.Sequential(
                Resize(14),
                nn.Conv2d(128, 512, kernel_size=3, padding=1, padding_mode="replicate"),
                nn.ReLU(),
                nn.BatchNorm2d(512),
            ),
            "converter_rcnn": nn.Sequential(nn.Conv2d(512, 32, kernel_size=1), Resize(heatmap_size)),
            "head": heatmap_head(num_heatmaps),
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heatmaps_and_match(x)[0]

    def heatmaps_and_match(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass, also returning the matcher's output (what training compares with
        the R-CNN's ``features_last``, reference ``fermat.py`` ``features_match``).

        Returns:
            heatmap logits (B, 25, heatmap_size, heatmap_size) and ``matcher_rcnn``'s
            features (B, 512, 14, 14), both float32.
        """
        head = self.keypoint_head
        converted = self.resizer(head["converter_resnet"](self.resnet(x)))
        matched = head["matcher_rcnn"](converted)
        feats = torch.cat([self.resizer(x), converted, head["converter_rcnn"](matched)], dim=1)
        return head["head"](feats), matched


def build(checkpoint: Checkpoint, weights: ModelWeights) -> FeatMatchPoseNet:
    """The feat_match network with the checkpoint's tensors (its unused ``rcnn.*`` dropped).

    Sizes: ``margs.size`` (heatmaps) and ``largs.danbooru_sfw.size`` (trunk input), from the
    file or the released values; the head has one channel per registry keypoint name.

    Raises:
        CheckpointError: missing, unexpected or misshapen keys.
    """
    sizes = dict(heatmap_size=int(hparam(checkpoint, weights, "margs.size")),
                 trunk_input_size=int(hparam(checkpoint, weights, "largs.danbooru_sfw.size")),
                 num_heatmaps=len(weights.keypoint_names))
    return load_strict(lambda: FeatMatchPoseNet(**sizes), checkpoint.state_dict, checkpoint.path,
                       ignore_prefixes=weights.unused_prefixes)
