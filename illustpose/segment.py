"""Character segmentation: mask, probability and bbox of the character in an image."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .checkpoints import Checkpoint
from .detector import Detector
from .geometry import bbox_from_mask, bbox_rc_to_xywh
from .loading import expect_kind, hparam, load_strict
from .models.segmenter import CharacterSegmenterNet
from .preprocess import segmenter_input
from .results import SegmentationResult

__all__ = ["CharacterSegmenter"]


class CharacterSegmenter(Detector):
    """The paper's character segmenter (reference ``_scripts/character_segmenter.py``).

    Args:
        net: a loaded :class:`~illustpose.models.segmenter.CharacterSegmenterNet`.
        size: working short side in pixels (``largs.bg_seg.size``, 256 released).
        bbox_threshold: the bbox rule's probability threshold (0.5 as the reference).

    Call with one PIL image (8-bit ``RGB``/``RGBA``, see :mod:`illustpose.images`) or a list.
    """

    default_weights = "segmenter"

    def __init__(self, net: CharacterSegmenterNet, *, size: int = 256, bbox_threshold: float = 0.5, **kw):
        super().__init__(net, kind="segmenter", **kw)
        self.size = int(size)
        self.bbox_threshold = bbox_threshold

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, **kwargs) -> "CharacterSegmenter":
        """Build from a segmenter checkpoint of any format (strict keys, hyper-parameters from the file)."""
        kwargs.pop("search_dirs", None)
        expect_kind(ckpt, ("segmenter",))
        net = load_strict(CharacterSegmenterNet, ckpt.state_dict, ckpt.path)
        return cls(net, size=hparam(ckpt, "segmenter", "largs.bg_seg.size"), source=ckpt.path, **kwargs)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Foreground probability for a batch of same-size inputs.

        Args:
            batch: float32 (B, 3, h, w) in [0, 1] from :func:`~illustpose.preprocess.segmenter_input`.

        Returns:
            float32 (B, h, w) in [0, 1] on the CPU (softmax channel 1).
        """
        return torch.softmax(self.forward(batch), dim=1)[:, 1]

    def __call__(self, images: Image.Image | Sequence[Image.Image]):
        """Segment one image (-> :class:`SegmentationResult`) or a list (-> list)."""
        if isinstance(images, Image.Image):
            return self.segment([images])[0]
        return self.segment(list(images))

    def segment(self, images: Sequence[Image.Image]) -> list[SegmentationResult]:
        """Segment images; inputs of equal working size run as one batch."""
        inputs = [segmenter_input(im, self.size) for im in images]
        probs: list[torch.Tensor | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(inputs):
            groups.setdefault(tuple(t.shape), []).append(i)
        for idx in groups.values():
            for i, p in zip(idx, self.probabilities(torch.stack([inputs[i] for i in idx]))):
                probs[i] = p
        return [self._result(im, p) for im, p in zip(images, probs)]

    def _result(self, image: Image.Image, prob: torch.Tensor) -> SegmentationResult:
        # reference: TF.to_pil_image(prob) (= trunc(255 * p) as uint8), then PIL's default
        # resize filter (bicubic) back to the input size, then abbox on the 8-bit mask.
        u8 = prob.mul(255).byte().numpy()
        mask = np.array(Image.fromarray(u8, "L").resize((image.width, image.height), Image.BICUBIC))
        bbox = bbox_rc_to_xywh(bbox_from_mask(mask, self.bbox_threshold))
        return SegmentationResult(mask=mask, probability=prob.numpy(), bbox_xywh=tuple(bbox))
