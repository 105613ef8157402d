"""Files written by ``annotate`` for one image (the output contract other tools read).

For input ``NAME.ext``: ``NAME.mask.png`` (8-bit grey, character probability at the input
size), ``NAME.cutout.png`` (RGBA: alpha = mask x the input's own alpha), ``NAME.tags.txt``
(tags with score >= the threshold, highest first, ``", "``-joined), ``NAME.tags.json``
(``{"tags": {name: score}}``, every tag in rule order), ``NAME.pose.json`` (one COCO keypoint
annotation, see :func:`illustpose.keypoints.to_coco_annotation`) and ``NAME.pose.png`` (the
skeleton drawn over the image).  Every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .checkpoints import atomic_write
from .keypoints import to_coco_annotation
from .pipeline import Annotation
from .render import draw_skeleton
from .results import TagResult

__all__ = ["caption", "write_annotation"]


def caption(tags: TagResult, threshold: float = 0.5, *, underscores: bool = False) -> str:
    """Tags with score >= ``threshold``, highest first, joined by ``", "``.

    Underscores become spaces unless ``underscores`` (the reference's LoRA captioner default).
    """
    names = [n if underscores else n.replace("_", " ") for n, _ in tags.above(threshold)]
    return ", ".join(names)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _write_png(path: Path, img: Image.Image) -> None:
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def write_annotation(out_stem: Path, image: Image.Image, ann: Annotation, *, tag_threshold: float = 0.5,
                     underscores: bool = False) -> list[Path]:
    """Write the files of one annotated image next to ``out_stem`` (``DIR/NAME``); returns their paths."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    written = []

    def path(suffix: str) -> Path:
        p = out_stem.with_name(out_stem.name + suffix)
        written.append(p)
        return p

    if ann.segmentation is not None:
        mask = ann.segmentation.mask
        _write_png(path(".mask.png"), Image.fromarray(mask, "L"))
        rgba = np.asarray(image.convert("RGBA")).copy()
        rgba[..., 3] = (rgba[..., 3].astype(np.uint16) * mask // 255).astype(np.uint8)
        _write_png(path(".cutout.png"), Image.fromarray(rgba, "RGBA"))
    if ann.tags is not None:
        _write_text(path(".tags.txt"), caption(ann.tags, tag_threshold, underscores=underscores) + "\n")
        _write_text(path(".tags.json"), json.dumps({"tags": ann.tags.scores}, indent=1) + "\n")
    if ann.pose is not None:
        p = ann.pose
        coco = to_coco_annotation(p.keypoints, p.scores, list(p.bbox_xywh))
        coco["image_size"] = {"height": p.image_size_hw[0], "width": p.image_size_hw[1]}
        _write_text(path(".pose.json"), json.dumps(coco, indent=1) + "\n")
        rgb = np.asarray(image.convert("RGB"))
        drawn = draw_skeleton(rgb, p.keypoints, p.scores, bbox_xywh=list(p.bbox_xywh))
        _write_png(path(".pose.png"), Image.fromarray(drawn, "RGB"))
    return written
