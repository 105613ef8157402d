"""Pose estimator, feature-concatenation variant (reference ``_train/character_pose_estim/models/passup.py``).

feat_concat runs the frozen Detectron2 Keypoint R-CNN at every forward pass
(:class:`~illustpose.models.keypoint_rcnn.KeypointRCNNBranch`) and concatenates its raw
17x56x56 keypoint logits, through a 1x1 conv, with the tagger-trunk features.  Keys are the
Lightning checkpoint's: ``resnet.*`` (258, tagger ResNet-50 conv1..layer3, from *this*
file), ``rcnn.model.*`` (554 of the file's 573/575/568; the others are listed in
:data:`IGNORED_CHECKPOINT_KEYS`) and ``keypoint_head.*`` (78).

This module holds the network (:class:`FeatConcatPoseNet`) and its builder (:func:`build`); the
detector is :class:`~illustpose.models.pose.PoseEstimator`, the registry records
``feat_concat`` and ``feat_concat+data``.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..checkpoints import Checkpoint, read_model_zoo_pkl
from ..errors import CheckpointError
from ..loading import hparam, load_strict
from ..registry import RCNN_ZOO_URL, ModelWeights
from .keypoint_rcnn import (NUM_KEYPOINTS, UNUSED_DETECTRON2_KEYS, KeypointRCNNBranch, branch_weights,
                            check_pixel_statistics)
from .pose import NUM_HEATMAPS, ResnetFeatureConverter, ResnetTrunk, Resize, heatmap_head

__all__ = ["FeatConcatPoseNet", "build", "IGNORED_CHECKPOINT_KEYS", "RCNN_PREFIX"]

#: where the R-CNN's Detectron2 state dict sits in a feat_concat checkpoint
#: (``passup.Model.rcnn`` = ``PretrainedKeypointDetector``, its ``.model`` the GeneralizedRCNN)
RCNN_PREFIX = "rcnn.model."

#: checkpoint keys inference never reads (RPN, anchors, box head, pixel statistics), as
#: ``ignore_prefixes`` for :func:`illustpose.loading.load_strict`; each is an exact key name.
#: ``weights convert`` keeps them, as the file has them.
IGNORED_CHECKPOINT_KEYS: tuple[str, ...] = tuple(RCNN_PREFIX + k for k in UNUSED_DETECTRON2_KEYS)


class FeatConcatPoseNet(nn.Module):
    """feat_concat pose network (``passup.Model.forward``).

    Args:
        heatmap_size: ``margs.size`` (128 released): the head's working resolution.
        trunk_input_size: the tagger's ``largs.danbooru_sfw.size`` (256 released).

    Forward:
        x: float32 (B, 3, S, S) in [0, 1], the pose crop (S = ``largs.danbooru_coco.size``).
        returns: float32 (B, 25, heatmap_size, heatmap_size) heatmap logits (channels 0..16
            COCO-17, 17..24 extra), decoded with :func:`~illustpose.heatmaps.decode_heatmaps`.

    The head input is ``cat([resize(x), resize(converter_resnet(resnet(x))),
    resize(converter_rcnn(rcnn(x)))])`` = 3 + 128 + 32 = 163 channels, ``resize`` being
    ``TT.Resize(heatmap_size)`` (2021 semantics); ``converter_rcnn`` is a plain 1x1 conv
    17 -> 32 on the 56x56 logits (feat_match's is 512 -> 32 inside a Sequential); the head is
    feat_match's.  Call ``.eval()`` first, as the reference does for its frozen parts.
    """

    architecture = "feat_concat"  #: its registry architecture (the detector's ``kind``)

    def __init__(self, heatmap_size: int = 128, trunk_input_size: int = 256, num_heatmaps: int = NUM_HEATMAPS):
        super().__init__()
        self.heatmap_size = heatmap_size
        self.resnet = ResnetTrunk(trunk_input_size)
        self.rcnn = nn.ModuleDict({"model": KeypointRCNNBranch()})
        self.resizer = Resize(heatmap_size)
        self.keypoint_head = nn.ModuleDict({
            "converter_resnet": ResnetFeatureConverter(heatmap_size),
            "converter_rcnn": nn.Conv2d(NUM_KEYPOINTS, 32, kernel_size=1),
            "head": heatmap_head(num_heatmaps),
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


def build(checkpoint: Checkpoint, weights: ModelWeights, *, rcnn_weights: str | os.PathLike | None = None
          ) -> FeatConcatPoseNet:
    """The feat_concat network with the checkpoint's tensors, its Keypoint R-CNN included.

    Args:
        checkpoint: a feat_concat checkpoint; its ``rcnn.model.*`` tensors are the R-CNN's.
        weights: its registry record (released sizes, keypoint names).
        rcnn_weights: for a file without ``rcnn.*`` tensors (a head-only repackaging such as
            ComfyUI-AnimePose's ``anime_pose_head.safetensors``), the Detectron2 model-zoo
            ``model_final_997cc7.pkl`` of ``keypoint_rcnn_R_101_FPN_3x`` (read by
            :func:`~illustpose.checkpoints.read_model_zoo_pkl`); it replaces the file's.

    Raises:
        CheckpointError: no R-CNN weights, pixel statistics of another model, or wrong keys or
            shapes (in the checkpoint or the model-zoo file).
        UnsafeCheckpointError: the model-zoo pickle asks for a global outside its allow-list.
    """
    sd = checkpoint.state_dict
    if rcnn_weights is not None:
        zoo = branch_weights(read_model_zoo_pkl(rcnn_weights), str(rcnn_weights))
        sd = {k: v for k, v in sd.items() if not k.startswith(RCNN_PREFIX)}
        sd.update({RCNN_PREFIX + k: v for k, v in zoo.items()})
    elif not any(k.startswith(RCNN_PREFIX) for k in sd):
        raise CheckpointError(
            f"{checkpoint.path}: a feat_concat pose head without the Keypoint R-CNN weights (no "
            f"'{RCNN_PREFIX}*' tensors, as in ComfyUI-AnimePose's anime_pose_head.safetensors); pass the "
            "Detectron2 model-zoo file of keypoint_rcnn_R_101_FPN_3x (model_final_997cc7.pkl, from "
            f"{RCNN_ZOO_URL}) as rcnn_weights / --rcnn-weights."
        )
    check_pixel_statistics(sd, checkpoint.path, prefix=RCNN_PREFIX)
    sizes = dict(heatmap_size=int(hparam(checkpoint, weights, "margs.size")),
                 trunk_input_size=int(hparam(checkpoint, weights, "largs.danbooru_sfw.size")),
                 num_heatmaps=len(weights.keypoint_names))
    return load_strict(lambda: FeatConcatPoseNet(**sizes), sd, checkpoint.path, ignore_prefixes=IGNORED_CHECKPOINT_KEYS)
