"""Turning inputs into pose index entries: image files, pictures without a file, pose files.

What ``index build`` / ``index add`` and the ComfyUI Pose Index Add node share:

* **content hashes** decide what is new: an image file is hashed by its bytes, a picture
  without a file (a ComfyUI IMAGE) by the PNG it is saved as; content already in the index
  is skipped *before* the model runs (unless duplicates are allowed);
* **one entry per character** of an image (its box is the entry's bbox), largest first: the
  first carries the image's hash, character ``k >= 1`` the hash of ``"<hash>#<k>"`` and the
  tag ``character: k``; an image where no character is found gives none (:attr:`Ingest.empty`);
* **pictures without a file** are saved as PNG in ``<index stem>_images/`` beside the index
  (:func:`save_reference`), so a query can show them; the entry's source is that path;
* **pose files** (:func:`load_pose_json`) need no model: a COCO annotation, a list of them
  (COCO results), a COCO file (``{"images", "annotations"}``; an annotation's source is its
  image's ``file_name`` next to the JSON file), or a ComfyUI POSE_KEYPOINT value (frames of
  OpenPose-18 bodies whose neck is dropped and whose bbox is the joints' extent: tighter than
  the segmenter's, so such poses match each other better than they match image poses).

Both pose-file forms carry the 17 COCO joints only: against a ``coco17`` index they are
complete poses; against an ``all25`` index they are partial (17 of 25 joints, distances
renormalised).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from ..errors import ImageError, PoseIndexError
from ..fileio import sha256_file, write_bytes
from ..images import load_image
from ..keypoints import OpenPosePerson, PoseFrame, parse_pose_keypoint
from ..results import PoseResult
from .descriptor import PoseKeypoints
from .store import IndexEntry, PoseIndex

__all__ = ["load_pose_json", "png_bytes", "save_reference", "images_folder", "pose_entries", "Ingest",
           "weights_record", "weights_differ"]

#: the poses of the characters of an 8-bit RGB/RGBA PIL image, largest first (``Pipeline.poses``)
Estimator = Callable[[Image.Image], Sequence[PoseResult]]


def _coco_poses(anns, images: dict, base: Path, path: Path) -> Iterator[tuple[str, PoseKeypoints, tuple | None]]:
    for n, ann in enumerate(anns):
        im = images.get(ann.get("image_id")) if isinstance(ann, dict) else None
        source = str(base / im["file_name"]) if im and im.get("file_name") else f"{path}#{n}"
        hw = (int(im["height"]), int(im["width"])) if im and "height" in im and "width" in im else None
        yield source, PoseKeypoints.from_coco_annotation(ann), hw


def weights_record(**files) -> dict:
    """What an index records of the weights that make its poses: for each weight file given
    (keyword = role, ``segmenter`` / ``pose``; None and "" left out), ``{"file": name, "path":
    absolute path, "sha256": hex}``.

    Raises:
        OSError: a weight file cannot be read.
    """
    from ..weights import file_sha256

    return {role: {"file": Path(f).name, "path": str(Path(f).resolve()), "sha256": file_sha256(f)}
            for role, f in files.items() if f}


def weights_differ(recorded: Mapping[str, Any], used: Mapping[str, Any]) -> list[str]:
    """The roles whose weight file differs (by sha256) between an index's record and ``used``
    (both :func:`weights_record` values); an index recorded before files were hashed, or
    without a role, compares nothing for it."""
    return [role for role, rec in used.items()
            if isinstance(recorded.get(role), Mapping) and recorded[role].get("sha256") != rec.get("sha256")]


def load_pose_json(path: str | Path) -> list[tuple[str, PoseKeypoints, tuple[int, int] | None]]:
    """The poses of a COCO or POSE_KEYPOINT JSON file (see the module docstring).

    Returns:
        list of ``(source, pose, image_size_hw or None)``; POSE_KEYPOINT people without any
        joint are left out.  The source is the file's path, with ``#n`` (annotation n) or
        ``#frame.person`` when the file holds several poses.

    Raises:
        PoseIndexError: unreadable JSON or an unrecognised layout.
        KeypointError / PoseFormatError: a malformed annotation or POSE_KEYPOINT value.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PoseIndexError(f"{path}: cannot read the pose JSON ({e})") from None
    items = value if isinstance(value, list) else [value]
    if isinstance(value, dict) and isinstance(value.get("annotations"), list):
        images = {im.get("id"): im for im in value.get("images", []) if isinstance(im, dict)}
        poses = list(_coco_poses(value["annotations"], images, path.parent, path))
    elif items and all(isinstance(v, dict) and "keypoints" in v for v in items):
        poses = list(_coco_poses(items, {}, path.parent, path))
    elif items and all(isinstance(v, dict) and ("people" in v or "canvas_height" in v) for v in items):
        poses = [(f"{path}#{i}.{j}", PoseKeypoints.from_openpose(person), frame.canvas_hw)
                 for i, frame in enumerate(parse_pose_keypoint(value))
                 for j, person in enumerate(frame.people) if person.present.any()]
    else:
        raise PoseIndexError(
            f"{path} is neither COCO keypoints (an annotation, a list of them, or a file with "
            "'annotations') nor a POSE_KEYPOINT value (frames with 'people' and 'canvas_height')"
        )
    if len(poses) == 1:
        poses = [(str(path) if "#" in poses[0][0] else poses[0][0], *poses[0][1:])]
    return poses


def png_bytes(image: Image.Image) -> tuple[bytes, str]:
    """The image as PNG bytes (zlib level 4) and their sha256: a picture's content hash."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=4)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def save_reference(folder: Path, data: bytes, sha: str, label: str | None) -> Path:
    """Write PNG ``data`` as ``folder/<label's stem>.png`` (``image_<sha>.png`` without a label).

    A file of that name with other content is kept and this one gets ``_<sha8>`` appended; a
    file with this content is not written again.  Written atomically.

    Returns:
        the PNG's path.
    """
    stem = re.sub(r"[^\w.-]+", "_", PurePosixPath(label.replace("\\", "/")).stem).strip("._") if label else ""
    path = folder / f"{stem or 'image_' + sha[:16]}.png"
    if path.is_file() and sha256_file(path) != sha:
        path = path.with_name(f"{path.stem}_{sha[:8]}.png")
    if not path.is_file():
        write_bytes(path, data)
    return path


def images_folder(index: PoseIndex) -> Path:
    """Where pictures without a file are saved: ``<index stem>_images/`` beside the index."""
    return index.path.with_name(f"{index.path.stem}_images")


def pose_entries(poses: Sequence[PoseResult], source: str, sha: str, tags: Mapping[str, Any],
                 min_score: float | None = None) -> list[IndexEntry]:
    """The entries of one image's characters (its poses, largest first; see the module
    docstring): the first carries the image's content hash ``sha``, character ``k >= 1`` the
    hash of ``"<sha>#<k>"`` and the tag ``character: k`` (only when there are several).  Joints
    scoring below ``min_score`` are stored as absent (None keeps all)."""
    several = len(poses) > 1
    return [IndexEntry.from_pose_result(
        p, source, sha256=hashlib.sha256(f"{sha}#{k}".encode()).hexdigest() if k else sha,
        tags={**tags, **({"character": k} if several else {})}, min_score=min_score)
        for k, p in enumerate(poses)]


class Ingest:
    """Makes entries for one index; the pose model runs only for content not indexed yet.

    Args:
        index: the open index (its content hashes decide what is new).
        estimate: the poses of the characters of one image (a
            :class:`~illustpose.pipeline.Pipeline`'s ``poses``); called only for new images, so
            a lazily built pipeline loads nothing when everything is indexed already.
        allow_duplicates: add content that is already indexed.
        tags: stored with every entry.
        min_score: joints scoring below it are stored as absent (None keeps all, as the
            reference).

    Attributes:
        already: inputs skipped because their content is indexed.
        failed: image files that could not be read, with the reason
            (``[(path, message), ...]``).
        empty: the sources of images where no character was found (no entry added).
    """

    def __init__(self, index: PoseIndex, estimate: Estimator | None = None, *, allow_duplicates: bool = False,
                 tags: Mapping[str, Any] | None = None, min_score: float | None = None):
        self.index, self.estimate = index, estimate
        self.allow_duplicates, self.tags, self.min_score = allow_duplicates, dict(tags or {}), min_score
        self.already = 0
        self.failed: list[tuple[Path, str]] = []
        self.empty: list[str] = []

    def _is_new(self, sha: str) -> bool:
        if not self.allow_duplicates and self.index.has_content(sha):
            self.already += 1
            return False
        return True

    def _entries(self, image: Image.Image, source: str, sha: str, tags: Mapping[str, Any]) -> list[IndexEntry]:
        """One entry per character (see the module docstring); none when no character is found."""
        if self.estimate is None:
            raise PoseIndexError("images need a pose model to estimate their poses; give one")
        poses = list(self.estimate(image))
        if not poses:
            self.empty.append(source)
        return pose_entries(poses, source, sha, {**self.tags, **tags}, self.min_score)

    def file_entries(self, path: str | Path) -> list[IndexEntry]:
        """The entries of one file: a pose JSON (every pose, no model) or an image (one per
        character, unless its bytes are indexed already; an unreadable image is recorded in
        :attr:`failed`, not raised).

        Raises:
            PoseIndexError / KeypointError: a malformed pose JSON.
        """
        path = Path(path)
        if path.suffix.lower() == ".json":
            return [IndexEntry(pose, source, None, hw, self.tags) for source, pose, hw in load_pose_json(path)]
        sha = sha256_file(path)
        if not self._is_new(sha):
            return []
        try:
            image = load_image(path)
        except ImageError as e:
            self.failed.append((path, str(e)))
            return []
        return self._entries(image, str(path.resolve()), sha, {})

    def image_entries(self, image: Image.Image, label: str | None = None) -> list[IndexEntry]:
        """The entries of a picture without a file, one per character (the picture saved by
        :func:`save_reference` when it has one), or none when its content is indexed already.
        ``label`` names the PNG and is stored as the entries' ``label`` tag."""
        data, sha = png_bytes(image)
        if not self._is_new(sha):
            return []
        entries = self._entries(image, label or "", sha, {"label": label} if label else {})
        if not entries:
            return []
        source = str(save_reference(images_folder(self.index), data, sha, label))
        return [IndexEntry(e.pose, source, e.sha256, e.image_size_hw, e.tags) for e in entries]

    def frame_entries(self, frames: Sequence[PoseFrame], images: Sequence[Image.Image] | None = None,
                      labels: Sequence[str | None] | None = None) -> list[IndexEntry]:
        """One entry per person with a joint in each POSE_KEYPOINT frame (17 COCO joints, bbox =
        the joints' extent), no model run.

        With ``images`` (one per frame) the keypoints are scaled from the frame's canvas to the
        image, the image is saved (:func:`save_reference`) and is the source; without, the
        source is the frame's label or ``pose_<hash>`` (``#person`` appended when a labelled
        frame holds several people).

        Raises:
            PoseIndexError: ``images`` or ``labels`` of another length than ``frames``.
        """
        labels = list(labels) if labels is not None else [None] * len(frames)
        if len(labels) != len(frames) or (images is not None and len(images) != len(frames)):
            raise PoseIndexError(f"{len(frames)} pose frames for {len(labels)} labels"
                                 + ("" if images is None else f" and {len(images)} images")
                                 + "; give one per frame")
        entries = []
        for i, frame in enumerate(frames):
            people = [p for p in frame.people if p.present.any()]
            if not people:
                continue
            hw, scale, source, tags = frame.canvas_hw, np.ones(2), labels[i], dict(self.tags)
            if images is not None:
                hw = (images[i].height, images[i].width)
                scale = np.array([hw[1] / frame.canvas_hw[1], hw[0] / frame.canvas_hw[0]])
                source = str(save_reference(images_folder(self.index), *png_bytes(images[i]), labels[i]))
                tags.update({"label": labels[i]} if labels[i] else {})
            for j, person in enumerate(people):
                pose = PoseKeypoints.from_openpose(OpenPosePerson(person.xy * scale, person.present))
                name = source or f"pose_{pose.content_hash()[:12]}"
                if images is None and source and len(people) > 1:
                    name = f"{source}#{j}"
                entries.append(IndexEntry(pose, name, image_size_hw=hw, tags=tags))
        return entries
