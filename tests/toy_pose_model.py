"""A fourth model kind, written the way docs/architecture.md says: one module (network, builder) plus
one registry record.  The tests register it and check that everything generated from the registry
picks it up (recognition, loading, convert, CLI flags, weights table, ComfyUI loader choices)."""

from __future__ import annotations

import torch
from torch import nn

from illustpose.checkpoints import Checkpoint
from illustpose.loading import hparam, load_strict
from illustpose.registry import KnownFile, ModelWeights, register


class ToyPoseNet(nn.Module):
    """(B, 3, S, S) crops in [0, 1] -> (B, K, S / 8, S / 8) heatmap logits: one strided convolution."""

    def __init__(self, num_heatmaps: int):
        super().__init__()
        self.toy_head = nn.Conv2d(3, num_heatmaps, kernel_size=8, stride=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.toy_head(x)


def build(checkpoint: Checkpoint, weights: ModelWeights) -> ToyPoseNet:
    """The builder the record names: strict keys, head size from the record's keypoint names."""
    assert hparam(checkpoint, weights, "margs.size") == 8
    return load_strict(lambda: ToyPoseNet(len(weights.keypoint_names)), checkpoint.state_dict, checkpoint.path)


def record() -> ModelWeights:
    """The one registry record of the toy model (the pose task's detector and transform)."""
    from illustpose.keypoints import ALL_KEYPOINTS

    return ModelWeights(
        name="toy_pose", task="pose", architecture="toy_pose", key_prefix="toy_head.",
        builder="toy_pose_model:build", detector="illustpose.models.pose:PoseEstimator",
        transform="illustpose.preprocess:pose_input",
        hparams={"largs": {"danbooru_coco": {"size": 64, "padding": 0.1}}, "margs": {"size": 8}},
        keypoint_names=ALL_KEYPOINTS, reference="(none: a test model)",
        description="toy pose estimator of the registry tests",
        files=(KnownFile("toy_pose.pth", "toy_pose", "hf_pth", "hf", 1000, "A test model; never downloaded."),),
    )


def register_toy(monkeypatch) -> ModelWeights:
    """Register the toy model for one test (the registry is restored afterwards)."""
    import illustpose.registry as R

    monkeypatch.setattr(R, "_RECORDS", list(R._RECORDS))
    return register(record())
