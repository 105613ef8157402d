"""Keeping the model busy: images/s of ``caption`` with 0, 1 and N background loader threads.

A folder of generated illustrations-sized JPEG and PNG files (decoding and resizing them is the
work the loader threads take off the model's thread) is captioned with random full-size tagger
weights at a fixed batch size, once per ``--workers`` value, through the real command
(``illustpose.cli.main``).  Two code paths, interleaved per setting: the loader threads decoding
only, the tagger's resize and letterbox left in the model's thread (the code before the models'
``prepare`` step), and the current one, where the threads also make the network inputs.  Each
run is repeated ``--repeats`` times; the best counts (the machine's other load only slows runs
down).  Prints a Markdown table with the CPU flags and appends it to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_batch.py [--images 48] [--size 1536] [--batch-size 8] [--no-record]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from common import add_record_arguments, cpu_flags, record  # noqa: E402
from illustpose.checkpoints import save_safetensors  # noqa: E402
from illustpose.cli import main as cli  # noqa: E402
from illustpose.models.tagger import DanbooruTaggerNet  # noqa: E402
from illustpose.registry import get_weights  # noqa: E402


def make_dataset(folder: Path, count: int, size: int) -> None:
    """``count`` noisy-gradient images of ``size`` x ``size``, alternating JPEG and PNG."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    for i in range(count):
        rgb = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                        np.full((size, size), 40.0 * (i % 6), np.float32)], axis=2)
        rgb += rng.normal(0, 12, rgb.shape).astype(np.float32)
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
        image.save(folder / f"img_{i:03d}.{'jpg' if i % 2 else 'png'}", quality=92)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--size", type=int, default=1536, help="side of the generated images in pixels")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", default="0,1,2,4", help="comma-separated loader thread counts")
    p.add_argument("--repeats", type=int, default=2)
    add_record_arguments(p)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        make_dataset(tmp / "data", args.images, args.size)
        torch.manual_seed(0)
        w = get_weights("tagger")
        names = [f"tag_{i}" for i in range(1062)]
        save_safetensors(tmp / "tagger.safetensors", DanbooruTaggerNet(1062).state_dict(), model="tagger",
                         hparams=w.hparams, extra={"tags": json.dumps(names)})
        base = ["caption", str(tmp / "data"), "--tagger", str(tmp / "tagger.safetensors"), "--offline", "--quiet",
                "--batch-size", str(args.batch_size)]
        rows = [f"| loader threads | decode only: images/s (best of {args.repeats}) | decode + inputs: images/s | "
                "seconds (decode only / + inputs) |", "| ---: | ---: | ---: | ---: |"]
        baseline = None
        for workers in (int(x) for x in args.workers.split(",")):
            argv = base + ["--workers", str(workers)]
            old, new = [], []
            for _ in range(args.repeats):  # interleaved: the machine's load drifts alike for both
                with decode_only_loaders():
                    old.append(_timed(argv))
                new.append(_timed(argv))
            old_rate, new_rate = args.images / min(old), args.images / min(new)
            baseline = baseline or old_rate
            rows.append(f"| {workers} | {old_rate:.2f} ({old_rate / baseline:.2f}x) | {new_rate:.2f} "
                        f"({new_rate / baseline:.2f}x) | {min(old):.1f} / {min(new):.1f} |")
    text = (f"CPU flags: {cpu_flags()}; torch threads {torch.get_num_threads()}. `caption` over {args.images} "
            f"generated {args.size}x{args.size} images (half JPEG, half PNG), random full-size tagger weights, fp32, "
            f"batch {args.batch_size}; the model load is included in each run.\n\n" + "\n".join(rows) + "\n")
    record("bench_batch.py", "cpu", text, args)


@contextlib.contextmanager
def decode_only_loaders():
    """``caption`` as before the ``prepare`` step: its loader threads only decode, and the
    tagger's resize, letterbox and tensor are made in the model's thread (``tag``)."""
    from illustpose.cli.caption import CaptionTask
    from illustpose.images import load_image

    saved = CaptionTask.load, CaptionTask.infer
    CaptionTask.load = lambda self, job: load_image(job[0])
    CaptionTask.infer = lambda self, images: self.tagger.tag(images)
    try:
        yield
    finally:
        CaptionTask.load, CaptionTask.infer = saved


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    assert cli(argv) == 0
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
