"""Files written by ``annotate`` for one image (the output contract other tools read).

For input ``NAME.ext``: ``NAME.mask.png`` (8-bit grey, character probability at the input
size), ``NAME.cutout.png`` (RGBA: alpha = mask x the input's own alpha), ``NAME.tags.txt``
(tags with score >= the threshold, highest first, ``", "``-joined), ``NAME.tags.json``
(``{"tags": {name: score}}``, every tag in rule order), ``NAME.pose.json``
(``{"image_size": [w, h], "annotations": [...]}``: one COCO keypoint annotation per character,
largest box first, see :func:`pose_document`), ``NAME.pose_keypoint.json`` (the same joints as
ComfyUI's POSE_KEYPOINT, OpenPose-18, one person per character), ``NAME.openpose.png`` (the
OpenPose control image of all characters at the input size, drawn exactly as the Illustrated
Pose node draws it) and ``NAME.pose.png`` (each character's box and skeleton drawn over the
image).  Absent joints (:func:`illustpose.characters.joints_present`) have ``v = 0`` in
``pose.json``, confidence 0 in ``pose_keypoint.json`` and are not drawn.  An image where no
character was found gets an empty ``annotations`` list and ``people`` list.  Numbers in the
pose files are rounded to :data:`JSON_DECIMALS` places (pixels and scores); the library's
results keep full precision.  Every file is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .fileio import write_text
from .images import save_png
from .keypoints import to_coco_annotation, to_pose_keypoint
from .pipeline import Annotation
from .render import draw_pose_results, render_pose_keypoint
from .results import TagResult

__all__ = ["JSON_DECIMALS", "caption", "select_tags", "pose_document", "write_annotation"]

#: decimal places of the numbers in the pose files (1/10,000 of a pixel; scores likewise)
JSON_DECIMALS = 4


def _rounded(value):
    """``value`` (JSON-like: dicts, lists, numbers) with every float rounded to :data:`JSON_DECIMALS`."""
    if isinstance(value, float):
        return round(value, JSON_DECIMALS)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _write_json(path: Path, value) -> None:
    write_text(path, json.dumps(_rounded(value), indent=1) + "\n")


def _normalize(tag: str) -> str:
    return tag.strip().lower().replace("_", " ")


def select_tags(result: TagResult, threshold: float = 0.5, exclude: str = "", replace_underscores: bool = True,
                sort_by_score: bool = True, max_tags: int = 0) -> list[tuple[str, float]]:
    """The tags kept for one image, as ``(name, score)`` in caption order.

    Kept: score >= ``threshold`` (the reference's rule) and not in ``exclude`` (comma-separated,
    matched case-insensitively with underscores and spaces alike); highest score first, or the
    tagger's rule order; at most ``max_tags`` (0 = all); underscores become spaces if asked
    (the reference's LoRA captioner default).
    """
    excluded = {_normalize(t) for t in exclude.split(",") if t.strip()}
    kept = [(n, s) for n, s in result.scores.items() if s >= threshold and _normalize(n) not in excluded]
    if sort_by_score:
        kept.sort(key=lambda ns: -ns[1])
    if max_tags > 0:
        kept = kept[:max_tags]
    return [(n.replace("_", " ") if replace_underscores else n, s) for n, s in kept]


def caption(tags: TagResult, threshold: float = 0.5, *, underscores: bool = False, exclude: str = "",
            max_tags: int = 0) -> str:
    """The kept tags (:func:`select_tags`, highest score first) joined by ``", "``."""
    return ", ".join(n for n, _ in select_tags(tags, threshold, exclude, not underscores, True, max_tags))


def pose_document(poses, image_size_hw: tuple[int, int]) -> dict:
    """The content of ``NAME.pose.json``: ``{"image_size": [w, h], "annotations": [...]}`` with
    one :func:`~illustpose.keypoints.to_coco_annotation` per pose (``id`` 1, 2, ... in the
    given order, absent joints ``v = 0``), unrounded.

    Args:
        poses: :class:`~illustpose.results.PoseResult` s of one image, largest first.
        image_size_hw: ``(H, W)`` of the image in pixels.
    """
    return {"image_size": [int(image_size_hw[1]), int(image_size_hw[0])],
            "annotations": [to_coco_annotation(p.keypoints, p.scores, list(p.bbox_xywh), ann_id=k,
                                               present=p.visible()) for k, p in enumerate(poses, start=1)]}


def write_annotation(out_stem: Path, image: Image.Image, ann: Annotation, *, tag_threshold: float = 0.5,
                     underscores: bool = False, exclude_tags: str = "", max_tags: int = 0) -> list[Path]:
    """Write the files of one annotated image next to ``out_stem`` (``DIR/NAME``); returns their paths."""
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    written = []

    def path(suffix: str) -> Path:
        p = out_stem.with_name(out_stem.name + suffix)
        written.append(p)
        return p

    if ann.segmentation is not None:
        mask = ann.segmentation.mask
        save_png(path(".mask.png"), Image.fromarray(mask, "L"))
        rgba = np.asarray(image.convert("RGBA")).copy()
        rgba[..., 3] = (rgba[..., 3].astype(np.uint16) * mask // 255).astype(np.uint8)
        save_png(path(".cutout.png"), Image.fromarray(rgba, "RGBA"))
    if ann.tags is not None:
        write_text(path(".tags.txt"), caption(ann.tags, tag_threshold, underscores=underscores,
                                              exclude=exclude_tags, max_tags=max_tags) + "\n")
        write_text(path(".tags.json"), json.dumps({"tags": ann.tags.scores}, indent=1) + "\n")
    if ann.poses is not None:
        hw = (image.height, image.width)
        _write_json(path(".pose.json"), pose_document(ann.poses, hw))
        pose_keypoint = to_pose_keypoint([[p.openpose() for p in ann.poses]], [hw])
        _write_json(path(".pose_keypoint.json"), pose_keypoint)
        save_png(path(".openpose.png"), Image.fromarray(render_pose_keypoint(pose_keypoint)[0], "RGB"))
        save_png(path(".pose.png"), Image.fromarray(draw_pose_results(np.asarray(image.convert("RGB")), ann.poses), "RGB"))
    return written
