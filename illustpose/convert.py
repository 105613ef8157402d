"""``weights convert``: any supported weight file -> illustpose ``.safetensors``.

Converting the authors' ``.ckpt`` once makes later loads fast (memory-mapped safetensors, no
pickle, no optimizer state) and stores what the original lacks: the effective
hyper-parameters, the detector's own metadata (the tagger's tag names), the source file name
and its sha256.  Which model a file holds, how it is checked and what is left out all come
from its registry record (:mod:`illustpose.registry`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoints import read_checkpoint, save_safetensors
from .fileio import sha256_file
from .loading import expect_architecture

__all__ = ["convert"]


def convert(src: str | os.PathLike, dst: str | os.PathLike, **options) -> Path:
    """Convert ``src`` to an illustpose safetensors file at ``dst`` (written atomically).

    The file is first loaded into its detector (strict keys and shapes), so a bad file fails
    here, not later.  What is saved is the loaded network's state: tensors the architecture
    never reads are left out (feat_match's ``rcnn.*``, about 313 MB) and those of a further
    file are put in (feat_concat's Keypoint R-CNN from ``rcnn_weights``), so the result
    loads on its own.

    Args:
        src: a Lightning ``.ckpt``, an HF ``.pth`` or an illustpose ``.safetensors``.
        dst: output path (``.safetensors``).
        **options: the architecture's further files (its registry ``file_options``), e.g.
            ``tags=`` for a tagger whose format carries no names; others are ignored.

    Returns:
        ``dst`` as a Path.

    Raises:
        WrongModelError: no registered model's keys are in the file.
        CheckpointError and subclasses: unreadable, unsafe, incomplete or unsupported file.
    """
    ckpt = read_checkpoint(src)
    weights = expect_architecture(ckpt)
    detector = weights.detector_class.from_checkpoint(ckpt, **weights.own_options(options))
    extra = {"source": Path(src).name, "source_sha256": sha256_file(src), **detector.checkpoint_metadata()}
    if ckpt.format == "safetensors":  # a converted file keeps naming the original
        extra.update({k: ckpt.metadata[k] for k in ("source", "source_sha256") if k in ckpt.metadata})
    extra["hparams_source"] = "checkpoint" if ckpt.hparams else "released-defaults"
    state = detector.net.state_dict()  # what the network loaded: a further file's tensors included
    save_safetensors(dst, state, model=weights.architecture, hparams=ckpt.hparams or weights.hparams, extra=extra)
    return Path(dst)
