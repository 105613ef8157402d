"""The segment -> tag -> pose pipeline over a batch of images (what ``annotate`` and the nodes run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from PIL import Image

from .pose import PoseEstimator
from .results import PoseResult, SegmentationResult, TagResult
from .segment import CharacterSegmenter
from .tag import DanbooruTagger

__all__ = ["Annotation", "Pipeline"]


@dataclass(frozen=True)
class Annotation:
    """Everything the pipeline found in one image; a field is None when its model was not run."""

    segmentation: SegmentationResult | None
    tags: TagResult | None
    pose: PoseResult | None


class Pipeline:
    """Runs whichever of the three detectors it holds, in the reference's order.

    The pose crop needs a character bbox: it comes from ``bboxes_xywh`` when given, else from
    the segmenter (as the reference's ``infer_pose``), else the whole image.
    """

    def __init__(self, segmenter: CharacterSegmenter | None = None, tagger: DanbooruTagger | None = None,
                 pose: PoseEstimator | None = None):
        self.segmenter, self.tagger, self.pose = segmenter, tagger, pose

    def annotate(self, images: Sequence[Image.Image], bboxes_xywh: Sequence[Sequence[int]] | None = None, *,
                 return_heatmaps: bool = False) -> list[Annotation]:
        """Annotate a batch of 8-bit RGB/RGBA PIL images; returns one :class:`Annotation` each."""
        images = list(images)
        segs = self.segmenter.segment(images) if self.segmenter else [None] * len(images)
        tags = self.tagger.tag(images) if self.tagger else [None] * len(images)
        poses: list[PoseResult | None] = [None] * len(images)
        if self.pose and images:
            if bboxes_xywh is None:
                bboxes_xywh = [s.bbox_xywh if s else (0, 0, im.width, im.height) for s, im in zip(segs, images)]
            poses = self.pose.estimate(images, bboxes_xywh, return_heatmaps=return_heatmaps)
        return [Annotation(s, t, p) for s, t, p in zip(segs, tags, poses)]

    def estimate(self, image: Image.Image) -> PoseResult:
        """The pose of the character in one image (segmenter bbox, then the pose model)."""
        if self.pose is None:
            raise ValueError("this pipeline has no pose estimator")
        return self.annotate([image])[0].pose
