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
from .runner import add_runner_arguments

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


def _weight_files(args) -> dict:
    """``{"segmenter": path, "pose": path}``: the files the weight flags select (found or
    downloaded, not loaded)."""
    return {task.flag: str(file) for task, _, file in _pipeline.weight_files(args, _TASKS)}


def _pipeline_files(pipe) -> dict:
    """``{"segmenter": path, "pose": path}`` of a pipeline's detectors (None for one it lacks)."""
    return {role: getattr(getattr(pipe, role), "source", None) for role in ("segmenter", "pose")}


def _files(model: dict, roles: list[str]) -> str:
    """``pose NAME (sha256 0123456789ab)`` for each role of a :func:`weights_record` value."""
    return ", ".join(f"{role} {model[role]['file']} (sha256 {model[role]['sha256'][:12]})" for role in roles)


def _check_weights(index, files: dict) -> None:
    """Record the weight files of a new index's first poses; note when an index gets poses from
    other files than it was built with."""
    from ..retrieval.ingest import weights_differ, weights_record

    used = weights_record(**files)
    if len(index) == 0:
        index.record_model(used)
    elif differ := weights_differ(index.model, used):
        say(f"note: {index.path} was built with {_files(index.model, differ)}; now adding with {_files(used, differ)}")


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


def _input_files(inputs: list[str], recursive: bool) -> list[Path]:
    """The files given and the image files of the folders given, in order."""
    from ..images import iter_image_files

    return [f for item in inputs for f in
            ([Path(item)] if Path(item).is_file() else iter_image_files([item], recursive=recursive))]


def _add(index, args, inputs: list[str]) -> int:
    """Add every image file and pose JSON of ``inputs``; 1 if an image could not be read."""
    from tqdm import tqdm

    from ..retrieval.ingest import Ingest

    @functools.cache
    def pipeline():
        pipe = _pipeline.build_pipeline(args, _TASKS)
        _check_weights(index, _pipeline_files(pipe))
        return pipe

    files = _input_files(inputs, args.recursive)
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


class IndexTask:
    """``index build --ray``'s work on one ``(image path, content sha256)`` job, on a Ray actor
    (:class:`illustpose.batch.Task`): the segmenter and the pose model make the image's entries
    (``collect``); the driver writes them, as the index has one writer."""

    def __init__(self, args: argparse.Namespace):
        self.pipe = _pipeline.build_pipeline(args, _TASKS)
        self.tags, self.min_score = _tags(args.tag), args.min_score

    def key(self, job) -> str:
        return job[0]

    def source(self, job) -> str:
        return job[0]

    def load(self, job):
        from ..images import load_image

        return self.pipe.prepare(load_image(job[0]))

    def infer(self, prepared: list) -> list:
        return [a.poses for a in self.pipe.annotate(prepared)]

    def collect(self, job, prepared, poses) -> list:
        from ..retrieval.ingest import pose_entries

        return pose_entries(poses, job[0], job[1], self.tags, self.min_score)


def _build_on_ray(index, args) -> int:
    """``index build --ray``: the driver hashes the images and leaves out content the index holds
    (so a rerun resumes, as a local build), Ray actors compute the entries, and the driver adds
    them in file order, ``--commit-every`` entries per transaction."""
    from ..batch import Counts
    from ..fileio import sha256_file
    from .runner import run_jobs

    files = _input_files(args.folders, args.recursive)
    if not files:
        print(f"index: no images found in {', '.join(args.folders)}", file=sys.stderr)
        return 2
    counts, jobs, seen = Counts(), [], set()
    for f in files:
        sha = sha256_file(f)
        if not args.allow_duplicates and (sha in seen or index.has_content(sha)):
            counts.skipped += 1
            continue
        seen.add(sha)
        jobs.append((str(Path(f).resolve()), sha))
    if jobs:
        _check_weights(index, _weight_files(args))
    pending, added = [], []

    def flush():
        if pending:
            added.extend(index.add(pending, allow_duplicates=args.allow_duplicates,
                                   batch_size=args.commit_every).added_ids)
            pending.clear()

    def sink(job, entries) -> list:
        if not entries:
            say(f"no character found in {job[0]} (its character mask is empty); nothing added")
        pending.extend(entries)
        if len(pending) >= args.commit_every:
            flush()
        return []

    try:
        status = run_jobs(args, functools.partial(IndexTask, args), jobs, counts, total=len(files), verb="indexed",
                          sink=sink)
    finally:  # Ctrl-C included: what was computed is committed
        flush()
    if not args.quiet:
        print(f"{index.path}: added {len(added)} entries; {len(index)} entries", file=sys.stderr)
    return status


def _build(args) -> int:
    with _open(args.index, create=True, kind=args.kind) as index:
        if args.ray is not None:
            return _build_on_ray(index, args)
        return _add(index, args, args.folders)


def _add_cmd(args) -> int:
    with _open(args.index) as index:
        return _add(index, args, args.inputs)


def _query_pipeline(args, index):
    """The models of a query by image: by default the weight files the index was built with
    (when they are still where they were), and a warning when the query's files differ from them."""
    from ..retrieval.ingest import weights_differ, weights_record

    gone = []
    for role in ("segmenter", "pose"):
        rec = index.model.get(role)
        if isinstance(rec, dict) and getattr(args, role) is None:
            if Path(str(rec.get("path"))).is_file():
                setattr(args, role, rec["path"])
            else:
                gone.append(f"{rec.get('path')} is gone")
    pipe = _pipeline.build_pipeline(args, _TASKS)
    used = weights_record(**_pipeline_files(pipe))
    if differ := weights_differ(index.model, used):
        say(f"warning: {index.path} was built with {_files(index.model, differ)}"
            + (f" ({'; '.join(gone)})" if gone else "") + f", but this query uses {_files(used, differ)}: its pose "
            f"is compared with poses of other weights; pass the index's files with --{' and --'.join(differ)}")
    return pipe


def _query_pose(args, index):
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
    return PoseKeypoints.from_pose_result(_query_pipeline(args, index).estimate(load_image(path)))


def _query(args) -> int:
    from ..retrieval.danbooru import hit_record

    with _open(args.index, backend=args.backend) as index:
        k = args.k or int(index.model.get("n_neighbors") or 10)  # the reference's fit-time k for its set
        hits = index.query(_query_pose(args, index), k, mirror=args.mirror, partial=not args.strict,
                           min_joints=args.min_joints, min_score=args.min_score)
        records = [hit_record(h, index.get(h.id).tags) for h in hits] if args.json else []
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    print(f"{'rank':>4}  {'distance':>9}  source")
    for h in hits:
        print(f"{h.rank:>4}  {h.distance:>9.2f}  {h.source}" + ("  [mirrored]" if h.mirrored else ""))
    return 0


def _import_danbooru(args) -> int:
    from ..retrieval.danbooru import open_support
    from ..weights import release_zip

    source = args.source or release_zip(download=args.download)
    if source is None:
        raise PoseIndexError("no support set given and no bizarre_pose_models.zip downloaded: pass --from "
                             "bizarre_pose_models.zip | its extracted folder | raw_retrieval_support.zip, or add "
                             "--download to fetch the authors' zip (about 2.3 GB, size and sha256 checked)")
    support = open_support(source, args.kind)
    with _open(args.index, create=True, kind=support.descriptor_kind, model=support.model) as index:
        if index.model != support.model:
            say(f"note: {index.path} was built from {index.model}, now adding {support.model}")
        result = index.add(support.entries, batch_size=4096)
        total = len(index)
    print(f"{args.index}: imported {len(result.added_ids)} Danbooru posts ({support.kind}, {support.descriptor_kind}), "
          f"skipped {len(result.skipped)} already there; {total} entries", file=sys.stderr)
    return 0


def _info(args) -> int:
    from ..finetune import describe, finetune_metadata

    with _open(args.index) as index:
        info = index.info()
    pose = (info.get("model") or {}).get("pose")
    pose = pose.get("path") if isinstance(pose, dict) else pose  # older indexes record the --pose flag only
    finetuned = finetune_metadata(pose) if isinstance(pose, str) else None
    if args.json:
        print(json.dumps({**info, "pose_finetune": finetuned} if finetuned else info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {json.dumps(value) if isinstance(value, dict) else value}")
        if finetuned:
            print(f"pose_finetune: {describe(finetuned)}")
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
    add_runner_arguments(b, local=False)
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
    q.add_argument("-k", type=positive_int, default=None,
                   help="number of results (default 10; for an imported Danbooru set, the reference's n_neighbors)")
    q.add_argument("--mirror", action="store_true", help="also match the left/right mirrored pose")
    q.add_argument("--json", action="store_true",
                   help="print a JSON list of {rank, distance, source, mirrored} (+ danbooru_id, link)")
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

    d = sub.add_parser("import-danbooru", help="index the authors' Danbooru support set (links, no images)",
                       description="Build an index of the paper's retrieval support set: from neighbors.pkl + "
                                   "full_body.pkl + intently.csv (bizarre_pose_models.zip or its folder; link-only "
                                   "entries answering as the reference's pose_retrieval.py) or from "
                                   "raw_retrieval_support.zip (poses; any --kind). Pickles are read with an "
                                   "allow-list: nothing in them runs.")
    d.add_argument("index", metavar="DEST.sqlite", help="the index file (created, or added to)")
    d.add_argument("--from", dest="source", default=None, metavar="ZIP_OR_DIR",
                   help="bizarre_pose_models.zip, its extracted folder, or raw_retrieval_support.zip "
                        "(default: the downloaded bizarre_pose_models.zip in the cache)")
    d.add_argument("--download", action="store_true",
                   help="download bizarre_pose_models.zip first when it is not in the cache (size/sha256 checked)")
    d.add_argument("--kind", choices=sorted(DESCRIPTOR_KINDS), default=None,
                   help="descriptor of raw support poses (default all25); neighbors.pkl fixes its own")
    d.set_defaults(func=_import_danbooru)

    i = sub.add_parser("info", help="an index's descriptor, weights and size")
    i.add_argument("index", metavar="INDEX.sqlite", help="the index file")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_info)

    e = sub.add_parser("export", help="write every entry as COCO keypoint JSON")
    e.add_argument("index", metavar="INDEX.sqlite", help="the index file")
    e.add_argument("out", metavar="OUT.json", help="the COCO keypoint file to write")
    e.set_defaults(func=_export)
