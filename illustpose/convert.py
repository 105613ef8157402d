"""``weights convert``: any supported weight file -> illustpose ``.safetensors``.

Converting the authors' ``.ckpt`` once makes later loads fast (memory-mapped safetensors, no
pickle, no optimizer state) and stores what the original lacks: the effective
hyper-parameters, the tag names (tagger), the source file name and its sha256.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .checkpoints import file_sha256, read_checkpoint, save_safetensors
from .loading import RELEASED_HPARAMS, expect_kind

__all__ = ["convert"]


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, tags: str | os.PathLike | None = None) -> Path:
    """Convert ``src`` to an illustpose safetensors file at ``dst`` (written atomically).

    The file is first loaded into its model (strict keys and shapes), so a bad file fails
    here, not later.  feat_match drops the unused ``rcnn.*`` tensors (~313 MB).

    Args:
        src: a Lightning ``.ckpt``, an HF ``.pth`` or an illustpose ``.safetensors``.
        dst: output path (``.safetensors``).
        tags: tag-name file for a tagger whose format carries no names.

    Returns:
        ``dst`` as a Path.

    Raises:
        CheckpointError and subclasses: unreadable, unsafe, incomplete or unsupported file.
    """
    from .pose import PoseEstimator
    from .segment import CharacterSegmenter
    from .tag import DanbooruTagger

    ckpt = read_checkpoint(src)
    kind = expect_kind(ckpt, ("segmenter", "tagger", "feat_match", "feat_concat"))
    extra = {"source": Path(src).name, "source_sha256": file_sha256(src)}
    if kind == "tagger":
        det = DanbooruTagger.from_checkpoint(ckpt, tags=tags)
        extra["tags"] = json.dumps(det.tag_names)
    elif kind == "segmenter":
        CharacterSegmenter.from_checkpoint(ckpt)
    else:
        PoseEstimator.from_checkpoint(ckpt)  # refuses feat_concat until it is supported
    state = {k: v for k, v in ckpt.state_dict.items() if not (kind == "feat_match" and k.startswith("rcnn."))}
    hparams = ckpt.hparams or RELEASED_HPARAMS[kind]
    extra["hparams_source"] = "checkpoint" if ckpt.hparams else "released-defaults"
    for key in ("source", "source_sha256") if ckpt.format == "safetensors" else ():
        extra[key] = ckpt.metadata.get(key, extra[key])
    save_safetensors(dst, state, model=kind, hparams=hparams, extra=extra)
    return Path(dst)
