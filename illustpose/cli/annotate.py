"""``annotate``: mask, cutout, tags and pose files for images and folders (:mod:`illustpose.outputs`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import IllustposeError
from . import pipeline as _pipeline
from .pipeline import TASK_NAMES, add_model_arguments

__all__ = ["register"]


def _output_stems(inputs: Sequence[str], recursive: bool, out: Path) -> Iterator[tuple[Path, Path]]:
    """(image file, output stem) pairs: folders are mirrored under ``out``, files land at its root."""
    from ..images import iter_image_files

    for item in inputs:
        base = Path(item)
        for f in iter_image_files([item], recursive=recursive):
            rel = f.relative_to(base) if base.is_dir() else Path(f.name)
            yield f, out / rel.with_suffix("")


def run(args) -> int:
    """Annotate every image; 0 when all worked, 1 when some failed, 2 when there was nothing to do."""
    from tqdm import tqdm

    from ..images import load_image
    from ..outputs import write_annotation

    tasks = [t for t in TASK_NAMES if t not in args.skip]
    jobs = list(_output_stems(args.inputs, not args.no_recursive, Path(args.out)))
    if not jobs:
        print("annotate: no images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 2
    pipe = _pipeline.build_pipeline(args, tasks)
    failed = 0
    bar = tqdm(total=len(jobs), unit="img", disable=len(jobs) < 2 or args.quiet)
    for start in range(0, len(jobs), args.batch_size):
        batch, images = [], []
        for f, stem in jobs[start:start + args.batch_size]:
            try:
                images.append(load_image(f))
                batch.append((f, stem))
            except IllustposeError as e:
                failed += 1
                tqdm.write(f"skipped: {e}", file=sys.stderr)
        try:
            annotations = pipe.annotate(images) if images else []
        except IllustposeError as e:
            failed += len(batch)
            tqdm.write(f"failed batch starting at {batch[0][0]}: {e}", file=sys.stderr)
            annotations = []
        for (f, stem), image, ann in zip(batch, images, annotations):
            write_annotation(stem, image, ann, tag_threshold=args.tag_threshold, underscores=args.keep_underscores,
                             exclude_tags=args.exclude_tags, max_tags=args.max_tags)
        bar.update(len(jobs[start:start + args.batch_size]))
    bar.close()
    if not args.quiet:
        print(f"annotated {len(jobs) - failed} of {len(jobs)} images into {args.out}", file=sys.stderr)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``annotate`` command."""
    a = sub.add_parser("annotate", help="mask, cutout, tags and pose for images or folders")
    a.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    a.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    a.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    a.add_argument("--skip", action="append", choices=TASK_NAMES, default=[], help="do not run this model (repeatable)")
    a.add_argument("--tag-threshold", type=float, default=0.5,
                   help="score for a tag to enter NAME.tags.txt (default 0.5)")
    a.add_argument("--keep-underscores", action="store_true", help="keep underscores in NAME.tags.txt")
    a.add_argument("--exclude-tags", default="", metavar="T1,T2", help="comma-separated tags left out of NAME.tags.txt")
    a.add_argument("--max-tags", type=int, default=0, help="at most this many tags in NAME.tags.txt (0 = all)")
    a.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    a.add_argument("--quiet", action="store_true")
    add_model_arguments(a)
    a.set_defaults(func=run)
