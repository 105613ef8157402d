"""Result records returned by the detectors: plain, frozen data (no tensors on a device).

Coordinates are pixels of the *input image* with x to the right and y down, unless a field
name says ``rc`` (row, col).  The models never draw and renderers never run models: these
records are what flows between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import Cropbox
from .keypoints import OpenPosePerson, coco17_to_openpose18

__all__ = ["SegmentationResult", "TagResult", "PoseResult"]


@dataclass(frozen=True)
class SegmentationResult:
    """Character segmentation of one image (reference ``character_segmenter.infer``).

    Attributes:
        mask: uint8 (H, W) at the input size, the character probability as the reference
            produces it: ``trunc(255 * p)`` at the working size, resized with PIL bicubic.
        probability: float32 (h', w') softmax foreground probability in [0, 1] at the working
            size (short side = the checkpoint's ``largs.bg_seg.size``), before the 8-bit step.
        bbox_xywh: COCO ``[x, y, w, h]`` ints from the reference's ``abbox`` rule.
    """

    mask: np.ndarray
    probability: np.ndarray
    bbox_xywh: tuple[int, int, int, int]

    @property
    def bbox_rc_hw(self) -> tuple[int, int, int, int]:
        """The bbox as the reference's ``(row0, col0, h, w)``."""
        x, y, w, h = self.bbox_xywh
        return (y, x, h, w)


@dataclass(frozen=True)
class TagResult:
    """Danbooru tag scores of one image (reference ``danbooru_tagger.infer``).

    Attributes:
        scores: ``{tag_name: sigmoid probability in [0, 1]}`` for every tag, in the
            checkpoint's rule order.
        logits: float32 (num_tags,) raw classifier outputs in the same order.
    """

    scores: dict[str, float]
    logits: np.ndarray

    def above(self, threshold: float = 0.5) -> list[tuple[str, float]]:
        """Tags with score >= ``threshold``, highest first (the reference CLI's rule)."""
        kept = [(k, v) for k, v in self.scores.items() if v >= threshold]
        return sorted(kept, key=lambda kv: -kv[1])


@dataclass(frozen=True)
class PoseResult:
    """Pose of one character of an image (reference ``pose_estimator.infer_pose``).

    Attributes:
        keypoints: float64 (25, 2) (x, y) in input-image pixels, x right, y down; rows 0..16
            are COCO-17 in COCO order, 17..24 the model's extra channels.  Points may lie
            outside the image (the crop is padded).  Each is the top-left corner of the
            winning heatmap cell mapped back through the unrounded inverse cropbox, exactly
            as the reference reports it.
        scores: float32 (25,) per-joint confidence in [0, 1]: the peak of the sigmoid heatmap
            *before* smoothing.  An illustpose addition; it never moves a keypoint.
        bbox_xywh: the character bbox used for the crop, COCO ``[x, y, w, h]`` pixels.
        cropbox: the forward crop (row, col) from the input image to the network input.
        image_size_hw: ``(H, W)`` of the input image.
        heatmaps: float32 (25, h, w) raw heatmap logits (h = w = ``margs.size``, 128), or
            None when not requested.
        present: bool (25,), False for a joint the pipeline judged absent (outside the image, or
            far from its character's mask: :func:`illustpose.characters.joints_present`); None
            when not judged (the estimator alone), which counts as all present.  An illustpose
            addition; the reference reports every joint.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    bbox_xywh: tuple[int, int, int, int]
    cropbox: Cropbox
    image_size_hw: tuple[int, int]
    heatmaps: np.ndarray | None = field(default=None, repr=False)
    present: np.ndarray | None = None

    def visible(self, threshold: float = 0.0) -> np.ndarray:
        """bool (25,): the joints that are present and score at least ``threshold`` (the two
        rules every output applies; a threshold of 0 applies the first alone)."""
        shown = self.scores >= threshold
        return shown if self.present is None else shown & self.present

    def openpose(self, threshold: float = 0.0) -> OpenPosePerson:
        """The COCO-17 joints as one OpenPose-18 person (pixels, x right, y down); absent joints
        and those scoring below ``threshold`` are left out (:meth:`visible`)."""
        return coco17_to_openpose18(self.keypoints, self.visible(threshold))
