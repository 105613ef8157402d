"""feat_match vs feat_concat pose networks: load time, per-image CPU time and peak memory.

Random weights (the architecture alone sets the cost) in full authors'-format Lightning
checkpoints written by tests/checkpoint_factory.py: feat_match with its 916 keys (the 573
``rcnn.*`` tensors are read and ignored), feat_concat with its 909.  Each model is measured
in a fresh child process so that its peak resident memory is its own:

* load: ``read_checkpoint`` + ``load_strict`` (meta-device build, tensors assigned);
* per image: the network on one 256x256 crop (batch 1, fp32, ``inference_mode``), after a
  warm-up; for feat_concat also the R-CNN branch alone;
* peak RSS: the process high-water mark after loading, and again over inference alone
  (reset through ``/proc/self/clear_refs``), next to the RSS after imports.

Prints a Markdown table and appends it to benchmarks/RESULTS.md (``common.record``) with the
machine, date and load average (other processes on a shared machine inflate the times).

    .venv/bin/python benchmarks/bench_feat_concat.py [--repeats 5] [--threads 2] [--no-record] [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common import add_record_arguments, record  # noqa: E402
from illustpose.checkpoints import read_checkpoint  # noqa: E402
from illustpose.loading import load_strict  # noqa: E402
from illustpose.models.feat_concat import IGNORED_CHECKPOINT_KEYS, RCNN_PREFIX, FeatConcatPoseNet  # noqa: E402
from illustpose.models.keypoint_rcnn import UNUSED_DETECTRON2_KEYS, KeypointRCNNBranch  # noqa: E402
from illustpose.models.feat_match import FeatMatchPoseNet  # noqa: E402

MODELS = {
    "feat_match": (FeatMatchPoseNet, ("rcnn.",)),
    "feat_concat": (FeatConcatPoseNet, IGNORED_CHECKPOINT_KEYS),
}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
        return True
    except OSError:
        return False


def _timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def child(kind: str, path: str, repeats: int, threads: int) -> dict:
    """Measure one model in this (fresh) process; returns the numbers as a dict."""
    torch.set_num_threads(threads)
    build, ignore = MODELS[kind]
    base = _rss_mb("VmRSS")
    t = time.perf_counter()
    ckpt = read_checkpoint(path)
    net = load_strict(build, ckpt.state_dict, path, ignore_prefixes=ignore).eval()
    load_s = time.perf_counter() - t
    del ckpt
    load_peak = _rss_mb("VmHWM")
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    reset = _reset_peak()
    with torch.inference_mode():
        net(x)  # warm-up
        lat = _timed(lambda: net(x), repeats)
        rcnn = _timed(lambda: net.rcnn["model"](x), repeats) if kind == "feat_concat" else None
    return {"load_s": load_s, "base_mb": base, "load_peak_mb": load_peak,
            "infer_peak_mb": _rss_mb("VmHWM") if reset else float("nan"),
            "median_s": statistics.median(lat), "min_s": min(lat),
            "rcnn_median_s": statistics.median(rcnn) if rcnn else None}


def write_checkpoints(tmp: Path) -> dict[str, Path]:
    """Full authors'-layout checkpoints with random weights for both kinds."""
    from checkpoint_factory import write_lightning_ckpt

    unused = {RCNN_PREFIX + k: torch.zeros(s) for k, s in UNUSED_DETECTRON2_KEYS.items() if not k.startswith("pixel_")}
    with torch.device("meta"):
        rcnn_shapes = {RCNN_PREFIX + k: v.shape for k, v in KeypointRCNNBranch().state_dict().items()}
    match_sd = {**FeatMatchPoseNet().state_dict(), **{k: torch.zeros(s) for k, s in rcnn_shapes.items()}, **unused}
    concat_sd = {**FeatConcatPoseNet().state_dict(), **unused}
    assert (len(match_sd), len(concat_sd)) == (916, 909)
    return {kind: write_lightning_ckpt(tmp / f"{kind}.ckpt", kind, sd, trainable_prefix="keypoint_head.")
            for kind, sd in (("feat_match", match_sd), ("feat_concat", concat_sd))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    add_record_arguments(ap)
    ap.add_argument("--child", nargs=2, metavar=("KIND", "CKPT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.repeats, args.threads)))
        return
    torch.set_num_threads(args.threads)
    load_avg = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, path in write_checkpoints(Path(tmp)).items():
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(path), "--repeats", str(args.repeats),
                                  "--threads", str(args.threads)], check=True, capture_output=True, text=True)
            rows.append((kind, path.stat().st_size / 1e6, json.loads(out.stdout.strip().splitlines()[-1])))
    table = ["| model | .ckpt MB | load s | per image s (median) | per image s (min) | of which R-CNN s | "
             "RSS after imports MB | peak RSS load MB | peak RSS inference MB |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, mb, r in rows:
        rcnn = f"{r['rcnn_median_s']:.3f}" if r["rcnn_median_s"] is not None else "-"
        table.append(f"| {kind} | {mb:.0f} | {r['load_s']:.2f} | {r['median_s']:.3f} | {r['min_s']:.3f} | {rcnn} | "
                     f"{r['base_mb']:.0f} | {r['load_peak_mb']:.0f} | {r['infer_peak_mb']:.0f} |")
    text = ("\n".join(table) + f"\n\nNetworks only (no segmenter, no image decoding): one 256x256 crop, batch 1, fp32, "
            f"{args.repeats} timed runs after a warm-up, each model in its own process. feat_concat resizes the crop "
            f"to 800x800 for its ResNet-101-FPN. 1-minute load average {load_avg:.1f} at start, "
            f"{os.getloadavg()[0]:.1f} at the end (this process adds about {args.threads}); on a shared machine "
            "the minimum is the better estimate of the uncontended time.\n")
    record("bench_feat_concat.py", "cpu", text, args)


if __name__ == "__main__":
    main()
