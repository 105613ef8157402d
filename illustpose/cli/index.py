"""``index build | add | query | info | export``: the pose reference index (:mod:`illustpose.retrieval`).

Each command opens one :class:`~illustpose.retrieval.PoseIndex` and calls the library
(:class:`~illustpose.retrieval.ingest.Ingest` for adding); the segmenter + pose pipeline is
built only when an image must be run.  Pose JSON files are read by
:func:`~illustpose.retrieval.ingest.load_pose_json` (COCO keypoints or POSE_KEYPOINT).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from ..errors import PoseIndexError
from . import pipeline as _pipeline
from .pipeline import add_model_arguments, add_recursive_argument, positive_int, say

__all__ = ["register"]

_TASKS = ("segment", "pose")


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


def _open(path: str, **kwargs):
    """:class:`~illustpose.retrieval.PoseIndex` ``(path, **kwargs)``; SQLite refusing the file
    (a folder that does not exist or is not writable) is a :class:`PoseIndexError` naming it."""
    import sqlite3

    from ..retrieval import PoseIndex

    try:
        return PoseIndex(path, **kwargs)
    except sqlite3.Error as e:
        raise PoseIndexError(f"{path}: SQLite cannot open it ({e}); check that its folder exists and is "
                             "writable") from None


def _add(index, args, inputs: list[str]) -> int:
    """Add every image file and pose JSON of ``inputs``; 1 if an image could not be read."""
    from tqdm import tqdm

    from ..images import iter_image_files
    from ..retrieval.ingest import Ingest

    @functools.cache
    def pipeline():
        if index.model != _model_info(args):
            say(f"note: {index.path} was built with weights {index.model}, now adding with {_model_info(args)}")
        return _pipeline.build_pipeline(args, _TASKS)

    files = [f for item in inputs for f in
             ([Path(item)] if Path(item).is_file() else iter_image_files([item], recursive=args.recursive))]
    if not files:
        print(f"index: no images or pose files found in {', '.join(inputs)}", file=sys.stderr)
        return 2
    ingest = Ingest(index, lambda image: pipeline().poses(image), allow_duplicates=args.allow_duplicates,
                    tags=_tags(args.tag), min_score=args.min_score)

    done, interrupted = [], []  # Ctrl-C ends the entries early, and add() commits what it has

    def entries(bar):
        try:
            for f in files:
                failures, empty = len(ingest.failed), len(ingest.empty)
                yield from ingest.file_entries(f)
                for _, message in ingest.failed[failures:]:
                    say(f"skipped: {message}")
                for source in ingest.empty[empty:]:
                    say(f"no character found in {source} (its character mask is empty); nothing added")
                bar.update(1)
                done.append(f)
        except KeyboardInterrupt:
            interrupted.append(True)

    with tqdm(total=len(files), unit="file", disable=args.quiet or len(files) < 2, file=sys.stderr) as bar:
        result = index.add(entries(bar), allow_duplicates=args.allow_duplicates, batch_size=args.commit_every,
                           on_commit=lambda n: bar.set_postfix(saved=n))
    if interrupted:
        print(f"interrupted after {len(done)} of {len(files)} files; {index.path} keeps what was added "
              f"({len(result.added_ids)} new, {len(index)} entries)", file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"{index.path}: added {len(result.added_ids)}, skipped {ingest.already} already indexed and "
              f"{len(result.skipped)} duplicates, {len(ingest.failed)} failed; {len(index)} entries", file=sys.stderr)
    return 1 if ingest.failed else 0


def _build(args) -> int:
    with _open(args.index, create=True, kind=args.kind, model=_model_info(args)) as index:
        return _add(index, args, args.folders)


def _add_cmd(args) -> int:
    with _open(args.index) as index:
        return _add(index, args, args.inputs)


def _query_pose(args):
    from ..images import load_image
    from ..retrieval import PoseKeypoints
    from ..retrieval.ingest import load_pose_json

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
    return PoseKeypoints.from_pose_result(_pipeline.build_pipeline(args, _TASKS).estimate(load_image(path)))


def _query(args) -> int:
    with _open(args.index, backend=args.backend) as index:
        hits = index.query(_query_pose(args), args.k, mirror=args.mirror, partial=not args.strict,
                           min_joints=args.min_joints, min_score=args.min_score)
    if args.json:
        print(json.dumps([{"rank": h.rank, "distance": h.distance, "source": h.source} for h in hits], indent=2))
        return 0
    print(f"{'rank':>4}  {'distance':>9}  source")
    for h in hits:
        print(f"{h.rank:>4}  {h.distance:>9.2f}  {h.source}" + ("  [mirrored]" if h.mirrored else ""))
    return 0


def _info(args) -> int:
    with _open(args.index) as index:
        info = index.info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
    return 0


def _export(args) -> int:
    with _open(args.index) as index:
        out = index.export_coco(args.out)
        count = len(index)
    print(f"wrote {count} entries to {out}")
    return 0


def _adding_arguments(p: argparse.ArgumentParser) -> None:
    add_recursive_argument(p)
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                   help="tag stored with every new entry (repeatable)")
    p.add_argument("--allow-duplicates", action="store_true",
                   help="add files whose content is already indexed (default: skip them)")
    p.add_argument("--commit-every", type=positive_int, default=16, metavar="N",
                   help="entries per committed transaction (default 16; a crash loses at most the last N)")
    p.add_argument("--min-score", type=float, default=None, metavar="S",
                   help="joints scoring below this are stored as absent (default: keep all, as the reference)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_model_arguments(p, _TASKS)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``index`` command and its sub-commands (each returns 0 ok, 1 some inputs failed,
    2 no input)."""
    from ..retrieval import BACKENDS, DEFAULT_MIN_JOINTS, DESCRIPTOR_KINDS

    index = subparsers.add_parser(
        "index", help="pose reference index: build, add, query, info, export",
        description="Pose reference index (one SQLite file): build it from image folders, add images or "
                    "pose JSON files, query it by image or pose, show its info, export it as COCO JSON.")
    sub = index.add_subparsers(dest="index_command", required=True)

    b = sub.add_parser("build", help="create or resume an index from image folders (runs the models)")
    b.add_argument("index", metavar="INDEX.sqlite", help="the index file (created, or resumed when it exists)")
    b.add_argument("folders", nargs="+", metavar="FOLDER", help="folders of images to run the models on")
    b.add_argument("--kind", choices=sorted(DESCRIPTOR_KINDS), default=None,
                   help="descriptor of a new index: all25 (the reference, 300-D; default) or coco17 (136-D)")
    _adding_arguments(b)
    b.set_defaults(func=_build)

    a = sub.add_parser("add", help="add images, folders or pose JSON files to an existing index",
                       description="Add images (run through the models), image folders, or COCO / "
                                   "POSE_KEYPOINT .json files (no model; name them explicitly, folders "
                                   "are searched for images only) to an existing index.")
    a.add_argument("index", metavar="INDEX.sqlite", help="an existing index file")
    a.add_argument("inputs", nargs="+", metavar="IMAGE_FOLDER_OR_POSE_JSON",
                   help="image files, folders of images, COCO or POSE_KEYPOINT .json files")
    _adding_arguments(a)
    a.set_defaults(func=_add_cmd)

    q = sub.add_parser("query", help="the indexed poses nearest to an image's or a pose file's pose")
    q.add_argument("index", metavar="INDEX.sqlite", help="the index file")
    q.add_argument("pose_input", metavar="IMAGE_OR_POSE_JSON",
                   help="an image (run through the models) or a COCO / POSE_KEYPOINT .json file")
    q.add_argument("-k", type=positive_int, default=10, help="number of results (default 10)")
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
    add_model_arguments(q, _TASKS)
    q.set_defaults(func=_query)

    i = sub.add_parser("info", help="an index's descriptor, weights and size")
    i.add_argument("index", metavar="INDEX.sqlite", help="the index file")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_info)

    e = sub.add_parser("export", help="write every entry as COCO keypoint JSON")
    e.add_argument("index", metavar="INDEX.sqlite", help="the index file")
    e.add_argument("out", metavar="OUT.json", help="the COCO keypoint file to write")
    e.set_defaults(func=_export)
