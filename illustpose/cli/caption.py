"""``caption``: LoRA captions in place, ``NAME.txt`` beside each image (:mod:`illustpose.captions`)."""

from __future__ import annotations

import argparse
import functools
import sys

from ..captions import CAPTION_MODES, DEFAULT_FORMATS, caption_jobs, caption_line, write_caption
from .pipeline import add_model_arguments, add_recursive_argument, build_pipeline
from .runner import add_runner_arguments

__all__ = ["register", "CaptionTask"]


def _formats(text: str) -> list[str]:
    return [f.strip().lstrip(".") for f in text.split(",") if f.strip()]


class CaptionTask:
    """The ``caption`` work on one ``(image, caption file)`` job (:class:`illustpose.batch.Task`)."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tagger = build_pipeline(args, ("tag",)).tagger

    def key(self, job) -> str:
        return str(job[0])

    def source(self, job) -> str:
        return str(job[0])

    def load(self, job):
        from ..images import load_image

        return self.tagger.prepare(load_image(job[0]))  # the resize and letterbox run in the loader thread

    def infer(self, inputs: list) -> list:
        return self.tagger.tag_inputs(inputs)

    def write(self, job, inputs, tags) -> list[str]:
        from ..outputs import caption

        a = self.args
        text = caption(tags, a.threshold, underscores=a.keep_underscores, exclude=a.exclude_tags, max_tags=a.max_tags)
        write_caption(job[1], caption_line(a.prefix, text), a.mode)
        return [str(job[1])]


def run(args) -> int:
    """Caption every image; 0 when all worked, 1 when some failed, 2 when there was nothing to do."""
    from ..batch import Counts
    from .runner import run_jobs

    formats = [f for text in args.formats for f in _formats(text)] if args.formats else list(DEFAULT_FORMATS)
    jobs = list(caption_jobs(args.inputs, formats=formats, recursive=args.recursive, extension=args.extension))
    if not jobs:
        print(f"caption: no {', '.join(formats)} images found in {', '.join(args.inputs)}", file=sys.stderr)
        return 2
    counts = Counts()
    if args.mode == "skip":  # as the reference: an existing caption is not even computed again
        todo = [(img, txt) for img, txt in jobs if not txt.exists()]
        counts.skipped = len(jobs) - len(todo)
    else:
        todo = jobs
    return run_jobs(args, functools.partial(CaptionTask, args), todo, counts, total=len(jobs), verb="captioned")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``caption`` command."""
    c = sub.add_parser("caption", help="write each image's Danbooru tags into NAME.txt beside it (LoRA datasets)",
                       description="LoRA captions in place, as the reference's danbooru_tagger_lora.py writes them: "
                                   "tags with score >= threshold, highest first, ', '-joined, after the prefix.")
    c.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and folders of images")
    c.add_argument("--mode", choices=CAPTION_MODES, default="overwrite",
                   help="an existing NAME.txt: overwrite it (default), append the tags it lacks, or skip the image")
    c.add_argument("--prefix", default="", metavar="TEXT",
                   help="text put first, e.g. a trigger word (spaces and commas around it are stripped)")
    c.add_argument("--threshold", type=float, default=0.5, help="score for a tag to enter the caption (default 0.5)")
    c.add_argument("--keep-underscores", action="store_true", help="keep underscores in tags (default: spaces)")
    c.add_argument("--extension", default="txt", help="caption file extension (default txt)")
    c.add_argument("--formats", action="append", default=None, metavar="EXT,EXT",
                   help=f"image extensions to caption, comma-separated or repeated, any case (default "
                        f"{','.join(DEFAULT_FORMATS)})")
    c.add_argument("--exclude-tags", default="", metavar="T1,T2", help="comma-separated tags never written")
    c.add_argument("--max-tags", type=int, default=0, metavar="N", help="at most N tags per caption (0 = all)")
    add_runner_arguments(c)
    add_recursive_argument(c)
    c.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_model_arguments(c, ("tag",))
    c.set_defaults(func=run)
