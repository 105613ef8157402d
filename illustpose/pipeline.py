"""The segment -> tag -> pose pipeline over a batch of images (what ``annotate`` and the nodes run):
one pose per character (:mod:`illustpose.characters`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .characters import (MIN_AREA, Character, characters_from_masks, characters_setting, joints_present,
                         min_area_setting, split_mask)
from .errors import CharacterError
from .models.pose import PoseEstimator
from .models.segmenter import CharacterSegmenter
from .models.tagger import DanbooruTagger
from .results import PoseResult, SegmentationResult, TagResult

__all__ = ["Annotation", "PreparedImage", "Pipeline", "share_trunk"]

_TRUNK = ("conv1", "bn1", "layer1", "layer2", "layer3")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.dtype == b.dtype and torch.equal(a, b)


def share_trunk(tagger: DanbooruTagger, pose: PoseEstimator) -> bool:
    """Let the pose model use the tagger's ResNet-50 conv1..layer3 when they are identical.

    The pose trunk is a frozen copy of the tagger's (reference ``fermat.py``
    ``ResnetFeatureExtractor``), but the pose checkpoint's own tensors are the ones in effect,
    so this checks every tensor for equality (and the input size) first and never assumes.
    Saves ~8.5 M parameters (34 MB in fp32).

    Returns:
        True when the modules are now shared, False when anything differs.
    """
    src, dst = tagger.net.resnet, getattr(pose.net, "resnet", None)
    if dst is None or src is dst or getattr(dst, "input_size", None) != tagger.size:
        return src is dst
    for name in _TRUNK:
        a, b = getattr(src, name).state_dict(), getattr(dst, name).state_dict()
        if a.keys() != b.keys() or not all(_same(a[k], b[k]) for k in a):
            return False
    for name in _TRUNK:
        setattr(dst, name, getattr(src, name))
    return True


@dataclass(frozen=True)
class Annotation:
    """Everything the pipeline found in one image; a field is None when its model was not run.

    Attributes:
        segmentation: the segmenter's result.
        tags: the tagger's result.
        poses: one :class:`PoseResult` per character, the largest box first; empty when no
            character was found (an empty mask with ``characters="auto"``, or no box given).
    """

    segmentation: SegmentationResult | None
    tags: TagResult | None
    poses: tuple[PoseResult, ...] | None

    @property
    def pose(self) -> PoseResult | None:
        """The largest character's pose; None when the pose model did not run or found no character."""
        return self.poses[0] if self.poses else None


@dataclass(frozen=True)
class PreparedImage:
    """An image with the network inputs a :class:`Pipeline` needs, made by :meth:`Pipeline.prepare`.

    Attributes:
        image: the 8-bit RGB/RGBA PIL image (the pose crops and the mask's size come from it).
        segmenter_input, tagger_input: the detectors' ``prepare`` results (float32 (3, h, w)
            tensors), None for a detector the pipeline does not hold.
    """

    image: Image.Image
    segmenter_input: torch.Tensor | None = None
    tagger_input: torch.Tensor | None = None


def _given_characters(boxes) -> list[Character]:
    """The characters of boxes given for one image (one ``[x, y, w, h]`` or a list), largest first."""
    boxes = [] if len(boxes) == 0 else [boxes] if np.ndim(boxes) == 1 else list(boxes)
    return sorted((Character(tuple(b)) for b in boxes), key=lambda c: -c.area)


class Pipeline:
    """Runs whichever of the three detectors it holds, in the reference's order.

    The pose model runs once per character (all characters of a batch in one forward pass),
    each on the reference's crop of its box.  The characters of an image come from the boxes
    given for it, else from the masks given for it, else from the segmenter's mask, else the
    whole image is one character; a mask is split by :func:`illustpose.characters.split_mask`
    (``characters``, ``min_area``).  Each pose's absent joints are marked
    (:func:`illustpose.characters.joints_present`).  When the tagger and the pose model hold
    identical trunk tensors they share them (:func:`share_trunk`).

    Args:
        segmenter, tagger, pose: the detectors (None = not run).
        characters: ``"auto"`` (every character of the mask), ``1`` (the reference's single box
            around the whole mask) or ``N`` (at most N).
        min_area: a character's least pixel area, as a fraction of the largest's (0..1).

    Raises:
        CharacterError: a bad ``characters`` or ``min_area``.
    """

    def __init__(self, segmenter: CharacterSegmenter | None = None, tagger: DanbooruTagger | None = None,
                 pose: PoseEstimator | None = None, *, characters: str | int = "auto", min_area: float = MIN_AREA):
        self.segmenter, self.tagger, self.pose = segmenter, tagger, pose
        self.characters, self.min_area = characters_setting(characters), min_area_setting(min_area)
        self.trunk_shared = bool(tagger and pose) and share_trunk(tagger, pose)

    def _characters(self, image: Image.Image, boxes, mask, seg: SegmentationResult | None) -> list[Character]:
        if boxes is not None:
            return _given_characters(boxes)
        if mask is not None:
            if isinstance(mask, np.ndarray) and mask.ndim == 2:
                return split_mask(mask, self.characters, self.min_area)
            return characters_from_masks(mask)
        if seg is not None:
            return split_mask(seg.mask, self.characters, self.min_area, self.segmenter.bbox_threshold)
        return [Character((0, 0, image.width, image.height))]

    def prepare(self, image: Image.Image) -> PreparedImage:
        """The per-image CPU work before the models (the segmenter's and the tagger's resizes,
        letterboxes and tensors), safe to run in a loader thread while the models run on other
        images; :meth:`annotate` takes the result in place of the image, with the same output.
        The pose crops depend on the mask, so they are made in :meth:`annotate`, as are the inputs
        of a detector without ``prepare`` (a stand-in with only ``segment`` / ``tag``).

        Raises:
            ImageError: the image has more than :data:`~illustpose.images.MAX_PIXELS` pixels.
        """
        return PreparedImage(image, *(detector.prepare(image) if hasattr(detector, "prepare") else None
                                      for detector in (self.segmenter, self.tagger)))

    def annotate(self, images: Sequence[Image.Image | PreparedImage], bboxes_xywh: Sequence | None = None, *,
                 masks: Sequence | None = None, return_heatmaps: bool = False) -> list[Annotation]:
        """Annotate a batch of 8-bit RGB/RGBA PIL images; returns one :class:`Annotation` each.

        Args:
            images: the images, or their :meth:`prepare` results (from this pipeline).
            bboxes_xywh: per image, its characters' boxes: one COCO ``[x, y, w, h]`` (pixels),
                a list of them (empty: no character), or None (masks or the segmenter decide);
                None = no boxes for any image.
            masks: per image, None, a uint8 ``(H, W)`` mask split into characters as the
                segmenter's is, or a list of uint8 ``(H, W)`` masks, one per character; None =
                no masks for any image.
            return_heatmaps: keep each pose's heatmap logits.

        Raises:
            CharacterError: a list of boxes or masks of another length than ``images``.
            KeypointError: a box without area.
            ImageError: an image over the pixel limit.
        """
        images = list(images)
        per_image = []
        for name, given in (("bboxes_xywh", bboxes_xywh), ("masks", masks)):
            given = [None] * len(images) if given is None else list(given)
            if len(given) != len(images):
                raise CharacterError(f"{name} holds {len(given)} entries for {len(images)} images; give one per image")
            per_image.append(given)
        prepared = [x if isinstance(x, PreparedImage) else PreparedImage(x) for x in images]
        images = [p.image for p in prepared]
        # images without their inputs: each detector makes them itself (any object with segment / tag works)
        segs, tags = [None] * len(images), [None] * len(images)
        if self.segmenter:
            inputs = [p.segmenter_input for p in prepared]
            segs = self.segmenter.segment(images) if any(t is None for t in inputs) else \
                self.segmenter.segment(images, inputs)
        if self.tagger:
            inputs = [p.tagger_input for p in prepared]
            tags = self.tagger.tag(images) if any(t is None for t in inputs) else self.tagger.tag_inputs(inputs)
        if not self.pose:
            return [Annotation(s, t, None) for s, t in zip(segs, tags)]
        found = [(i, c) for i, args in enumerate(zip(images, *per_image, segs)) for c in self._characters(*args)]
        results = self.pose.estimate([images[i] for i, _ in found], [list(c.bbox_xywh) for _, c in found],
                                     return_heatmaps=return_heatmaps) if found else []
        poses: list[list[PoseResult]] = [[] for _ in images]
        for (i, c), p in zip(found, results):
            poses[i].append(replace(p, present=joints_present(p.keypoints, p.image_size_hw, c)))
        return [Annotation(s, t, tuple(p)) for s, t, p in zip(segs, tags, poses)]

    def poses(self, image: Image.Image) -> list[PoseResult]:
        """The pose of each character of one image, largest first (empty when none is found)."""
        if self.pose is None:
            raise ValueError("this pipeline has no pose estimator")
        return list(self.annotate([image])[0].poses)

    def estimate(self, image: Image.Image) -> PoseResult:
        """The pose of the largest character of one image.

        Raises:
            CharacterError: no character was found (an empty mask with ``characters="auto"``).
        """
        poses = self.poses(image)
        if not poses:
            raise CharacterError("no character found in the image (its character mask is empty); use characters=1 "
                                 "for the whole image, or give the character's box")
        return poses[0]
