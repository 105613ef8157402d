"""Pose reference index: add poses to an index file, query it for the nearest reference images,
show its info (the library's :mod:`illustpose.retrieval`).

Index files live in ``ComfyUI/models/illustpose/indexes/`` (``folder_paths`` key
``illustpose_indexes``, so ``extra_model_paths.yaml`` can add folders) or at an absolute path.
An index stores a source path per pose, not pixels, and images coming from a graph have no
file: Pose Index Add saves each as a PNG in ``<index stem>_images/`` beside the index (named
after its label, else ``image_<content hash>``) and records that path; Pose Index Query loads
its results from the sources (a missing file gives a grey placeholder).  Open indexes are
cached by path while the file keeps its inode and mtime; a handle reads rows added since (by
any process) at each query, so repeated queries do not rebuild the search matrix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from io import BytesIO
from pathlib import Path, PurePosixPath

import folder_paths
import numpy as np
from PIL import Image

from illustpose.checkpoints import atomic_write
from illustpose.errors import ImageError
from illustpose.images import load_image
from illustpose.keypoints import OpenPosePerson, coco17_to_openpose18, parse_pose_keypoint
from illustpose.pipeline import Pipeline
from illustpose.render import draw_openpose
from illustpose.retrieval import DEFAULT_MIN_JOINTS, IndexEntry, PoseIndex, PoseKeypoints, StoredEntry

from ._api import POSE_KEYPOINT, POSE_MODEL, SEGMENTER, io
from ._common import IllustposeNodeError, image_tensor, map_with_progress, on_device, reports_errors, to_pil_images
from .pose import MAX_RESOLUTION

FOLDER = "illustpose_indexes"
DEFAULT_INDEX = "pose_references.sqlite"
CACHE_SIZE = 4  # index files kept open (each holds its search matrix)
MAX_K = 100
PLACEHOLDER_GREY = 128

folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, "illustpose", "indexes"))
_open: OrderedDict = OrderedDict()  # realpath -> (file identity, PoseIndex)
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- index files


def index_path(name: str, *, must_exist: bool) -> Path:
    """The file an ``index`` input names: an absolute path as it is; a name (subfolders allowed)
    found in the ``illustpose_indexes`` folders, else placed under the first of them."""
    name = name.strip()
    folders = folder_paths.get_folder_paths(FOLDER)
    if not name:
        raise IllustposeNodeError(f"index is empty: give a file name (e.g. {DEFAULT_INDEX!r}, kept in "
                                  f"{folders[0]}) or an absolute path")
    path = Path(name).expanduser()
    if not path.is_absolute():
        found = folder_paths.get_full_path(FOLDER, name)
        path = Path(found) if found else Path(folders[0], os.path.relpath(os.path.join("/", name), "/"))
    if must_exist and not path.is_file():
        raise IllustposeNodeError(f"no pose index at {path}; add poses with Pose Index Add (it creates the file) "
                                  f"or build one with `python -m illustpose index build {path} FOLDER`")
    return path


def _identity(path: Path) -> tuple:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_mtime_ns


def open_index(path: Path, *, create: bool = False, model: dict | None = None) -> PoseIndex:
    """The index at ``path``, from the cache while the file is the same (device, inode, mtime),
    else opened (created when asked) and cached; replaced and evicted handles are closed."""
    key = os.path.realpath(path)
    cached = _open.pop(key, None)
    if cached and path.exists() and cached[0] == _identity(path):
        _open[key] = cached
        return cached[1]
    if cached:
        cached[1].close()
    index = PoseIndex(path, create=create, model=model)
    _open[key] = (_identity(path), index)
    while len(_open) > CACHE_SIZE:
        _open.popitem(last=False)[1][1].close()
    return index


def index_fingerprint(index) -> list | float:
    """What changes when the index may have changed: the file's and its WAL's identity and size
    (a commit writes the WAL).  NaN (always re-run) when the file is not there, or when the input
    is a link (ComfyUI then passes None: it gives fingerprints widget values only)."""
    try:
        path = index_path(index, must_exist=True) if isinstance(index, str) else None
    except IllustposeNodeError:
        path = None
    if path is None:
        return float("nan")
    state = []
    for p in (path, Path(f"{path}-wal")):
        try:
            st = p.stat()
            state.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            state.append(None)
    return state


# --------------------------------------------------------------------------- adding


def _labels(sources: str, count: int, what: str) -> list:
    """One label per image or frame (``what``) from the ``sources`` text (non-empty lines), else Nones."""
    lines = [s.strip() for s in sources.splitlines() if s.strip()]
    if lines and len(lines) != count:
        raise IllustposeNodeError(f"sources holds {len(lines)} labels for {count} {what}s; give one line per "
                                  f"{what}, or none for generated names")
    return lines or [None] * count


def _png(image: Image.Image) -> tuple[bytes, str]:
    """The image as PNG bytes and their sha256 (the entry's content hash, as the CLI hashes files)."""
    buf = BytesIO()
    image.save(buf, format="PNG", compress_level=4)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def save_reference(folder: Path, data: bytes, sha: str, label: str | None) -> Path:
    """Write PNG ``data`` as ``folder/<label's stem>.png`` (``image_<sha>.png`` without a label)
    and return the path.  A file of that name with other content is kept and this one gets
    ``_<sha8>`` appended; a file with this content is not written again."""
    stem = re.sub(r"[^\w.-]+", "_", PurePosixPath(label.replace("\\", "/")).stem).strip("._") if label else ""
    path = folder / f"{stem or 'image_' + sha[:16]}.png"
    if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != sha:
        path = path.with_name(f"{path.stem}_{sha[:8]}.png")
    if not path.is_file():
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def images_folder(index: PoseIndex) -> Path:
    return index.path.with_name(f"{index.path.stem}_images")


def estimated_entries(index: PoseIndex, images: list, labels: list, pipeline: Pipeline,
                      allow_duplicates: bool) -> tuple[list, int]:
    """Entries for images whose poses the pipeline estimates; images already indexed (same PNG
    hash) are skipped before the model runs.  Returns (entries, images skipped)."""
    folder = images_folder(index)

    def entry(i: int) -> IndexEntry | None:
        data, sha = _png(images[i])
        if not allow_duplicates and index.has_content(sha):
            return None
        result = pipeline.annotate([images[i]])[0].pose
        source = save_reference(folder, data, sha, labels[i])
        return IndexEntry.from_pose_result(result, str(source), sha256=sha,
                                           tags={"label": labels[i]} if labels[i] else None)

    with on_device(pipeline.segmenter, pipeline.pose):
        entries = map_with_progress(entry, range(len(images)))
    return [e for e in entries if e is not None], entries.count(None)


def keypoint_entries(index: PoseIndex, frames: list, images: list | None, labels: list) -> list:
    """One entry per person with a joint in each POSE_KEYPOINT frame (17 COCO joints, bbox = the
    joints' extent).  With images (one per frame) the keypoints are scaled from the frame's
    canvas to the image and the source is the saved image, else the frame's label or
    ``pose_<hash>`` (``#person`` appended when a labelled frame holds several people)."""
    if images is not None and len(images) != len(frames):
        raise IllustposeNodeError(f"pose_keypoint holds {len(frames)} frames for {len(images)} images; connect "
                                  "the poses of these images (one frame per image)")
    entries = []
    for i, frame in enumerate(frames):
        people = [p for p in frame.people if p.present.any()]
        if not people:
            continue
        hw, scale, source, tags = frame.canvas_hw, np.ones(2), labels[i], {}
        if images is not None:
            hw = (images[i].height, images[i].width)
            scale = np.array([hw[1] / frame.canvas_hw[1], hw[0] / frame.canvas_hw[0]])
            source = str(save_reference(images_folder(index), *_png(images[i]), labels[i]))
            tags = {"label": labels[i]} if labels[i] else {}
        for j, person in enumerate(people):
            pose = PoseKeypoints.from_openpose(OpenPosePerson(person.xy * scale, person.present))
            name = source or f"pose_{pose.content_hash()[:12]}"
            if images is None and source and len(people) > 1:
                name = f"{source}#{j}"
            entries.append(IndexEntry(pose, name, image_size_hw=hw, tags=tags))
    return entries


def _detector_names(segmenter, pose_model) -> dict:
    """The weight files of the detectors, recorded in a new index's metadata."""
    return {k: Path(d.source).name for k, d in (("segmenter", segmenter), ("pose", pose_model)) if d is not None}


# --------------------------------------------------------------------------- querying


def query_pose(image, pose_model, segmenter, pose_keypoint):
    """The query: the pose of the first image (estimated), or the first person of the first frame."""
    if image is not None and pose_keypoint is not None:
        raise IllustposeNodeError("connect image (with pose_model) or pose_keypoint as the query, not both")
    if image is not None:
        if pose_model is None:
            raise IllustposeNodeError("a query image needs pose_model (Load Pose Estimator) to estimate its pose")
        pipeline = Pipeline(segmenter, None, pose_model)
        with on_device(segmenter, pose_model):
            return pipeline.annotate(to_pil_images(image[:1]))[0].pose
    if pose_keypoint is None:
        raise IllustposeNodeError("nothing to query with: connect image (with pose_model) or pose_keypoint")
    frames = parse_pose_keypoint(pose_keypoint)
    if not frames or not frames[0].people:
        raise IllustposeNodeError("pose_keypoint's first frame holds no person to query with")
    return PoseKeypoints.from_openpose(frames[0].people[0])


def fit(width: float, height: float, size: int) -> tuple[int, int, int, int]:
    """``(w, h, x, y)``: a ``width`` x ``height`` picture scaled to fit a ``size`` square, centred."""
    s = size / max(width, height)
    w, h = max(1, round(width * s)), max(1, round(height * s))
    return w, h, (size - w) // 2, (size - h) // 2


def reference_image(source: str, size: int) -> tuple[np.ndarray, str | None]:
    """The source image letterboxed (black bars) into a ``size`` square, transparency on white;
    a grey square and the reason when it cannot be read."""
    try:
        im = load_image(source)
    except ImageError as e:
        return np.full((size, size, 3), PLACEHOLDER_GREY, dtype=np.uint8), str(e)
    if im.mode == "RGBA":
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im)
    w, h, x, y = fit(im.width, im.height, size)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    out[y:y + h, x:x + w] = np.asarray(im.convert("RGB").resize((w, h), Image.Resampling.LANCZOS))
    return out, None


def render_entry(entry: StoredEntry, size: int) -> np.ndarray:
    """The entry's stored body (17 COCO joints as OpenPose-18) drawn on a ``size`` square where
    :func:`reference_image` puts its image; without a stored image size the frame is the bbox
    with a 10% margin."""
    p = entry.pose
    if entry.image_size_hw:
        (ih, iw), x0, y0 = entry.image_size_hw, 0.0, 0.0
    else:
        bx, by, bw, bh = p.bbox_xywh
        m = 0.1 * max(bw, bh)
        x0, y0, iw, ih = bx - m, by - m, bw + 2 * m, bh + 2 * m
    w, h, x, y = fit(iw, ih, size)
    xy = (p.keypoints[:17] - [x0, y0]) * [w / iw, h / ih] + [x, y]
    return draw_openpose([coco17_to_openpose18(xy, p.present[:17])], (size, size))


# --------------------------------------------------------------------------- nodes


def _index_input() -> io.String.Input:
    return io.String.Input("index", default=DEFAULT_INDEX, tooltip=(
        "The index file: a name in ComfyUI/models/illustpose/indexes (subfolders allowed), or an absolute path."))


class PoseIndexAdd(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseIndexAdd|illustpose",
            display_name="Pose Index Add (illustpose)",
            category="illustpose/index",
            description="Adds poses to a pose reference index (created when missing): estimated from images, or "
                        "taken from POSE_KEYPOINT. Images are saved as PNG in '<index name>_images' beside the "
                        "index, so queries can show them. Already indexed content is skipped.",
            is_output_node=True,
            inputs=[
                _index_input(),
                io.Boolean.Input("allow_duplicates", default=False, tooltip=(
                    "Add images or poses whose content is already in the index (off: skip them).")),
                io.String.Input("sources", optional=True, default="", multiline=True, tooltip=(
                    "One label per image (or per POSE_KEYPOINT frame without images), one per line, e.g. Load "
                    "Image Folder's filenames. Names the saved image, or is the source of a pose without image. "
                    "Empty: generated names.")),
                io.Image.Input("image", optional=True, tooltip=(
                    "Reference illustrations, one character each; their poses come from pose_model or "
                    "from pose_keypoint (one frame per image).")),
                POSE_MODEL.Input("pose_model", optional=True,
                                 tooltip="From Load Pose Estimator: estimates the poses of the images."),
                SEGMENTER.Input("segmenter", optional=True, tooltip=(
                    "Finds each character's box for pose_model (as the CLI's index build); without it the "
                    "whole image is the box.")),
                POSE_KEYPOINT.Input("pose_keypoint", optional=True, tooltip=(
                    "Poses to add instead of estimating them: every person of every frame (17 COCO joints, "
                    "the box is the joints' extent).")),
            ],
            outputs=[
                io.Int.Output(display_name="added", tooltip="How many poses were added."),
                io.String.Output(display_name="summary",
                                 tooltip="Added, skipped and total entries, and the index path; also shown."),
            ],
        )

    @classmethod
    @reports_errors
    def execute(cls, index, allow_duplicates, sources="", image=None, pose_model=None, segmenter=None,
                pose_keypoint=None):
        if pose_model is not None and pose_keypoint is not None:
            raise IllustposeNodeError("connect pose_model (to estimate the images' poses) or pose_keypoint, not both")
        if pose_keypoint is None and (image is None or pose_model is None):
            raise IllustposeNodeError("nothing to add: connect image with pose_model, or pose_keypoint "
                                      "(with or without the images it belongs to)")
        images = None if image is None else to_pil_images(image)
        store = open_index(index_path(index, must_exist=False), create=True,
                           model=_detector_names(segmenter, pose_model) if pose_keypoint is None else {})
        if pose_keypoint is None:
            entries, already = estimated_entries(store, images, _labels(sources, len(images), "image"),
                                                 Pipeline(segmenter, None, pose_model), allow_duplicates)
        else:
            frames = parse_pose_keypoint(pose_keypoint)
            labels = _labels(sources, len(frames if images is None else images), "frame" if images is None else "image")
            entries, already = keypoint_entries(store, frames, images, labels), 0
        result = store.add(entries, allow_duplicates=allow_duplicates)
        added = len(result.added_ids)
        summary = (f"{store.path}: added {added} poses, skipped {already + len(result.skipped)} already indexed; "
                   f"{len(store)} entries")
        return io.NodeOutput(added, summary, ui={"text": [summary]})


class PoseIndexQuery(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseIndexQuery|illustpose",
            display_name="Pose Index Query (illustpose)",
            category="illustpose/index",
            description="Finds the indexed illustrations whose pose is nearest to a query image's or a "
                        "POSE_KEYPOINT's pose (the paper's pose retrieval): their images, OpenPose renders of "
                        "their poses, distances and sources.",
            is_output_node=True,
            inputs=[
                _index_input(),
                io.Int.Input("k", default=10, min=1, max=MAX_K, tooltip=(
                    "Number of results; an index with fewer comparable entries gives them all.")),
                io.Boolean.Input("mirror", default=True, tooltip=(
                    "Also match the left/right mirror of the query pose (best of both per entry).")),
                io.Int.Input("min_joints", default=DEFAULT_MIN_JOINTS, min=1, max=25, tooltip=(
                    "Least number of joints the query must have and share with a result; missing joints are "
                    "left out of the distance.")),
                io.Int.Input("size", default=512, min=64, max=MAX_RESOLUTION, step=64, tooltip=(
                    "Side of the square output images: each result is scaled to fit and padded with black.")),
                io.Image.Input("image", optional=True,
                               tooltip="Query illustration (the first of a batch); needs pose_model."),
                POSE_MODEL.Input("pose_model", optional=True,
                                 tooltip="From Load Pose Estimator: estimates the query image's pose."),
                SEGMENTER.Input("segmenter", optional=True, tooltip=(
                    "Finds the query character's box for pose_model; without it the whole image is the box.")),
                POSE_KEYPOINT.Input("pose_keypoint", optional=True, tooltip=(
                    "Query pose instead of an image: the first person of the first frame (e.g. from an OpenPose "
                    "editor or Load Pose Keypoints).")),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip=(
                    "The results' images, nearest first, letterboxed to size; grey where a file cannot be read.")),
                io.Image.Output(display_name="openpose_images", tooltip=(
                    "The results' stored poses drawn as OpenPose where they lie in the images.")),
                io.String.Output(display_name="results_json", tooltip=(
                    "JSON list of {rank, distance, source, mirrored}; distance in pixels of the 256 px pose crop.")),
                io.String.Output(display_name="sources", tooltip="The results' sources, one per line."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, index=None, **_):
        return index_fingerprint(index)

    @classmethod
    @reports_errors
    def execute(cls, index, k, mirror, min_joints, size, image=None, pose_model=None, segmenter=None,
                pose_keypoint=None):
        path = index_path(index, must_exist=True)
        pose = query_pose(image, pose_model, segmenter, pose_keypoint)
        store = open_index(path)
        hits = store.query(pose, k, mirror=mirror, min_joints=min_joints)
        if not hits:
            raise IllustposeNodeError(f"no entry of {path} shares {min_joints} joints with the query; "
                                      "lower min_joints")
        entries = [store.get(h.id) for h in hits]
        pictures = map_with_progress(lambda e: reference_image(e.source, size), entries)
        renders = [render_entry(e, size) for e in entries]
        results = [{"rank": h.rank, "distance": h.distance, "source": h.source, "mirrored": h.mirrored}
                   for h in hits]
        lines = [f"{h.rank:>3}  {h.distance:8.2f}  {h.source}" + ("  [mirrored]" if h.mirrored else "")
                 for h in hits]
        missing = [f"placeholder for rank {h.rank}: {why}" for h, (_, why) in zip(hits, pictures) if why]
        if missing:
            log.warning("Pose Index Query: %d of %d result images cannot be read (grey placeholders):\n%s",
                        len(missing), len(hits), "\n".join(missing))
        lines += missing
        return io.NodeOutput(image_tensor([p for p, _ in pictures]), image_tensor(renders),
                             json.dumps(results, indent=1), "\n".join(h.source for h in hits),
                             ui={"text": ["\n".join(lines)]})


class PoseIndexInfo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="PoseIndexInfo|illustpose",
            display_name="Pose Index Info (illustpose)",
            category="illustpose/index",
            description="Shows a pose reference index's metadata: descriptor, weights it was built with, number "
                        "of entries, file size.",
            is_output_node=True,
            inputs=[_index_input()],
            outputs=[io.String.Output(display_name="info", tooltip="The index's info as JSON; also shown.")],
        )

    @classmethod
    def fingerprint_inputs(cls, index=None, **_):
        return index_fingerprint(index)

    @classmethod
    @reports_errors
    def execute(cls, index):
        text = json.dumps(open_index(index_path(index, must_exist=True)).info(), indent=2)
        return io.NodeOutput(text, ui={"text": [text]})


NODES = [PoseIndexAdd, PoseIndexQuery, PoseIndexInfo]
