"""Character segmenter: DeepLabv3-ResNet101 plus a final head over [DeepLab output, input].

Reference ``_train/character_bg_seg/models/alaska.py`` (network) and
``_scripts/character_segmenter.py`` (inference).  Keys: ``deeplab.backbone.*`` (ResNet-101,
dilated layer3/layer4), ``deeplab.classifier.*`` (ASPP(2048, [12, 24, 36]) -> conv 256->64, BN,
LeakyReLU -> conv 64->16, BN, LeakyReLU) and ``final_head.*`` (conv 19->16, BN, LeakyReLU, conv
16->8, BN, LeakyReLU, conv 8->2).  No ``aux_classifier``.

This module holds the network (:class:`CharacterSegmenterNet`), its builder (:func:`build`) and
its detector (:class:`CharacterSegmenter`); the registry record is ``segmenter``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.models import resnet101
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabV3

from ..checkpoints import Checkpoint
from ..detector import Detector
from ..geometry import bbox_from_mask, bbox_rc_to_xywh, segmenter_frame
from ..loading import expect_architecture, hparam, load_strict
from ..preprocess import SEGMENTER_MAX_ASPECT, segmenter_input
from ..registry import ModelWeights
from ..results import SegmentationResult
from ._common import ImageNetNormalize

__all__ = ["CharacterSegmenterNet", "build", "CharacterSegmenter"]


def _conv_bn_lrelu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU()]


class CharacterSegmenterNet(nn.Module):
    """Foreground/background segmenter.

    Forward:
        rgb: float32 (B, 3, H, W) in [0, 1], any size (the reference feeds short side 256,
            transparent pixels composited over white).
        returns: float32 (B, 2, H, W) logits; ``softmax(dim=1)[:, 1]`` is the character
            probability.
    """

    def __init__(self):
        super().__init__()
        self.normalize = ImageNetNormalize()
        backbone = resnet101(weights=None, replace_stride_with_dilation=[False, True, True])
        classifier = nn.Sequential(ASPP(2048, [12, 24, 36]), *_conv_bn_lrelu(256, 64), *_conv_bn_lrelu(64, 16))
        self.deeplab = DeepLabV3(IntermediateLayerGetter(backbone, {"layer4": "out"}), classifier, None)
        self.final_head = nn.Sequential(
            *_conv_bn_lrelu(16 + 3, 16),
            *_conv_bn_lrelu(16, 8),
            nn.Conv2d(8, 2, kernel_size=1, stride=1),
        )

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        normed = self.normalize(rgb)
        out = self.deeplab(normed)["out"]  # upsampled bilinear to the input size inside DeepLabV3
        return self.final_head(torch.cat([out, normed], dim=1))


def build(checkpoint: Checkpoint, weights: ModelWeights) -> CharacterSegmenterNet:
    """The segmenter network with the checkpoint's tensors (strict keys and shapes).

    Raises:
        CheckpointError: missing, unexpected or misshapen keys.
    """
    return load_strict(CharacterSegmenterNet, checkpoint.state_dict, checkpoint.path)


class CharacterSegmenter(Detector):
    """The paper's character segmenter (reference ``_scripts/character_segmenter.py``).

    Args:
        net: a loaded :class:`~illustpose.models.segmenter.CharacterSegmenterNet`.
        size: working short side in pixels (``largs.bg_seg.size``, 256 released).
        bbox_threshold: the bbox rule's probability threshold (0.5 as the reference).

    Call with one PIL image (8-bit ``RGB``/``RGBA``, see :mod:`illustpose.images`) or a list.
    The work per image is bounded: an image more elongated than
    :data:`~illustpose.preprocess.SEGMENTER_MAX_ASPECT` : 1 is letterboxed (see
    :mod:`illustpose.preprocess`), and its mask still comes back at its own size.
    """

    task = "segment"
    dynamic_dims = (0, 2, 3)  # compiled: the input's size follows each image's aspect ratio

    def __init__(self, net: CharacterSegmenterNet, *, size: int = 256, bbox_threshold: float = 0.5, **kw):
        super().__init__(net, kind="segmenter", **kw)
        self.size = int(size)
        self.bbox_threshold = bbox_threshold

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, **kwargs) -> "CharacterSegmenter":
        """Build from a segmenter checkpoint of any format (strict keys, hyper-parameters from the file)."""
        kwargs.pop("search_dirs", None)
        weights = expect_architecture(ckpt, cls.task)
        net = weights.build(ckpt)
        return cls(net, size=hparam(ckpt, weights, "largs.bg_seg.size"), source=ckpt.path, **kwargs)

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

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The network input of one image: the CPU work of :meth:`segment` before the model (PIL
        resize, transparency over white, letterbox), safe to run in a loader thread meanwhile.

        Returns:
            float32 (3, h, w) in [0, 1] (:func:`~illustpose.preprocess.segmenter_input`).

        Raises:
            ImageError: the image has more than :data:`~illustpose.images.MAX_PIXELS` pixels.
        """
        return segmenter_input(image, self.size)

    def segment(self, images: Sequence[Image.Image], inputs: Sequence[torch.Tensor] | None = None
                ) -> list[SegmentationResult]:
        """Segment images; inputs of equal working size run as one batch.

        Args:
            images: 8-bit RGB/RGBA PIL images.
            inputs: their :meth:`prepare` results, made beforehand (e.g. in a loader thread);
                None makes them here.  The results are the same either way.

        Raises:
            ImageError: an image has more than :data:`~illustpose.images.MAX_PIXELS` pixels.
            ValueError: ``inputs`` of another length than ``images``, or one not made by this
                segmenter's :meth:`prepare`.
        """
        inputs = [self.prepare(im) for im in images] if inputs is None else list(inputs)
        if len(inputs) != len(images):
            raise ValueError(f"got {len(images)} images but {len(inputs)} prepared inputs")
        for im, t in zip(images, inputs):
            canvas, _ = segmenter_frame((im.height, im.width), self.size, SEGMENTER_MAX_ASPECT * self.size)
            if tuple(t.shape) != (3, *canvas):
                raise ValueError(f"a prepared input of shape {tuple(t.shape)} does not fit this segmenter "
                                 f"(expected {(3, *canvas)}): prepare the image with this segmenter")
        probs: list[torch.Tensor | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, t in enumerate(inputs):
            groups.setdefault(tuple(t.shape), []).append(i)
        for idx in groups.values():
            for i, p in zip(idx, self.probabilities(torch.stack([inputs[i] for i in idx]))):
                probs[i] = p
        return [self._result(im, p) for im, p in zip(images, probs)]

    def _result(self, image: Image.Image, prob: torch.Tensor) -> SegmentationResult:
        # the image's own part of the working canvas (all of it unless letterboxed)
        _, (top, left, h, w) = segmenter_frame((image.height, image.width), self.size,
                                               SEGMENTER_MAX_ASPECT * self.size)
        prob = prob[top:top + h, left:left + w]
        # reference: TF.to_pil_image(prob) (= trunc(255 * p) as uint8), then PIL's default
        # resize filter (bicubic) back to the input size, then abbox on the 8-bit mask.
        u8 = prob.mul(255).byte().numpy()
        mask = np.array(Image.fromarray(u8, "L").resize((image.width, image.height), Image.BICUBIC))
        bbox = bbox_rc_to_xywh(bbox_from_mask(mask, self.bbox_threshold))
        return SegmentationResult(mask=mask, probability=prob.numpy(), bbox_xywh=tuple(bbox))
