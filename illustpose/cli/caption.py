"""``caption``: LoRA captions in place, ``NAME.txt`` beside each image (:mod:`illustpose.captions`)."""

from __future__ import annotations

import argparse
import sys

from ..captions import CAPTION_MODES, DEFAULT_FORMATS, caption_jobs, caption_line, write_caption
from .pipeline import add_model_arguments, add_recursive_argument, build_pipeline, positive_int, say

__all__ = ["register", "add_workers_argument"]


def add_workers_argument(p: argparse.ArgumentParser) -> None:
    """``--workers N``: background threads that read images while the models run."""
    p.add_argument("--workers", type=int, default=2, metavar="N",
                   help="background threads that read and decode images while the model runs (default 2; "
                        "0 reads them between batches)")


def _formats(text: str) -> list[str]:
    return [f.strip().lstrip(".") for f in text.split(",") if f.strip()]


def run(args) -> int:
    """Caption every image; 0 when all worked, 1 when some failed, 2 when there was nothing to do."""
    from tqdm import tqdm

    from ..batch import Counts, batches, each_or_error, prefetch
    from ..images import load_image
    from ..outputs import caption

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
    tagger = build_pipeline(args, ("tag",)).tagger if todo else None
    bar = tqdm(total=len(todo), unit="img", disable=len(todo) < 2 or args.quiet, file=sys.stderr)
    loaded = prefetch(todo, lambda job: load_image(job[0]), workers=args.workers, ahead=2 * args.batch_size)
    try:
        for good, bad in batches(loaded, args.batch_size):
            for x in bad:
                say(f"failed: {x.error}")
            results = each_or_error(tagger.tag, [x.value for x in good]) if good else []
            for x, result in zip(good, results):
                image, txt = x.item
                if isinstance(result, Exception):
                    say(f"failed: {image}: {result}")
                    counts.failed += 1
                    continue
                tags = caption(result, args.threshold, underscores=args.keep_underscores,
                               exclude=args.exclude_tags, max_tags=args.max_tags)
                write_caption(txt, caption_line(args.prefix, tags), args.mode)
                counts.done += 1
            counts.failed += len(bad)
            bar.update(len(good) + len(bad))
    except KeyboardInterrupt:
        bar.close()
        say(f"interrupted after {counts.total} of {len(jobs)} images; their captions are written")
        return 130
    bar.close()
    if not args.quiet:
        say(counts.summary("captioned", len(jobs)))
    return counts.exit_status


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
    c.add_argument("--batch-size", type=positive_int, default=1, metavar="N", help="images per forward pass (default 1)")
    add_workers_argument(c)
    add_recursive_argument(c)
    c.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    add_model_arguments(c, ("tag",))
    c.set_defaults(func=run)
