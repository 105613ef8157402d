"""Danbooru tagger: ResNet-50 with a multi-label head.

Reference ``_train/danbooru_tagger/models/kate.py`` (network) and ``_scripts/danbooru_tagger.py``
(inference).  State-dict keys are the authors' Lightning names: ``resnet.*`` = a torchvision
ResNet-50 whose ``fc`` is ``Linear(2048, num_tags)`` (1062 in the released checkpoint).  The
tag names come from the file's own metadata (converted files) or a tag-name file beside it.

This module holds the network (:class:`DanbooruTaggerNet`), its builder (:func:`build`), the tag
name readers and the detector (:class:`DanbooruTagger`); the registry record is ``tagger``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch
from PIL import Image
from torch import nn
from torchvision.models import resnet50

from ..checkpoints import Checkpoint
from ..detector import Detector
from ..errors import CheckpointError
from ..loading import expect_architecture, hparam, load_strict
from ..preprocess import tagger_input
from ..registry import ModelWeights
from ..results import TagResult
from ._common import ImageNetNormalize

__all__ = ["DanbooruTaggerNet", "build", "read_tag_names", "DanbooruTagger"]


class DanbooruTaggerNet(nn.Module):
    """ResNet-50 tagger.

    Args:
        num_tags: number of output classes (the length of the rules list; 1062 released).

    Forward:
        rgb: float32 (B, 3, S, S) in [0, 1], the letterboxed image (S = ``largs.danbooru_sfw.size``).
        returns: float32 (B, num_tags) logits; ``sigmoid`` gives the tag probabilities.
    """

    def __init__(self, num_tags: int):
        super().__init__()
        self.normalize = ImageNetNormalize()
        # weights=None: never download anything; the checkpoint provides every tensor.
        self.resnet = resnet50(weights=None, num_classes=num_tags)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.resnet(self.normalize(rgb))


_HEAD = "resnet.fc.weight"


def _num_tags(checkpoint: Checkpoint) -> int:
    """The head's size: rows of ``resnet.fc.weight`` (1062 released).

    Raises:
        CheckpointError: the file has no (2-D) ``resnet.fc.weight``.
    """
    head = checkpoint.state_dict.get(_HEAD)
    if head is None or head.dim() != 2:
        raise CheckpointError(f"{checkpoint.path}: a tagger file without its head '{_HEAD}' (num_tags x 2048); "
                              "the file is incomplete: download or convert it again")
    return int(head.shape[0])


def build(checkpoint: Checkpoint, weights: ModelWeights) -> DanbooruTaggerNet:
    """The tagger network with the checkpoint's tensors; the head's size is the file's.

    Raises:
        CheckpointError: no head, or missing, unexpected or misshapen keys.
    """
    num = _num_tags(checkpoint)
    return load_strict(lambda: DanbooruTaggerNet(num), checkpoint.state_dict, checkpoint.path)


def read_tag_names(path: str | Path) -> list[str]:
    """Tag names in output order from a rules JSON (list of objects with ``name``, the
    reference's ``*_rules.json``), a JSON list of strings, or a text file with one name per
    line (blank lines ignored).

    Raises:
        CheckpointError: unreadable file or wrong structure.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p}: cannot read tag names ({e})") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
            return [r["name"] if isinstance(r, Mapping) else str(r) for r in data]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(f"{p}: expected a JSON list of rules with a 'name' field, or of strings") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _tag_names(ckpt: Checkpoint, tags: str | os.PathLike | None, search_dirs) -> tuple[list[str], str]:
    """Tag names for a tagger checkpoint: explicit file > the file's own metadata > a names
    file beside the weights.  Returns the names and where they came from."""
    if tags is not None:
        return read_tag_names(tags), str(tags)
    if "tags" in ckpt.metadata:
        return json.loads(ckpt.metadata["tags"]), f"{ckpt.path} (metadata)"
    from ..weights import tags_path_for

    found = tags_path_for(ckpt.path, None, search_dirs=search_dirs)
    if found is None:
        raise CheckpointError(
            f"{ckpt.path}: no tag names: this format does not carry them. Pass the names file "
            "(--tags PATH, or tags= in Python): the authors' rules JSON "
            "'_data/danbooru/_filters/intently_combatively_rules.json' from bizarre_pose_models.zip "
            "or the HF repackaging's 'tags.txt'; or put it beside the weights as 'tags.txt'."
        )
    return read_tag_names(found), str(found)


class DanbooruTagger(Detector):
    """The paper's Danbooru tagger (reference ``_scripts/danbooru_tagger.py``).

    Args:
        net: a loaded :class:`~illustpose.models.tagger.DanbooruTaggerNet`.
        tag_names: one name per output, in the checkpoint's rule order.
        size: input side in pixels (``largs.danbooru_sfw.size``, 256 released).

    Call with one PIL image (8-bit ``RGB``/``RGBA``) or a list; returns :class:`TagResult`(s).
    """

    task = "tag"

    def __init__(self, net: DanbooruTaggerNet, tag_names: Sequence[str], *, size: int = 256, **kw):
        super().__init__(net, kind="tagger", **kw)
        self.tag_names = list(tag_names)
        self.size = int(size)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, *, tags: str | os.PathLike | None = None, search_dirs=(), **kwargs):
        """Build from a tagger checkpoint of any format.

        Raises:
            CheckpointError: no head or no tag names found, or their count differs from the
                head's size.
        """
        weights = expect_architecture(ckpt, cls.task)
        num = _num_tags(ckpt)
        names, where = _tag_names(ckpt, tags, search_dirs)
        if len(names) != num:
            raise CheckpointError(f"{where}: expected {num} tag names (the size of {ckpt.path}'s head), "
                                  f"got {len(names)}")
        net = weights.build(ckpt)
        return cls(net, names, size=hparam(ckpt, weights, "largs.danbooru_sfw.size"), source=ckpt.path, **kwargs)

    def checkpoint_metadata(self) -> dict[str, str]:
        """What a converted file stores beside the tensors: the tag names, as JSON."""
        return {"tags": json.dumps(self.tag_names)}

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, S, S) in [0, 1] -> float32 (B, num_tags) logits on the CPU."""
        return self.forward(batch)

    def __call__(self, images: Image.Image | Sequence[Image.Image]):
        """Tag one image (-> :class:`TagResult`) or a list (-> list, run as one batch)."""
        if isinstance(images, Image.Image):
            return self.tag([images])[0]
        return self.tag(list(images))

    def tag(self, images: Sequence[Image.Image]) -> list[TagResult]:
        """Scores for every tag of each image: ``sigmoid(logits)`` in rule order.

        Any image size works (the input is always ``size`` square; see
        :func:`~illustpose.preprocess.tagger_input`).

        Raises:
            ImageError: an image has more than :data:`~illustpose.images.MAX_PIXELS` pixels.
        """
        return self.tag_inputs([self.prepare(im) for im in images])

    def prepare(self, image: Image.Image) -> torch.Tensor:
        """The network input of one image: the CPU work of :meth:`tag` before the model (PIL
        resize, letterbox, transparency over white), safe to run in a loader thread meanwhile.

        Returns:
            float32 (3, S, S) in [0, 1] (:func:`~illustpose.preprocess.tagger_input`).

        Raises:
            ImageError: the image has more than :data:`~illustpose.images.MAX_PIXELS` pixels.
        """
        return tagger_input(image, self.size)

    def tag_inputs(self, inputs: Sequence[torch.Tensor]) -> list[TagResult]:
        """:meth:`tag` on inputs made beforehand by :meth:`prepare` (e.g. in a loader thread),
        run as one batch; the same results as :meth:`tag` on their images.

        Args:
            inputs: float32 (3, S, S) tensors in [0, 1], S = :attr:`size`.

        Raises:
            ValueError: an input of another shape (not made by this tagger's :meth:`prepare`).
        """
        if not inputs:
            return []
        wanted = (3, self.size, self.size)
        if bad := [tuple(t.shape) for t in inputs if tuple(t.shape) != wanted]:
            raise ValueError(f"prepared inputs of shape {bad[0]} do not fit this tagger (expected {wanted}): "
                             "prepare the images with this tagger")
        logits = self.logits(torch.stack(list(inputs)))
        probs = torch.sigmoid(logits)
        return [TagResult(dict(zip(self.tag_names, p.tolist())), lg.numpy()) for lg, p in zip(logits, probs)]
