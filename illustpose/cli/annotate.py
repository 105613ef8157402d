"""``annotate``: mask, cutout, tags and pose files for images and folders (:mod:`illustpose.outputs`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import IllustposeError, UsageError
from . import pipeline as _pipeline
from .pipeline import TASK_NAMES, add_model_arguments, add_recursive_argument, positive_int

__all__ = ["register"]


def _output_stems(inputs: Sequence[str], recursive: bool, out: Path) -> Iterator[tuple[Path, Path]]:
    """(image file, output stem) pairs: folders are mirrored under ``out``, files land at its root."""
    from ..images import iter_image_files

    for item in inputs:
        base = Path(item)
        for f in iter_image_files([item], recursive=recursive):
            rel = f.relative_to(base) if base.is_dir() else Path(f.name)
            yield f, out / rel.with_suffix("")


def _annotate_one(pipe, path: Path, image):
    """One image's :class:`~illustpose.pipeline.Annotation`, or None once the reason the models
    refused it is reported (the run goes on and exits 1)."""
    from tqdm import tqdm

    try:
        return pipe.annotate([image])[0]
    except IllustposeError as e:
        tqdm.write(f"failed: {path}: {e}", file=sys.stderr)
        return None


def run(args) -> int:
    """Annotate every image; 0 when all worked, 1 when some failed, 2 when there was nothing to do."""
    from tqdm import tqdm

    from ..images import load_image
    from ..outputs import write_annotation

    tasks = [t for t in TASK_NAMES if t not in args.skip]
    if not tasks:
        raise UsageError(f"--skip leaves no model to run; skip at most {len(TASK_NAMES) - 1} of "
                         f"{', '.join(TASK_NAMES)}")
    jobs = list(_output_stems(args.inputs, args.recursive, Path(args.out)))
    if not jobs:
        print("annotate: no images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 2
    pipe = _pipeline.build_pipeline(args, tasks)
    failed = 0
    bar = tqdm(total=len(jobs), unit="img", disable=len(jobs) < 2 or args.quiet)
    done = 0
    try:
        for start in range(0, len(jobs), args.batch_size):
            batch, images = [], []
            for f, stem in jobs[start:start + args.batch_size]:
                try:
                    images.append(load_image(f))
                    batch.append((f, stem))
                except IllustposeError as e:
                    failed += 1
                    tqdm.write(f"skipped: {e}", file=sys.stderr)
            if len(images) == 1:
                annotations = [_annotate_one(pipe, batch[0][0], images[0])]
            else:
                try:
                    annotations = pipe.annotate(images)
                except IllustposeError:  # an image the models refuse must not sink its batch: one by one
                    annotations = [_annotate_one(pipe, f, image) for (f, _), image in zip(batch, images)]
            failed += sum(ann is None for ann in annotations)
            for (f, stem), image, ann in zip(batch, images, annotations):
                if ann is None:
                    continue
                write_annotation(stem, image, ann, tag_threshold=args.tag_threshold,
                                 underscores=args.keep_underscores, exclude_tags=args.exclude_tags,
                                 max_tags=args.max_tags)
            bar.update(len(jobs[start:start + args.batch_size]))
            done += len(jobs[start:start + args.batch_size])
    except KeyboardInterrupt:
        bar.close()
        print(f"interrupted after {done} of {len(jobs)} images; the files of those are written", file=sys.stderr)
        return 130
    bar.close()
    if not args.quiet:
        print(f"annotated {len(jobs) - failed} of {len(jobs)} images into {args.out}", file=sys.stderr)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``annotate`` command."""
    a = sub.add_parser("annotate", help="mask, cutout, tags and pose for images or folders")
    a.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                   help="image files and folders of images (a folder's tree is mirrored under --out)")
    a.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    a.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                   help="images per forward pass (default 1)")
    a.add_argument("--skip", action="append", choices=TASK_NAMES, default=[], help="do not run this model (repeatable)")
    a.add_argument("--tag-threshold", type=float, default=0.5,
                   help="score for a tag to enter NAME.tags.txt (default 0.5)")
    a.add_argument("--keep-underscores", action="store_true", help="keep underscores in NAME.tags.txt")
    a.add_argument("--exclude-tags", default="", metavar="T1,T2", help="comma-separated tags left out of NAME.tags.txt")
    a.add_argument("--max-tags", type=int, default=0, help="at most this many tags in NAME.tags.txt (0 = all)")
    add_recursive_argument(a)
    a.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_model_arguments(a)
    a.set_defaults(func=run)
