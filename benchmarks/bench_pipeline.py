"""Speed and memory of the models and the segment+pose pipeline, per device.

Random weights (cost depends on the architecture only), written in the authors' Lightning
format (tests/checkpoint_factory.py) and converted with ``weights convert``.  Measures:

* cold load per model from ``.ckpt`` and from ``.safetensors`` (page cache warm: a second
  read of the same file, as a user's second run);
* per-image latency at batch 1 for each model, and for segment+pose, per precision
  (``fp32`` = the straightforward exact port; ``bf16``/``fp16`` = autocast + channels-last);
* throughput of segment+pose at larger batches (8 on CPU; 8/32/64 on CUDA);
* FLOPs per image (``torch.utils.flop_counter``) and achieved GFLOP/s, next to a measured
  matmul peak of the same device and dtype;
* weight memory of segmenter+tagger+pose loaded as three separate fp32 models, vs with the
  shared trunk, vs shared trunk with bf16 weights; and the process's peak RSS / GPU memory.

Prints Markdown tables and appends them to benchmarks/RESULTS.md with the machine and date.

    .venv/bin/python benchmarks/bench_pipeline.py [--device cpu|cuda] [--repeats 5] [--threads N] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime
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
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from checkpoint_factory import write_lightning_ckpt  # noqa: E402
from illustpose.convert import convert  # noqa: E402
from illustpose.models.pose import FeatMatchPoseNet  # noqa: E402
from illustpose.models.segmenter import CharacterSegmenterNet  # noqa: E402
from illustpose.models.tagger import DanbooruTaggerNet  # noqa: E402
from illustpose.pipeline import Pipeline  # noqa: E402
from illustpose.pose import PoseEstimator  # noqa: E402
from illustpose.segment import CharacterSegmenter  # noqa: E402
from illustpose.tag import DanbooruTagger  # noqa: E402


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_of(fn, repeats: int, device: str) -> tuple[float, float]:
    """(median, min) seconds of ``fn`` after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times)


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """Achieved GFLOP/s of a large square matmul (the device's practical peak)."""
    n = 2048 if device == "cpu" else 8192
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    _, t = best_of(lambda: a @ b, 3, device)
    return 2 * n ** 3 / t / 1e9


def flops(net: torch.nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net(x)
    return fc.get_total_flops()


def rcnn_placeholders() -> dict[str, torch.Tensor]:
    """The released pose files also hold the R-CNN's 573 ``rcnn.*`` tensors (~313 MB) that
    feat_match never reads; zeros of the recorded shapes, from ../shared when present."""
    keys = ROOT.parent / "shared" / "fidelity" / "feat_match.keys.json"
    if not keys.is_file():
        return {}
    import json

    return {s["key"]: torch.zeros(s["shape"], dtype=getattr(torch, s["dtype"]))
            for s in json.loads(keys.read_text())["keys"] if s["key"].startswith("rcnn.")}


def weight_bytes(*nets: torch.nn.Module) -> int:
    seen, total = set(), 0
    for net in nets:
        for t in (*net.parameters(), *net.buffers()):
            if t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total += t.numel() * t.element_size()
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    dev = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = dev.startswith("cuda")
    half = "fp16" if cuda else "bf16"
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8), "RGB")
    bbox = (40, 20, 400, 470)
    out: list[str] = []

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "tags.txt").write_text("".join(f"t{i}\n" for i in range(1062)))
        torch.manual_seed(0)
        tagger_sd = DanbooruTaggerNet(1062).state_dict()
        pose_sd = FeatMatchPoseNet().state_dict()
        pose_sd.update({k: v for k, v in tagger_sd.items() if k.startswith("resnet.") and not k.startswith(("resnet.layer4", "resnet.fc"))})
        pose_sd.update(rcnn_placeholders())
        specs = {"segmenter": (CharacterSegmenterNet().state_dict(), CharacterSegmenter, ""),
                 "tagger": (tagger_sd, DanbooruTagger, ""),
                 "feat_match": (pose_sd, PoseEstimator, "keypoint_head.")}
        files, rows = {}, []
        for kind, (sd, cls, trainable) in specs.items():
            ckpt = write_lightning_ckpt(tmp / f"{kind}.ckpt", kind, sd, trainable_prefix=trainable)
            files[kind] = convert(ckpt, tmp / f"{kind}.safetensors")
            loads = [best_of(lambda p=p: cls.from_pretrained(p, device=dev), 3, dev)[0] for p in (ckpt, files[kind])]
            rows.append(f"| {kind} | {ckpt.stat().st_size / 1e6:.0f} | {loads[0]:.3f} | {loads[1]:.3f} | {loads[0] / loads[1]:.1f}x |")
        out += ["### Cold load (page cache warm)", "", "| model | .ckpt MB | .ckpt s | .safetensors s | speed-up |",
                "| --- | ---: | ---: | ---: | ---: |", *rows, ""]

        seg = CharacterSegmenter.from_pretrained(files["segmenter"], device=dev)
        tag = DanbooruTagger.from_pretrained(files["tagger"], device=dev)
        pose = PoseEstimator.from_pretrained(files["feat_match"], device=dev)
        x = torch.rand(1, 3, 256, 256, device=dev)
        gflop = {"segmenter": flops(seg.net, x) / 1e9, "tagger": flops(tag.net, x) / 1e9, "feat_match": flops(pose.net, x) / 1e9}
        peaks = {p: matmul_peak(dev, {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p]) for p in ("fp32", half)}
        rows = []
        base = {}
        for precision in ("fp32", half):
            for det in (seg, tag, pose):
                det.to(precision=precision)
            runs = {"segmenter": lambda: seg.segment([image]), "tagger": lambda: tag.tag([image]),
                    "feat_match": lambda: pose.estimate([image], [bbox])}
            for kind, fn in runs.items():
                med, mn = best_of(fn, args.repeats, dev)
                rows.append(f"| {kind} | {precision} | {med * 1e3:.0f} | {mn * 1e3:.0f} | {gflop[kind]:.1f} | "
                            f"{gflop[kind] / mn:.0f} | {peaks[precision]:.0f} |")
            pipe = Pipeline(seg, None, pose)
            med, mn = best_of(lambda: pipe.annotate([image]), args.repeats, dev)
            base.setdefault("fp32", med)
            rows.append(f"| segment+pose | {precision} | {med * 1e3:.0f} | {mn * 1e3:.0f} | "
                        f"{gflop['segmenter'] + gflop['feat_match']:.1f} | - | {peaks[precision]:.0f} |")
            rows.append(f"| segment+pose speed-up vs fp32 | {precision} | {base['fp32'] / med:.2f}x | | | | |")
        out += ["### Per image, batch 1 (512x512 input)", "",
                "| what | precision | median ms | min ms | GFLOP/img | achieved GFLOP/s | matmul peak GFLOP/s |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: |", *rows, ""]

        rows = []
        batches = (8, 32, 64) if cuda else (8,)
        for precision in ("fp32", half):
            for det in (seg, pose):
                det.to(precision=precision)
            pipe = Pipeline(seg, None, pose)
            for b in batches:
                imgs = [image] * b
                med, _ = best_of(lambda: pipe.annotate(imgs), max(2, args.repeats // 2), dev)
                rows.append(f"| {b} | {precision} | {b / med:.1f} |")
        out += ["### Segment+pose throughput", "", "| batch | precision | images/s |", "| ---: | --- | ---: |", *rows, ""]

        sep = weight_bytes(seg.net) + weight_bytes(tag.net) + weight_bytes(pose.net)
        pipe = Pipeline(seg, tag, pose)
        shared = weight_bytes(seg.net, tag.net, pose.net)
        for det in (seg, tag, pose):
            det.net.to(torch.bfloat16)
        halfw = weight_bytes(seg.net, tag.net, pose.net)
        out += ["### Weight memory, segmenter + tagger + pose loaded", "",
                "| layout | MB | vs three separate fp32 |", "| --- | ---: | ---: |",
                f"| three separate fp32 models | {sep / 1e6:.0f} | 1.00 |",
                f"| shared trunk (equal tensors: {pipe.trunk_shared}) | {shared / 1e6:.0f} | {shared / sep:.2f} |",
                f"| shared trunk, bf16 weights | {halfw / 1e6:.0f} | {halfw / sep:.2f} |", ""]
    peak = (f"peak GPU memory {torch.cuda.max_memory_allocated() / 1e6:.0f} MB" if cuda else
            f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    out.append(f"Whole run: {peak}.")
    text = "\n".join(out) + "\n"
    print(text)
    if not args.no_record:
        with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(f"\n## bench_pipeline.py, {dev}: {datetime.date.today()}, {machine(dev)}\n\n{text}")


if __name__ == "__main__":
    main()
