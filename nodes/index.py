"""Pose reference index: add poses to an index file, query it for the nearest reference images,
show its info (the library's :mod:`illustpose.retrieval`).

Index files live in ``ComfyUI/models/illustpose/indexes/`` (``folder_paths`` key
``illustpose_indexes``, so ``extra_model_paths.yaml`` can add folders) or at an absolute path.
An index stores a source path per pose, not pixels, and images coming from a graph have no
file: Pose Index Add saves each as a PNG in ``<index stem>_images/`` beside the index (named
after its label, else ``image_<content hash>``) and records that path
(:class:`illustpose.retrieval.ingest.Ingest`); Pose Index Query loads its results from the
sources (:mod:`illustpose.retrieval.preview`; a missing file gives a grey placeholder).  Open indexes are
cached by path while the file keeps its inode and mtime; a handle reads rows added since (by
any process) at each query, so repeated queries do not rebuild the search matrix.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import folder_paths

from illustpose.keypoints import parse_pose_keypoint
from illustpose.pipeline import Pipeline
from illustpose.retrieval import DEFAULT_MIN_JOINTS, PoseIndex, PoseKeypoints
from illustpose.retrieval.ingest import Ingest, weights_record
from illustpose.retrieval.danbooru import hit_record
from illustpose.retrieval.preview import pose_image, result_picture

from ._api import POSE_KEYPOINT, POSE_MODEL, io
from ._common import (MAX_RESOLUTION, IllustposeNodeError, box_segmenter_input, image_tensor, map_with_progress,
                      on_device, reports_errors, to_pil_images)

FOLDER = "illustpose_indexes"
DEFAULT_INDEX = "pose_references.sqlite"
CACHE_SIZE = 4  # index files kept open (each holds its search matrix)
MAX_K = 100

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


# --------------------------------------------------------------------------- adding and querying


def _labels(sources: str, count: int, what: str) -> list:
    """One label per image or frame (``what``) from the ``sources`` text (non-empty lines), else Nones."""
    lines = [s.strip() for s in sources.splitlines() if s.strip()]
    if lines and len(lines) != count:
        raise IllustposeNodeError(f"sources holds {len(lines)} labels for {count} {what}s; give one line per "
                                  f"{what}, or none for generated names")
    return lines or [None] * count


def query_pose(image, pose_model, segmenter, pose_keypoint):
    """The query: the pose of the first image (estimated), or the first person of the first frame."""
    if image is not None and pose_keypoint is not None:
        raise IllustposeNodeError("connect image (with pose_model) or pose_keypoint as the query, not both")
    if image is not None:
        if pose_model is None:
            raise IllustposeNodeError("a query image needs pose_model (Load Pose Estimator) to estimate its pose")
        with on_device(segmenter, pose_model):
            return Pipeline(segmenter, None, pose_model).estimate(to_pil_images(image[:1])[0])
    if pose_keypoint is None:
        raise IllustposeNodeError("nothing to query with: connect image (with pose_model) or pose_keypoint")
    frames = parse_pose_keypoint(pose_keypoint)
    if not frames or not frames[0].people:
        raise IllustposeNodeError("pose_keypoint's first frame holds no person to query with")
    return PoseKeypoints.from_openpose(frames[0].people[0])


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
                        "index, so queries can show them. Already indexed content is skipped. Takes whole lists "
                        "(e.g. Load Image Folder's) in one run and reports one total.",
            is_output_node=True,
            is_input_list=True,  # one call for a whole list, so the summary is one total for this run
            inputs=[
                _index_input(),
                io.Boolean.Input("allow_duplicates", default=False, tooltip=(
                    "Add images or poses whose content is already in the index (off: skip them).")),
                io.String.Input("sources", optional=True, default="", multiline=True, tooltip=(
                    "One label per image (or per POSE_KEYPOINT frame without images), one per line, e.g. Load "
                    "Image Folder's filenames. Names the saved image, or is the source of a pose without image. "
                    "Empty: generated names.")),
                io.Image.Input("image", optional=True, tooltip=(
                    "Reference illustrations; each character's pose (its own entry, with its box) comes from "
                    "pose_model, or the poses from pose_keypoint (one frame per image).")),
                POSE_MODEL.Input("pose_model", optional=True,
                                 tooltip="From Load Pose Estimator: estimates the poses of the images."),
                box_segmenter_input(),
                POSE_KEYPOINT.Input("pose_keypoint", optional=True, tooltip=(
                    "Poses to add instead of estimating them: every person of every frame (17 COCO joints, "
                    "the box is the joints' extent).")),
            ],
            outputs=[
                io.Int.Output(display_name="added", tooltip="How many poses this run added."),
                io.String.Output(display_name="summary", tooltip=(
                    "What this run did (added, skipped), the entries now in the index, and its path; also shown.")),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, index=None, **_):
        return index_fingerprint(index[0] if isinstance(index, list) and len(index) == 1 else None)

    @classmethod
    @reports_errors
    def execute(cls, **lists):
        """Every input arrives as a list (``is_input_list``): position ``i`` of the longest list
        is one add, shorter lists repeating their last item (ComfyUI's own rule for lists); the
        summary is the total of the run per index file."""
        count = max(len(v) for v in lists.values())
        totals: dict = {}  # index path -> [store, added, skipped, images without a character]
        for i in range(count):
            store, *counts = cls.add_one(**{k: v[min(i, len(v) - 1)] for k, v in lists.items()})
            total = totals.setdefault(str(store.path), [store, 0, 0, 0])
            total[1:] = [a + b for a, b in zip(total[1:], counts)]
        lines = []
        for path, (store, added, skipped, empty) in totals.items():
            lines.append(f"{path}: added {added} poses, skipped {skipped} already indexed; {len(store)} entries"
                         + (f"; no character found in {empty} images (nothing added for them)" if empty else ""))
        summary = "\n".join(lines)
        return io.NodeOutput(sum(t[1] for t in totals.values()), summary, ui={"text": [summary]})

    @classmethod
    def add_one(cls, index, allow_duplicates, sources="", image=None, pose_model=None, segmenter=None,
                pose_keypoint=None) -> tuple:
        """One add: ``(index, poses added, skipped as already indexed, images without a character)``."""
        if pose_model is not None and pose_keypoint is not None:
            raise IllustposeNodeError("connect pose_model (to estimate the images' poses) or pose_keypoint, not both")
        if pose_keypoint is None and (image is None or pose_model is None):
            raise IllustposeNodeError("nothing to add: connect image with pose_model, or pose_keypoint "
                                      "(with or without the images it belongs to)")
        images = None if image is None else to_pil_images(image)
        path = index_path(index, must_exist=False)
        files = {} if pose_keypoint is not None or path.exists() else {  # hashed for a new index only
            "segmenter": segmenter and segmenter.source, "pose": pose_model.source}
        store = open_index(path, create=True, model=weights_record(**files))
        if pose_keypoint is None:
            labels = _labels(sources, len(images), "image")
            ingest = Ingest(store, Pipeline(segmenter, None, pose_model).poses, allow_duplicates=allow_duplicates)
            with on_device(segmenter, pose_model):
                entries = map_with_progress(lambda i: ingest.image_entries(images[i], labels[i]), range(len(images)))
            entries, already, empty = [e for es in entries for e in es], ingest.already, len(ingest.empty)
        else:
            frames = parse_pose_keypoint(pose_keypoint)
            if images is not None and len(images) != len(frames):
                raise IllustposeNodeError(f"pose_keypoint holds {len(frames)} frames for {len(images)} images; "
                                          "connect the poses of these images (one frame per image)")
            labels = _labels(sources, len(frames if images is None else images), "frame" if images is None else "image")
            entries, already, empty = Ingest(store).frame_entries(frames, images, labels), 0, 0
        result = store.add(entries, allow_duplicates=allow_duplicates)
        return store, len(result.added_ids), already + len(result.skipped), empty


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
                box_segmenter_input(),
                POSE_KEYPOINT.Input("pose_keypoint", optional=True, tooltip=(
                    "Query pose instead of an image: the first person of the first frame (e.g. from an OpenPose "
                    "editor or Load Pose Keypoints).")),
            ],
            outputs=[
                io.Image.Output(display_name="images", tooltip=(
                    "The results' images, nearest first, letterboxed to size; grey where a file cannot be read; a "
                    "card with the post id for a Danbooru link (nothing is downloaded).")),
                io.Image.Output(display_name="openpose_images", tooltip=(
                    "The results' stored poses drawn as OpenPose where they lie in the images.")),
                io.String.Output(display_name="results_json", tooltip=(
                    "JSON list of {rank, distance, source, mirrored}, with danbooru_id and link for the authors' "
                    "Danbooru set (index import-danbooru); distance in pixels of the 256 px pose crop.")),
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
        pictures = map_with_progress(lambda e: result_picture(e, size), entries)
        renders = [pose_image(e, size) for e in entries]
        results = [hit_record(h, e.tags) for h, e in zip(hits, entries)]
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
