"""What every detector shares: a network in eval mode on a device, built from a checkpoint."""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import nn

from .checkpoints import Checkpoint, read_checkpoint

__all__ = ["Detector"]


class Detector:
    """Base of :class:`~illustpose.segment.CharacterSegmenter`, :class:`~illustpose.tag.DanbooruTagger`
    and :class:`~illustpose.pose.PoseEstimator`: load once, call many times.

    Attributes:
        net: the ``nn.Module`` in eval mode.
        source: the weight file it came from (for messages and metadata).
        kind: the model kind (``"segmenter"``, ``"tagger"``, ``"feat_match"``).
    """

    #: weight kind used by :func:`illustpose.weights.resolve` when no path is given
    default_weights: str = ""

    def __init__(self, net: nn.Module, *, source: str = "", kind: str = ""):
        self.net = net.eval()
        self.source = source
        self.kind = kind

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> "Detector":
        """Move the network to ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); returns self."""
        self.net.to(device)
        return self

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, **kwargs) -> "Detector":  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        *,
        weights: str | None = None,
        search_dirs: Sequence[str | os.PathLike] = (),
        offline: bool | None = None,
        device: str | torch.device = "cpu",
        **kwargs,
    ):
        """Find (or download), read and load weights.

        Args:
            path: an explicit weight file (``.ckpt``, ``.pth``, ``.safetensors``); wins over
                everything else.
            weights: a known weight name from ``weights/manifest.json`` (default: the
                detector's :attr:`default_weights`).
            search_dirs: extra folders to look in first (ComfyUI's ``models/illustpose``).
            offline: never download (default: the ``HF_HUB_OFFLINE`` environment variable).
            device: where to put the network.

        Raises:
            WeightsNotFoundError: nothing found and no download possible (the message lists
                what to get and where to put it).
            CheckpointError, UnsafeCheckpointError, WrongModelError: a bad or wrong file.
        """
        from .weights import resolve

        file = resolve(weights or cls.default_weights, path, search_dirs=search_dirs, offline=offline)
        det = cls.from_checkpoint(read_checkpoint(file), search_dirs=search_dirs, **kwargs)
        return det.to(device)
