"""Bounded cost per image: segment + tag + pose on extreme sizes and aspect ratios.

Before the cap, a 2x900 image ran the segmenter on 256x115,200 pixels (more than 10 minutes,
memory past 8 GB) and 1x4000 crashed the tagger; now every image costs about what a 512x512
image costs, or is refused in milliseconds.  Random full-size weights (cost depends on the
architecture only); one warm-up image first.  Prints a Markdown table with the time and the
process's peak resident memory per image, and appends it to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_extreme_images.py [--no-record] [--results FILE]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from common import add_record_arguments, cpu_flags, record  # noqa: E402
from illustpose.errors import IllustposeError  # noqa: E402
from illustpose.images import from_array  # noqa: E402
from illustpose.models.feat_match import FeatMatchPoseNet  # noqa: E402
from illustpose.models.pose import PoseEstimator  # noqa: E402
from illustpose.models.segmenter import CharacterSegmenter, CharacterSegmenterNet  # noqa: E402
from illustpose.models.tagger import DanbooruTagger, DanbooruTaggerNet  # noqa: E402
from illustpose.pipeline import Pipeline  # noqa: E402

SIZES = [(512, 512), (2, 900), (900, 2), (1, 4000), (4000, 1), (1, 1)]  # (width, height)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_record_arguments(p)
    args = p.parse_args()
    torch.manual_seed(0)
    pipe = Pipeline(CharacterSegmenter(CharacterSegmenterNet()),
                    DanbooruTagger(DanbooruTaggerNet(1062), [f"tag_{i}" for i in range(1062)]),
                    PoseEstimator(FeatMatchPoseNet()))
    rng = np.random.default_rng(0)
    pipe.annotate([Image.fromarray(rng.integers(0, 256, (512, 512, 3), np.uint8))])  # warm-up
    rows = ["| image (w x h) | seconds | peak RSS MB | result |", "| --- | ---: | ---: | --- |"]
    for w, h in SIZES:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
        start = time.perf_counter()
        ann = pipe.annotate([image])[0]
        seconds = time.perf_counter() - start
        rows.append(f"| {w} x {h} | {seconds:.2f} | {peak_rss_mb():.0f} | mask {ann.segmentation.mask.shape[::-1]}, "
                    f"{len(ann.tags.scores)} tag scores, bbox {list(ann.pose.bbox_xywh)} |")
    huge = np.broadcast_to(np.zeros(3, np.uint8), (16000, 16000, 3))  # 768 MB as an array, none allocated
    start = time.perf_counter()
    try:
        pipe.annotate([from_array(huge)])
        outcome = "annotated"
    except IllustposeError as e:
        outcome = f"refused: {str(e)[:90]}..."
    rows.append(f"| 16000 x 16000 (array) | {time.perf_counter() - start:.3f} | {peak_rss_mb():.0f} | {outcome} |")
    text = (f"CPU flags: {cpu_flags()}. Random weights, fp32, batch 1, one warm-up image; peak RSS is the "
            "process's running maximum.\n\n" + "\n".join(rows) + "\n")
    record("bench_extreme_images.py", "cpu", text, args)


if __name__ == "__main__":
    main()
