"""Load time and per-image CPU latency of each model, from Lightning .ckpt and from safetensors.

Random weights (the architecture alone sets the cost), written in the authors' Lightning
format by tests/checkpoint_factory.py, then converted with ``weights convert``.  Prints a
Markdown table and appends it to benchmarks/RESULTS.md with the machine and versions.

    .venv/bin/python benchmarks/bench_models.py [--repeats 5] [--threads 2] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from checkpoint_factory import write_lightning_ckpt  # noqa: E402
from illustpose.convert import convert  # noqa: E402
from illustpose.models.pose import FeatMatchPoseNet  # noqa: E402
from illustpose.models.segmenter import CharacterSegmenterNet  # noqa: E402
from illustpose.models.tagger import DanbooruTaggerNet  # noqa: E402
from illustpose.pose import PoseEstimator  # noqa: E402
from illustpose.segment import CharacterSegmenter  # noqa: E402
from illustpose.tag import DanbooruTagger  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), "RGB")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tags.txt").write_text("".join(f"t{i}\n" for i in range(1062)))
        pose_sd = FeatMatchPoseNet().state_dict()
        specs = [
            ("segmenter", CharacterSegmenterNet().state_dict(), CharacterSegmenter, lambda d: d.segment([image])),
            ("tagger", DanbooruTaggerNet(1062).state_dict(), DanbooruTagger, lambda d: d.tag([image])),
            ("feat_match", pose_sd, PoseEstimator, lambda d: d.estimate([image], [(40, 20, 400, 470)])),
        ]
        for kind, sd, cls, run in specs:
            ckpt = write_lightning_ckpt(tmp / f"{kind}.ckpt", kind, sd, trainable_prefix="keypoint_head." if kind == "feat_match" else "")
            st = convert(ckpt, tmp / f"{kind}.safetensors")
            loads = {}
            for label, path in (("ckpt", ckpt), ("safetensors", st)):
                gc.collect()
                loads[label] = statistics.median(timed(lambda: cls.from_pretrained(path), 3))
            det = cls.from_pretrained(st)
            run(det)  # warm-up
            lat = timed(lambda: run(det), args.repeats)
            rows.append((kind, ckpt.stat().st_size / 1e6, loads["ckpt"], loads["safetensors"],
                         statistics.median(lat), min(lat)))
            del det
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    table = ["| model | .ckpt MB | load .ckpt s | load safetensors s | per image s (median) | per image s (min) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    table += [f"| {k} | {mb:.0f} | {lc:.2f} | {ls:.2f} | {med:.3f} | {mn:.3f} |" for k, mb, lc, ls, med, mn in rows]
    text = "\n".join(table) + f"\n\nPeak RSS of the whole run: {rss:.0f} MB. Input 512x512 RGB, batch 1, fp32.\n"
    print(text)
    if not args.no_record:
        head = f"\n## bench_models.py — {datetime.date.today()} — {machine()}\n\n"
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(head + text)


if __name__ == "__main__":
    main()
