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
    here, not later.  Tensors the architecture never reads are left out (feat_match's
    ``rcnn.*``, about 313 MB).

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
    known = {o.keyword for o in weights.file_options}
    detector = weights.detector_class.from_checkpoint(ckpt, **{k: v for k, v in options.items()
                                                               if k in known and v is not None})
    extra = {"source": Path(src).name, "source_sha256": sha256_file(src), **detector.checkpoint_metadata()}
    if ckpt.format == "safetensors":  # a converted file keeps naming the original
        extra.update({k: ckpt.metadata[k] for k in ("source", "source_sha256") if k in ckpt.metadata})
    extra["hparams_source"] = "checkpoint" if ckpt.hparams else "released-defaults"
    state = {k: v for k, v in ckpt.state_dict.items() if not k.startswith(weights.unused_prefixes)}
    save_safetensors(dst, state, model=weights.architecture, hparams=ckpt.hparams or weights.hparams, extra=extra)
    return Path(dst)
