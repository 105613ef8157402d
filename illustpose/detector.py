"""What every detector shares: a network in eval mode on a device, built from a checkpoint."""

from __future__ import annotations

import contextlib
import os
from typing import Sequence

import torch
from torch import nn

from .checkpoints import Checkpoint, read_checkpoint

__all__ = ["Detector", "PRECISIONS"]

#: Compute precisions.  ``fp32`` is the exact path (equal to the reference, golden-tested);
#: ``bf16``/``fp16`` run the network under ``torch.autocast`` in channels-last layout: faster
#: (bf16 on CPUs with native bf16, fp16 on CUDA GPUs) but not equal to the reference.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        self.precision = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device | None = None, *, precision: str | None = None) -> "Detector":
        """Move the network and/or set its compute precision; returns self.

        Args:
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (unchanged when None).
            precision: one of :data:`PRECISIONS` (unchanged when None).

        Raises:
            ValueError: an unknown precision.
        """
        if precision is not None:
            if precision not in PRECISIONS:
                raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
            self.precision = precision
            fmt = torch.contiguous_format if precision == "fp32" else torch.channels_last
            self.net.to(memory_format=fmt)
        if device is not None:
            self.net.to(device)
            if torch.device(device).type == "cuda":
                torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        return self

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])

    def _input(self, batch: torch.Tensor) -> torch.Tensor:
        """A CPU batch moved to the network's device (pinned, asynchronous copy on CUDA) and layout."""
        device = self.device
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        else:
            batch = batch.to(device)
        if self.precision != "fp32":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the network on a CPU batch at the detector's precision; float32 output on the CPU."""
        with torch.inference_mode(), self._autocast():
            return self.net(self._input(batch)).float().cpu()

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
        precision: str = "fp32",
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
            precision: ``"fp32"`` (exact, default), ``"bf16"`` or ``"fp16"`` (see :data:`PRECISIONS`).

        Raises:
            WeightsNotFoundError: nothing found and no download possible (the message lists
                what to get and where to put it).
            CheckpointError, UnsafeCheckpointError, WrongModelError: a bad or wrong file.
        """
        from .weights import resolve

        file = resolve(weights or cls.default_weights, path, search_dirs=search_dirs, offline=offline)
        det = cls.from_checkpoint(read_checkpoint(file), search_dirs=search_dirs, **kwargs)
        return det.to(device, precision=precision)
