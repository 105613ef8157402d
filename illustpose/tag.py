"""Danbooru tagging: a score for each of the tagger's tags."""

from __future__ import annotations

import json
import os
from typing import Sequence

import torch
from PIL import Image

from .checkpoints import Checkpoint
from .detector import Detector
from .errors import CheckpointError
from .loading import expect_kind, hparam, load_strict, read_tag_names
from .models.tagger import DanbooruTaggerNet
from .preprocess import tagger_input
from .results import TagResult

__all__ = ["DanbooruTagger"]


def _tag_names(ckpt: Checkpoint, tags: str | os.PathLike | None, search_dirs) -> tuple[list[str], str]:
    """Tag names for a tagger checkpoint: explicit file > the file's own metadata > a names
    file beside the weights.  Returns the names and where they came from."""
    if tags is not None:
        return read_tag_names(tags), str(tags)
    if "tags" in ckpt.metadata:
        return json.loads(ckpt.metadata["tags"]), f"{ckpt.path} (metadata)"
    from .weights import tags_path_for

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

    default_weights = "tagger"

    def __init__(self, net: DanbooruTaggerNet, tag_names: Sequence[str], *, size: int = 256, **kw):
        super().__init__(net, kind="tagger", **kw)
        self.tag_names = list(tag_names)
        self.size = int(size)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, *, tags: str | os.PathLike | None = None, search_dirs=(), **kwargs):
        """Build from a tagger checkpoint of any format.

        Raises:
            CheckpointError: no tag names found, or their count differs from the head's size.
        """
        expect_kind(ckpt, ("tagger",))
        num = int(ckpt.state_dict["resnet.fc.weight"].shape[0])
        names, where = _tag_names(ckpt, tags, search_dirs)
        if len(names) != num:
            raise CheckpointError(f"{where}: expected {num} tag names (the size of {ckpt.path}'s head), got {len(names)}")
        net = load_strict(lambda: DanbooruTaggerNet(num), ckpt.state_dict, ckpt.path)
        return cls(net, names, size=hparam(ckpt, "tagger", "largs.danbooru_sfw.size"), source=ckpt.path, **kwargs)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, S, S) in [0, 1] -> float32 (B, num_tags) logits on the CPU."""
        return self.forward(batch)

    def __call__(self, images: Image.Image | Sequence[Image.Image]):
        """Tag one image (-> :class:`TagResult`) or a list (-> list, run as one batch)."""
        if isinstance(images, Image.Image):
            return self.tag([images])[0]
        return self.tag(list(images))

    def tag(self, images: Sequence[Image.Image]) -> list[TagResult]:
        """Scores for every tag of each image: ``sigmoid(logits)`` in rule order."""
        if not images:
            return []
        logits = self.logits(torch.stack([tagger_input(im, self.size) for im in images]))
        probs = torch.sigmoid(logits)
        return [TagResult(dict(zip(self.tag_names, p.tolist())), lg.numpy()) for lg, p in zip(logits, probs)]
