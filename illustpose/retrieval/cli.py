"""``python -m illustpose index build | add | query | info | export``: the pose index commands.

Each command opens one :class:`~illustpose.retrieval.store.PoseIndex` and calls one library
method; library errors (:class:`~illustpose.errors.IllustposeError`) propagate to the main
CLI, which prints them on one line.  Commands that run models get their weight flags from
``add_model_arguments`` and their segmenter+pose pipeline from ``build_pipeline``, both
passed in by :mod:`illustpose.cli`; the pipeline is built only when an image needs it.

Pose JSON files (``index add``, ``index query``) may hold:

* a COCO annotation (``{"keypoints": [x, y, v] * 17, "bbox": [x, y, w, h], ...}``), a list
  of them (COCO results), or a COCO file (``{"images": [...], "annotations": [...]}``; an
  annotation's source is its image's ``file_name`` next to the JSON file);
* a ComfyUI POSE_KEYPOINT value (a list of frames ``{"people": [...], "canvas_height",
  "canvas_width"}`` or one frame), OpenPose-18 bodies whose neck is dropped and whose bbox
  is the joints' extent (tighter than the segmenter's: such poses match each other better
  than they match image poses).

Both carry the 17 COCO joints only: against a ``coco17`` index they are complete poses;
against an ``all25`` index they are partial (17 of 25 joints, distances renormalised) and
``--strict`` refuses them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from ..errors import ImageError, PoseIndexError
from ..images import iter_image_files, load_image
from ..keypoints import parse_pose_keypoint
from .descriptor import DESCRIPTOR_KINDS, PoseKeypoints
from .search import BACKENDS, DEFAULT_MIN_JOINTS
from .store import IndexEntry, PoseIndex

__all__ = ["register", "load_pose_json"]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _coco_poses(anns, images: dict, base: Path, path: Path) -> Iterator[tuple[str, PoseKeypoints, tuple | None]]:
    for n, ann in enumerate(anns):
        im = images.get(ann.get("image_id")) if isinstance(ann, dict) else None
        source = str(base / im["file_name"]) if im and im.get("file_name") else f"{path}#{n}"
        hw = (int(im["height"]), int(im["width"])) if im and "height" in im and "width" in im else None
        yield source, PoseKeypoints.from_coco_annotation(ann), hw


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


def _tags(pairs: list[str]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PoseIndexError(f"--tag expects KEY=VALUE, got {pair!r}")
        tags[key] = value
    return tags


def _model_info(args) -> dict:
    """The weight flags in use (None = the default weights of the registry)."""
    return {"segmenter": args.segmenter, "pose": args.pose}


def _progress(total: int, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="file", disable=quiet or total < 2, file=sys.stderr)


class _Adder:
    """Turns input files into index entries, running the pipeline only for new images."""

    def __init__(self, index: PoseIndex, args, build_pipeline: Callable):
        self.index, self.args, self.build_pipeline = index, args, build_pipeline
        self.pipeline = None
        self.already, self.failed = 0, 0
        self.tags = _tags(args.tag)

    def _warn(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    def image_entry(self, path: Path) -> IndexEntry | None:
        sha = _sha256_file(path)
        if not self.args.allow_duplicates and self.index.has_content(sha):
            self.already += 1
            return None
        try:
            image = load_image(path)
        except ImageError as e:
            self.failed += 1
            self._warn(f"skipped: {e}")
            return None
        if self.pipeline is None:
            self.pipeline = self.build_pipeline(self.args)
            if self.index.model != _model_info(self.args):
                self._warn(f"note: {self.index.path} was built with weights {self.index.model}, "
                           f"now adding with {_model_info(self.args)}")
        result = self.pipeline.estimate(image)
        return IndexEntry.from_pose_result(result, str(path.resolve()), sha256=sha, tags=self.tags,
                                           min_score=self.args.min_score)

    def entries(self, files: list[Path], bar) -> Iterator[IndexEntry]:
        for f in files:
            if f.suffix.lower() == ".json":
                for source, pose, hw in load_pose_json(f):
                    yield IndexEntry(pose, source, None, hw, self.tags)
            elif (entry := self.image_entry(f)) is not None:
                yield entry
            bar.update(1)

    def run(self, inputs: list[str], recursive: bool) -> int:
        files = [f for item in inputs for f in
                 ([Path(item)] if Path(item).is_file() else iter_image_files([item], recursive=recursive))]
        if not files:
            print(f"index: no images or pose files found in {', '.join(inputs)}", file=sys.stderr)
            return 2
        with _progress(len(files), self.args.quiet) as bar:
            result = self.index.add(self.entries(files, bar), allow_duplicates=self.args.allow_duplicates,
                                    batch_size=self.args.batch_size, on_commit=lambda n: bar.set_postfix(saved=n))
        if not self.args.quiet:
            print(f"{self.index.path}: added {len(result.added_ids)}, skipped {self.already} already "
                  f"indexed and {len(result.skipped)} duplicates, {self.failed} failed; "
                  f"{len(self.index)} entries", file=sys.stderr)
        return 1 if self.failed else 0


def _cmd_build(args, build_pipeline: Callable) -> int:
    with PoseIndex(args.index, create=True, kind=args.kind, model=_model_info(args)) as index:
        return _Adder(index, args, build_pipeline).run(args.folders, args.recursive)


def _cmd_add(args, build_pipeline: Callable) -> int:
    with PoseIndex(args.index) as index:
        return _Adder(index, args, build_pipeline).run(args.inputs, args.recursive)


def _query_pose(args, build_pipeline: Callable) -> PoseKeypoints:
    path = Path(args.pose_input)
    if path.suffix.lower() == ".json":
        poses = load_pose_json(path)
        if not poses:
            raise PoseIndexError(f"{path} holds no pose with any joint")
        if not 0 <= args.person < len(poses):
            raise PoseIndexError(f"{path} holds {len(poses)} poses; --person must be in 0..{len(poses) - 1}")
        if len(poses) > 1:
            print(f"query: pose {args.person} of {len(poses)} in {path} ({poses[args.person][0]})", file=sys.stderr)
        return poses[args.person][1]
    result = build_pipeline(args).estimate(load_image(path))
    return PoseKeypoints.from_pose_result(result)


def _cmd_query(args, build_pipeline: Callable) -> int:
    with PoseIndex(args.index, backend=args.backend) as index:
        hits = index.query(_query_pose(args, build_pipeline), args.k, mirror=args.mirror,
                           partial=not args.strict, min_joints=args.min_joints, min_score=args.min_score)
    if args.json:
        print(json.dumps([{"rank": h.rank, "distance": h.distance, "source": h.source} for h in hits], indent=2))
        return 0
    print(f"{'rank':>4}  {'distance':>9}  source")
    for h in hits:
        print(f"{h.rank:>4}  {h.distance:>9.2f}  {h.source}" + ("  [mirrored]" if h.mirrored else ""))
    return 0


def _cmd_info(args) -> int:
    with PoseIndex(args.index) as index:
        info = index.info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    return 0


def _cmd_export(args) -> int:
    with PoseIndex(args.index) as index:
        out = index.export_coco(args.out)
        count = len(index)
    print(f"wrote {count} entries to {out}")
    return 0


def _adding_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="tag stored with every new entry (repeatable)")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="add files whose content is already indexed (default: skip them)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="entries per committed transaction (default 16; an interruption loses at most one)")
    p.add_argument("--min-score", type=float, default=None,
                   help="joints scoring below this are stored as absent (default: keep all, as the reference)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def register(subparsers, add_model_arguments: Callable, build_pipeline: Callable) -> None:
    """Add the ``index`` command and its sub-commands to the main CLI.

    Args:
        subparsers: the main parser's ``add_subparsers()`` object.
        add_model_arguments: ``f(parser)`` adding the weight-selection flags (``--segmenter``,
            ``--pose``, ``--offline``, ``--device``, ...).
        build_pipeline: ``f(args)`` returning an object with ``.estimate(PIL.Image) ->
            PoseResult`` (segmenter + pose); called once, only when an image must be run.

    Each sub-command sets ``func(args) -> exit status`` (0 ok, 1 some inputs failed, 2 no input).
    """
    index = subparsers.add_parser(
        "index", help="pose reference index: build, add, query, info, export",
        description="Pose reference index (one SQLite file): build it from image folders, add images or "
                    "pose JSON files, query it by image or pose, show its info, export it as COCO JSON.")
    sub = index.add_subparsers(dest="index_command", required=True)

    b = sub.add_parser("build", help="create or resume an index from image folders (runs the models)")
    b.add_argument("index", metavar="INDEX.sqlite")
    b.add_argument("folders", nargs="+", metavar="FOLDER")
    b.add_argument("--kind", choices=sorted(DESCRIPTOR_KINDS), default=None,
                   help="descriptor of a new index: all25 (the reference, 300-D; default) or coco17 (136-D)")
    _adding_arguments(b)
    add_model_arguments(b, ("segment", "pose"))
    b.set_defaults(func=partial(_cmd_build, build_pipeline=build_pipeline))

    a = sub.add_parser("add", help="add images, folders or pose JSON files to an existing index",
                       description="Add images (run through the models), image folders, or COCO / "
                                   "POSE_KEYPOINT .json files (no model; name them explicitly, folders "
                                   "are searched for images only) to an existing index.")
    a.add_argument("index", metavar="INDEX.sqlite")
    a.add_argument("inputs", nargs="+", metavar="IMAGE_FOLDER_OR_POSE_JSON")
    _adding_arguments(a)
    add_model_arguments(a, ("segment", "pose"))
    a.set_defaults(func=partial(_cmd_add, build_pipeline=build_pipeline))

    q = sub.add_parser("query", help="the indexed poses nearest to an image's or a pose file's pose")
    q.add_argument("index", metavar="INDEX.sqlite")
    q.add_argument("pose_input", metavar="IMAGE_OR_POSE_JSON")
    q.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    q.add_argument("--mirror", action="store_true", help="also match the left/right mirrored pose")
    q.add_argument("--json", action="store_true", help="print a JSON list of {rank, distance, source}")
    q.add_argument("--min-joints", type=int, default=DEFAULT_MIN_JOINTS,
                   help=f"least joints the pose must have and share with a result (default {DEFAULT_MIN_JOINTS})")
    q.add_argument("--min-score", type=float, default=None,
                   help="leave out the query's joints scoring below this (a partial pose)")
    q.add_argument("--strict", action="store_true",
                   help="refuse a partial query instead of renormalising its distance")
    q.add_argument("--person", type=int, default=0, help="which pose of a pose JSON file (default 0)")
    q.add_argument("--backend", choices=BACKENDS, default="numpy", help="search backend (faiss: if installed)")
    add_model_arguments(q, ("segment", "pose"))
    q.set_defaults(func=partial(_cmd_query, build_pipeline=build_pipeline))

    i = sub.add_parser("info", help="an index's descriptor, weights and size")
    i.add_argument("index", metavar="INDEX.sqlite")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_cmd_info)

    e = sub.add_parser("export", help="write every entry as COCO keypoint JSON")
    e.add_argument("index", metavar="INDEX.sqlite")
    e.add_argument("out", metavar="OUT.json")
    e.set_defaults(func=_cmd_export)
