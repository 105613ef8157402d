"""Speed and memory of the models and the segment+pose pipeline, per device.

Random weights (cost depends on the architecture only), written in the authors' Lightning
format (tests/checkpoint_factory.py) and converted with ``weights convert``.  Measures:

* load time per model from ``.ckpt`` and from ``.safetensors``: warm (the file in the page
  cache, as a user's second run) and cold (the file dropped from the page cache first, with
  ``posix_fadvise(DONTNEED)``); safetensors maps the file lazily, so the cold load is also
  given together with the first image, which pages the weights in;
* per-image latency at batch 1 for each model and for segment+pose, per path: ``fp32`` eager
  (the straightforward exact port, the baseline), ``fp32+compile``, and the device's half
  precision (bf16 on a CPU, fp16 on CUDA) eager and compiled;
* throughput of segment+pose at larger batches (8 on a CPU; 8/32/64 on CUDA);
* FLOPs per image (``torch.utils.flop_counter``) and achieved GFLOP/s, next to a measured
  matmul peak of the same device and dtype;
* memory with segmenter+tagger+pose loaded, each layout in a fresh process: three separate
  fp32 models, the pipeline's shared trunk in fp32, and the shared trunk in half precision:
  unique weight bytes, resident memory after one image, and the process's peak.

Prints Markdown tables and appends them to benchmarks/RESULTS.md with the machine and date.

    .venv/bin/python benchmarks/bench_pipeline.py [--device cpu|cuda] [--repeats 5] [--threads N] [--no-record]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
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
from illustpose.models.feat_match import FeatMatchPoseNet  # noqa: E402
from illustpose.models.segmenter import CharacterSegmenterNet  # noqa: E402
from illustpose.models.tagger import DanbooruTaggerNet  # noqa: E402
from illustpose.pipeline import Pipeline  # noqa: E402
from illustpose.models.pose import PoseEstimator  # noqa: E402
from illustpose.models.segmenter import CharacterSegmenter  # noqa: E402
from illustpose.models.tagger import DanbooruTagger  # noqa: E402

DETECTORS = {"segmenter": CharacterSegmenter, "tagger": DanbooruTagger, "feat_match": PoseEstimator}
BBOX = (40, 20, 400, 470)


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def record(script: str, device: str, text: str) -> None:
    """Print a run's tables and append them to benchmarks/RESULTS.md under a dated heading."""
    print(text)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write(f"\n## {script}, {device}: {datetime.date.today()}, {machine(device)}\n\n{text}")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def best_of(fn, repeats: int, device: str) -> tuple[float, float]:
    """(median, min) seconds of ``fn`` after one warm-up call."""
    fn()
    times = [timed(fn, device) for _ in range(repeats)]
    return statistics.median(times), min(times)


def drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


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


def write_checkpoints(tmp: Path) -> dict[str, tuple[Path, Path]]:
    """{kind: (.ckpt, .safetensors)} with random weights in the released layouts."""
    (tmp / "tags.txt").write_text("".join(f"t{i}\n" for i in range(1062)))
    torch.manual_seed(0)
    tagger_sd = DanbooruTaggerNet(1062).state_dict()
    pose_sd = FeatMatchPoseNet().state_dict()
    pose_sd.update({k: v for k, v in tagger_sd.items() if k.startswith("resnet.") and not k.startswith(("resnet.layer4", "resnet.fc"))})
    pose_sd.update(rcnn_placeholders())
    files = {}
    for kind, sd in (("segmenter", CharacterSegmenterNet().state_dict()), ("tagger", tagger_sd), ("feat_match", pose_sd)):
        ckpt = write_lightning_ckpt(tmp / f"{kind}.ckpt", kind, sd, trainable_prefix="keypoint_head." if kind == "feat_match" else "")
        files[kind] = (ckpt, convert(ckpt, tmp / f"{kind}.safetensors"))
    return files


def first_image(det, image: Image.Image) -> None:
    if isinstance(det, CharacterSegmenter):
        det.segment([image])
    elif isinstance(det, DanbooruTagger):
        det.tag([image])
    else:
        det.estimate([image], [BBOX])


def load_table(files, image, device: str) -> list[str]:
    rows = []
    for kind, paths in files.items():
        cls = DETECTORS[kind]
        warm, cold, cold_first = [], [], []
        for p in paths:
            warm.append(best_of(lambda p=p: cls.from_pretrained(p, device=device), 3, device)[0])
            runs, firsts = [], []
            for _ in range(3):
                drop_from_page_cache(p)
                t = time.perf_counter()
                det = cls.from_pretrained(p, device=device)
                runs.append(time.perf_counter() - t)
                first_image(det, image)
                sync(device)
                firsts.append(time.perf_counter() - t)
            cold.append(statistics.median(runs))
            cold_first.append(statistics.median(firsts))
        mb = [p.stat().st_size / 1e6 for p in paths]
        cell = lambda v: f"{v[0]:.3f} / {v[1]:.3f} ({v[0] / v[1]:.1f}x)"  # noqa: E731
        rows.append(f"| {kind} | {mb[0]:.0f} / {mb[1]:.0f} | {cell(warm)} | {cell(cold)} | {cell(cold_first)} |")
    return ["### Load: .ckpt s / .safetensors s (speed-up)", "",
            "| model | MB | warm | cold | cold, then the first image |", "| --- | ---: | ---: | ---: | ---: |", *rows, "",
            "Median of 3. Cold: the file dropped from the page cache first (`posix_fadvise(DONTNEED)`); the "
            "virtual disk may still be served from the host's cache. The first image is the same work for both "
            "formats except that safetensors pages its mapped weights in there.", ""]


def load_all(files, device: str, path: str):
    precision, _, compiled = path.partition("+")
    dets = [DETECTORS[k].from_pretrained(files[k][1], device=device, precision=precision) for k in DETECTORS]
    if compiled:
        for d in dets:
            d.compile()
    return dets


def latency_table(files, image, device: str, paths: list[str], repeats: int) -> list[str]:
    x = torch.rand(1, 3, 256, 256, device=device)
    seg, tag, pose = load_all(files, device, "fp32")
    gflop = {k: flops(d.net, x) / 1e9 for k, d in zip(DETECTORS, (seg, tag, pose))}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    peaks = {p: matmul_peak(device, dtypes[p]) for p in {p.partition("+")[0] for p in paths}}
    rows, base = [], None
    for path in paths:
        seg, tag, pose = load_all(files, device, path)
        runs = {"segmenter": lambda: seg.segment([image]), "tagger": lambda: tag.tag([image]),
                "feat_match": lambda: pose.estimate([image], [BBOX])}
        warmup = sum(timed(fn, device) for fn in runs.values())
        peak = peaks[path.partition("+")[0]]
        for kind, fn in runs.items():
            med, mn = best_of(fn, repeats, device)
            rows.append(f"| {kind} | {path} | {med * 1e3:.0f} | {mn * 1e3:.0f} | {gflop[kind]:.1f} | {gflop[kind] / mn:.0f} | {peak:.0f} | |")
        pipe = Pipeline(seg, None, pose)
        med, mn = best_of(lambda: pipe.annotate([image]), repeats, device)
        base = base or med
        rows.append(f"| **segment+pose** | {path} | {med * 1e3:.0f} | {mn * 1e3:.0f} | "
                    f"{gflop['segmenter'] + gflop['feat_match']:.1f} | - | {peak:.0f} | **{base / med:.2f}x** |")
        rows.append(f"| first calls (compile) | {path} | {warmup * 1e3:.0f} | | | | | |")
    return ["### Per image, batch 1 (512x512 input)", "",
            "| what | path | median ms | min ms | GFLOP/img | achieved GFLOP/s | matmul peak GFLOP/s | segment+pose speed-up vs fp32 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |", *rows, ""]


def throughput_table(files, image, device: str, paths: list[str], batches: tuple[int, ...], repeats: int) -> list[str]:
    rows = []
    for path in paths:
        seg, _, pose = load_all(files, device, path)
        pipe = Pipeline(seg, None, pose)
        for b in batches:
            imgs = [image] * b
            med, _ = best_of(lambda: pipe.annotate(imgs), repeats, device)
            rows.append(f"| {b} | {path} | {b / med:.1f} |")
    return ["### Segment+pose throughput", "", "| batch | path | images/s |", "| ---: | --- | ---: |", *rows, ""]


LAYOUTS = {"separate": "three separate fp32 models", "shared": "pipeline, shared trunk, fp32",
           "shared-half": "pipeline, shared trunk, {half} weights"}


def memory_probe(layout: str, files_dir: Path, device: str) -> dict:
    """Run in a fresh process: load the three models in ``layout`` and run one image."""
    half = "fp16" if device.startswith("cuda") else "bf16"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8), "RGB")

    def rss() -> float:
        status = Path("/proc/self/status").read_text()
        return {k: int(v.split()[0]) / 1024 for k, v in (ln.split(":", 1) for ln in status.splitlines()) if k in ("VmRSS", "VmHWM")}

    before = rss()["VmRSS"]
    precision = half if layout == "shared-half" else "fp32"
    dets = [DETECTORS[k].from_pretrained(files_dir / f"{k}.safetensors", device=device, precision=precision) for k in DETECTORS]
    pipe = Pipeline(*dets) if layout != "separate" else None
    for d in dets:
        first_image(d, image)
    sync(device)
    after = rss()
    out = {"weights_mb": weight_bytes(*(d.net for d in dets)) / 1e6, "shared": bool(pipe and pipe.trunk_shared),
           "rss_mb": after["VmRSS"] - before, "peak_mb": after["VmHWM"] - before}
    if device.startswith("cuda"):
        out.update(gpu_mb=torch.cuda.memory_allocated() / 1e6, gpu_peak_mb=torch.cuda.max_memory_allocated() / 1e6)
    return out


def memory_table(files_dir: Path, device: str) -> list[str]:
    half = "fp16" if device.startswith("cuda") else "bf16"
    res = {}
    for layout in LAYOUTS:
        cmd = [sys.executable, __file__, "--device", device, "--threads", str(torch.get_num_threads()),
               "--memory-probe", layout, str(files_dir)]
        res[layout] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    base = res["separate"]
    cuda = device.startswith("cuda")
    rows = []
    for layout, r in res.items():
        ratio = lambda k: f"{r[k]:.0f} ({r[k] / base[k]:.2f}x)"  # noqa: E731
        gpu = f" | {ratio('gpu_mb')} | {ratio('gpu_peak_mb')}" if cuda else ""
        name = LAYOUTS[layout].format(half=half) + (f" (trunk shared: {r['shared']})" if layout != "separate" else "")
        rows.append(f"| {name} | {ratio('weights_mb')} | {ratio('rss_mb')} | {ratio('peak_mb')}{gpu} |")
    head = "| layout | weights MB | RSS growth MB | peak RSS growth MB |" + (" GPU allocated MB | GPU peak MB |" if cuda else "")
    return ["### Memory, segmenter + tagger + pose loaded (from .safetensors, after one image each)", "",
            head, "| --- |" + " ---: |" * (5 if cuda else 3), *rows, "",
            "Each layout in a fresh process; growth over the process after imports. Ratios are against "
            "three separate fp32 models. RSS growth: weights plus what the runs keep (allocator caches); "
            "peak: also the load itself, when a half-precision load reads each float32 file once.", ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--memory-probe", nargs=2, metavar=("LAYOUT", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    dev = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe[0], Path(args.memory_probe[1]), dev)))
        return
    cuda = dev.startswith("cuda")
    half = "fp16" if cuda else "bf16"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8), "RGB")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_checkpoints(tmp)
        out = load_table(files, image, dev)
        # throughput first: compiled models leave inductor's worker processes behind
        throughput = throughput_table(files, image, dev, ["fp32", half] + ([f"{half}+compile"] if cuda else []),
                                      (8, 32, 64) if cuda else (8,), max(2, args.repeats // 2))
        out += latency_table(files, image, dev, ["fp32", "fp32+compile", half, f"{half}+compile"], args.repeats)
        out += throughput + memory_table(tmp, dev)
    text = "\n".join(out) + "\n"
    if args.no_record:
        print(text)
    else:
        record("bench_pipeline.py", dev, text)


if __name__ == "__main__":
    main()
