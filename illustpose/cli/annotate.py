"""``annotate``: mask, cutout, tags and pose files for images and folders (:mod:`illustpose.outputs`),
one pose per character (:mod:`illustpose.characters`: ``--characters``, ``--min-area``, ``--boxes``)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from pathlib import Path
from typing import Iterator, Sequence

from ..characters import MIN_AREA, read_boxes_file
from ..errors import UsageError
from . import pipeline as _pipeline
from .pipeline import TASK_NAMES, add_model_arguments, add_recursive_argument, say
from .runner import add_runner_arguments, run_jobs

__all__ = ["register"]


def _output_stems(inputs: Sequence[str], recursive: bool, out: Path) -> Iterator[tuple[Path, Path, str]]:
    """(image file, output stem, name) triples: folders are mirrored under ``out``, files land at
    its root; the name is the path under its folder (the file name for a file), ``/``-separated,
    as ``--boxes`` files name images."""
    from ..images import iter_image_files

    for item in inputs:
        base = Path(item)
        for f in iter_image_files([item], recursive=recursive):
            rel = f.relative_to(base) if base.is_dir() else Path(f.name)
            yield f, out / rel.with_suffix(""), rel.as_posix()


def _characters(text: str):
    """argparse ``type`` of ``--characters``: ``auto`` or a whole number >= 1."""
    from ..characters import characters_setting

    try:
        return characters_setting(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _fraction(text: str) -> float:
    """argparse ``type`` of ``--min-area``: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1], got {text!r}")
    return value


class AnnotateTask:
    """The ``annotate`` work on one ``(image file, output stem, name)`` job (:class:`illustpose.batch.Task`)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.pipe = _pipeline.build_pipeline(args, _tasks(args))
        self.pipe.characters, self.pipe.min_area = args.characters, args.min_area
        self.given = read_boxes_file(args.boxes) if args.boxes else None

    def key(self, job) -> str:
        return job[2]

    def source(self, job) -> str:
        return str(job[0])

    def load(self, job):
        from ..images import load_image

        # the segmenter's and tagger's resizes run here, in the loader thread; the pose crops need the mask
        return self.pipe.prepare(load_image(job[0])), None if self.given is None else self.given.get(job[2])

    def infer(self, loaded: list) -> list:
        images = [prepared for prepared, _ in loaded]
        return self.pipe.annotate(images) if self.given is None else self.pipe.annotate(images, [b for _, b in loaded])

    def write(self, job, loaded, ann) -> list[str]:
        from ..outputs import write_annotation

        a = self.args
        if ann.poses == () and self.pipe.pose is not None:
            why = "--boxes gives it no box" if loaded[1] is not None else \
                "its character mask is empty (--characters 1 poses the whole image)"
            say(f"no character found in {job[0]}: {why}; its pose files list none")
        return [str(p) for p in write_annotation(job[1], loaded[0].image, ann, tag_threshold=a.tag_threshold,
                                                 underscores=a.keep_underscores, exclude_tags=a.exclude_tags,
                                                 max_tags=a.max_tags)]


def _tasks(args) -> list[str]:
    tasks = [t for t in TASK_NAMES if t not in args.skip]
    if not tasks:
        raise UsageError(f"--skip leaves no model to run; skip at most {len(TASK_NAMES) - 1} of "
                         f"{', '.join(TASK_NAMES)}")
    return tasks


#: the options that change annotate's files (with the weight files, they decide what --resume redoes)
_OUTPUT_OPTIONS = ("skip", "tag_threshold", "keep_underscores", "exclude_tags", "max_tags", "characters", "min_area",
                   "exact", "precision", "compile")


def _settings(args) -> str:
    """The fingerprint of what annotate's files depend on: weight files, further files, options."""
    from ..batch import file_state, fingerprint

    files = [file_state(f) for _, _, f in _pipeline.weight_files(args, _tasks(args))]
    further = [file_state(v) for v in _pipeline.file_arguments(args).values() if v]
    options = {name: getattr(args, name) for name in _OUTPUT_OPTIONS}
    return fingerprint(files, further, options, file_state(args.boxes) if args.boxes else None)


def run(args) -> int:
    """Annotate every image; 0 when all worked, 1 when some failed, 2 when there was nothing to do."""
    from ..batch import Counts, RunRecord

    _tasks(args)
    jobs = list(_output_stems(args.inputs, args.recursive, Path(args.out)))
    if not jobs:
        print("annotate: no images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 2
    if args.boxes:
        names = {name for _, _, name in jobs}
        unmatched = sorted(set(read_boxes_file(args.boxes)) - names)
        if unmatched:
            shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
            say(f"note: {len(unmatched)} images of {args.boxes} are not among the inputs ({shown}); file_name must "
                "be the path under the folder given (or the file's name)")
    counts, todo = Counts(), jobs
    with contextlib.ExitStack() as stack:
        record = None
        if args.resume:
            record = stack.enter_context(RunRecord(args.out, "annotate", _settings(args)))
            todo = [job for job in jobs if not record.is_finished(job[2], job[0])]
            counts.skipped = len(jobs) - len(todo)
        return run_jobs(args, functools.partial(AnnotateTask, args), todo, counts, total=len(jobs),
                        verb="annotated", record=record)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``annotate`` command."""
    a = sub.add_parser("annotate", help="mask, cutout, tags and pose for images or folders")
    a.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files and folders of images (a folder's tree is mirrored under --out)")
    a.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    a.add_argument("--skip", action="append", choices=TASK_NAMES, default=[], help="do not run this model (repeatable)")
    a.add_argument("--tag-threshold", type=float, default=0.5,
                   help="score for a tag to enter NAME.tags.txt (default 0.5)")
    a.add_argument("--keep-underscores", action="store_true", help="keep underscores in NAME.tags.txt")
    a.add_argument("--exclude-tags", default="", metavar="T1,T2", help="comma-separated tags left out of NAME.tags.txt")
    a.add_argument("--max-tags", type=int, default=0, help="at most this many tags in NAME.tags.txt (0 = all)")
    a.add_argument("--characters", type=_characters, default="auto", metavar="auto|1|N",
                   help="characters per image: auto = every character the mask splits into (default), 1 = the "
                        "reference's single box around the whole mask, N = at most the N largest")
    a.add_argument("--min-area", type=_fraction, default=MIN_AREA, metavar="F",
                   help=f"a character's least pixel area as a fraction of the largest's; smaller detached parts "
                        f"join the nearest character (default {MIN_AREA})")
    a.add_argument("--boxes", metavar="FILE",
                   help="COCO JSON giving character boxes: 'images' (id, file_name = the path under the folder "
                        "given, or the file's name) and 'annotations' (image_id, bbox [x, y, w, h]); images it "
                        "does not list use the segmenter")
    a.add_argument("--resume", action="store_true",
                   help="skip images whose files a run into this --out already finished with the same weights and "
                        "options (recorded in DIR/.illustpose-runs.sqlite); redo the rest")
    add_runner_arguments(a)
    add_recursive_argument(a)
    a.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_model_arguments(a)
    a.set_defaults(func=run)
