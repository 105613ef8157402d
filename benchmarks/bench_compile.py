"""What ``Detector.compile()`` costs: first calls and per-image times, per shape policy, with
torch's persistent compile caches empty, filled by an earlier process, or switched off.

Each run is a fresh process (a process keeps compiled graphs in memory, so only a new one
shows what the on-disk caches give) on random weights, feeding a sequence of inputs to one
detector through ``Detector.forward``: for each input, the first call's seconds (compiling, or
finding the graph in a cache) and then the per-image time (best of a few calls).

Shape policies:

* ``library``: ``compile()`` as shipped (the batch dimension marked dynamic on every call, and
  for the segmenter height and width too);
* ``before``: no marks, torch's automatic dynamic shapes (``compile()`` before issue 17);
* ``static``: ``dynamic=False``, every new shape compiles a graph of its own;
* ``dynamic``: batch, height and width marked dynamic, whatever the detector.

Caches: ``cold`` = an empty ``TORCHINDUCTOR_CACHE_DIR`` (a machine's first run), ``warm`` = the
folder the ``cold`` run of the same policy filled (a second process), ``off`` = the FX graph,
AOT-autograd and dynamic-shape profile caches disabled by their environment variables.

    .venv/bin/python benchmarks/bench_compile.py [--device cpu|cuda] [--models segmenter,feat_match]
        [--runs library:cold,library:warm,...] [--quick] [--no-record] [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common import add_record_arguments, record  # noqa: E402

#: input sequences (batch x height x width), as a folder annotated in batches of 8 meets them:
#: full batches, the last partial one, a single image (PyTorch gives batch 1 its own graph),
#: and for the segmenter a second image size (its input follows the image's aspect ratio)
SEQUENCES = {"segmenter": ["4x256x256", "3x256x256", "1x256x384"],
             "feat_match": ["8x256x256", "3x256x256", "1x256x256"]}
QUICK_SEQUENCES = {"segmenter": ["1x128x128", "2x128x128"], "feat_match": ["1x256x256", "2x256x256"]}
RUNS = ["library:cold", "library:warm", "library:off", "before:cold", "before:warm", "static:cold", "static:warm"]
CACHES_OFF = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0",
              "TORCH_DYNAMO_AUTOMATIC_DYNAMIC_LOCAL_PGO": "0"}


def detector(model: str, device: str, precision: str):
    from illustpose.models.feat_match import FeatMatchPoseNet
    from illustpose.models.pose import PoseEstimator
    from illustpose.models.segmenter import CharacterSegmenter, CharacterSegmenterNet

    torch.manual_seed(0)
    det = CharacterSegmenter(CharacterSegmenterNet()) if model == "segmenter" else PoseEstimator(FeatMatchPoseNet())
    return det.to(device, precision=precision)


def child(model: str, device: str, precision: str, policy: str, sequence: list[str], repeats: int) -> dict:
    """In this fresh process: compile one detector under ``policy`` and time ``sequence``."""
    det = detector(model, device, precision)
    if policy != "eager":
        det.compile()
    if policy == "static":
        det._compiled = torch.compile(det.net, options={"freezing": True}, dynamic=False)
        det.dynamic_dims = ()
    elif policy == "before":
        det.dynamic_dims = ()
    elif policy == "dynamic":
        det.dynamic_dims = (0, 2, 3)
    out = []
    for shape in sequence:
        b, h, w = map(int, shape.split("x"))
        x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0))
        t = time.perf_counter()
        det.forward(x)
        first = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            det.forward(x)
            times.append(time.perf_counter() - t)
        out.append({"shape": shape, "first_s": first, "per_image_s": min(times) / b})
    return {"inputs": out}


def run(model: str, device: str, precision: str, policy: str, cache: str, sequence: list[str], repeats: int,
        folders: Path, threads: int) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(folders / f"{model}-{policy}"))
    if cache == "off":
        env.update(CACHES_OFF)
        env["TORCHINDUCTOR_CACHE_DIR"] = str(folders / f"{model}-{policy}-off")
    cmd = [sys.executable, __file__, "--device", device, "--threads", str(threads), "--repeats", str(repeats),
           "--child", model, precision, policy, ",".join(sequence)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit status %d" % proc.returncode])[-1][:200]}
    res = json.loads(proc.stdout.splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t
    folder = Path(env["TORCHINDUCTOR_CACHE_DIR"])
    res["cache_mb"] = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6 if folder.is_dir() else 0
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default=None, help="default: fp32 on a CPU, fp16 on CUDA")
    ap.add_argument("--models", default="segmenter,feat_match")
    ap.add_argument("--runs", default=None, help=f"comma-separated policy:cache pairs (default {','.join(RUNS)})")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="a dry run: small inputs, library:cold and library:warm")
    add_record_arguments(ap)
    ap.add_argument("--child", nargs=4, metavar=("MODEL", "PRECISION", "POLICY", "SEQUENCE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        model, precision, policy, sequence = args.child
        print(json.dumps(child(model, args.device, precision, policy, sequence.split(","), args.repeats)))
        return
    precision = args.precision or ("fp16" if args.device.startswith("cuda") else "fp32")
    runs = args.runs.split(",") if args.runs else ["library:cold", "library:warm"] if args.quick else RUNS
    sequences = QUICK_SEQUENCES if args.quick else SEQUENCES
    rows = []
    width = max(len(sequences[m]) for m in args.models.split(","))
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            seq = sequences[model]
            eager = run(model, args.device, precision, "eager", "-", seq, args.repeats, Path(tmp), args.threads)
            results = [("eager", "-", eager)]
            for item in runs:
                policy, _, cache = item.partition(":")
                results.append((policy, cache, run(model, args.device, precision, policy, cache, seq, args.repeats,
                                                   Path(tmp), args.threads)))
                print(model, item, json.dumps(results[-1][2]), flush=True)
            pad = lambda cells: " | ".join(cells + [""] * (width - len(cells)))  # noqa: E731
            for policy, cache, r in results:
                if "error" in r:
                    rows.append(f"| {model} | {policy} | {cache} | {pad(['failed: ' + r['error']])} | | |")
                    continue
                cells = [f"{i['first_s']:.1f} s / {i['per_image_s'] * 1e3:.0f} ms" for i in r["inputs"]]
                rows.append(f"| {model} | {policy} | {cache} | {pad(cells)} | {r['wall_s']:.0f} | {r['cache_mb']:.0f} |")
            rows.append(f"| | | | {pad([f'_{s}_' for s in seq])} | | |")
    text = "\n".join([
        f"Precision {precision}. Each cell: the first call's seconds / then ms per image (best of {args.repeats}); "
        "inputs in the order of the row below each model's block (batch x height x width). Wall: the whole "
        "process (start, imports, every input). Cache MB: the folder the run filled. 1-minute load average "
        f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.", "",
        "| model | policy | cache | " + " | ".join(f"input {i + 1}" for i in range(width)) + " | wall s | cache MB |",
        "| --- | --- | --- |" + " ---: |" * (width + 2), *rows, ""]) + "\n"
    record("bench_compile.py", args.device, text, args)


if __name__ == "__main__":
    main()
