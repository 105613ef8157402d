"""Speed and memory of the models and the segment+pose pipeline, per device.

Random weights (cost depends on the architecture only), written in the authors' Lightning
format (tests/checkpoint_factory.py) and converted with ``weights convert``.  Measures:

* load time per model from ``.ckpt`` and from ``.safetensors``: warm (the file in the page
  cache, as a user's second run) and cold (the file dropped from the page cache first, with
  ``posix_fadvise(DONTNEED)``); safetensors maps the file lazily, so the cold load is also
  given together with the first image, which pages the weights in;
* cold start: a fresh process loading segmenter + pose from ``.safetensors`` and annotating one
  image (on CUDA this includes creating the CUDA context and cuDNN's first kernels);
* per-image latency at batch 1 for each model and for segment+pose, per path: ``fp32`` eager
  (the straightforward exact port, the baseline), ``fp32+compile``, and the device's half
  precision (bf16 on a CPU, fp16 on CUDA) eager and compiled;
* throughput of segment+pose end to end (PIL preprocessing on the CPU, the networks, decoding)
  per batch size, with the CPU preprocessing time per image that bounds it;
* the networks alone on device-resident batches (the ceiling without preprocessing) in half
  precision: NCHW, channels-last (the library's layout), channels-last replayed as a CUDA graph
  (CUDA only; the normalisation's constants kept on the device, see ``resident_normalisation``)
  and compiled (when a ``+compile`` path is asked for): images/s, achieved TFLOP/s and peak
  device memory per batch size;
* FLOPs per image (``torch.utils.flop_counter``) and achieved GFLOP/s, next to a measured
  matmul peak of the same device and dtype;
* memory with segmenter+tagger+pose loaded, each layout in a fresh process: three separate
  fp32 models, the pipeline's shared trunk in fp32, and the shared trunk in half precision:
  unique weight bytes, resident memory after one image, the process's peak, and on CUDA the
  allocated, peak and whole-device memory in use (CUDA context included).

Prints Markdown tables and appends them to benchmarks/RESULTS.md with the machine and date.

    .venv/bin/python benchmarks/bench_pipeline.py [--device cpu|cuda] [--repeats 5] [--threads N]
        [--paths fp32,fp16,fp16+compile] [--batches 8,32] [--quick] [--no-record] [--results FILE]

``--quick`` (a dry run: benchmarks/gpu_check.sh ``--device cpu --quick``) repeats less, loads
once per format and uses batch 2 unless ``--batches`` says otherwise.
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

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from checkpoint_factory import write_lightning_ckpt  # noqa: E402
from common import add_record_arguments, record  # noqa: E402
from shared_data import FIDELITY  # noqa: E402
from illustpose.convert import convert  # noqa: E402
from illustpose.geometry import bbox_xywh_to_rc, pose_cropbox  # noqa: E402
from illustpose.models._common import IMAGENET_MEAN, IMAGENET_STD, ImageNetNormalize  # noqa: E402
from illustpose.models.feat_match import FeatMatchPoseNet  # noqa: E402
from illustpose.models.pose import PoseEstimator  # noqa: E402
from illustpose.models.segmenter import CharacterSegmenter, CharacterSegmenterNet  # noqa: E402
from illustpose.models.tagger import DanbooruTagger, DanbooruTaggerNet  # noqa: E402
from illustpose.pipeline import Pipeline  # noqa: E402
from illustpose.preprocess import pose_input, segmenter_input  # noqa: E402

DETECTORS = {"segmenter": CharacterSegmenter, "tagger": DanbooruTagger, "feat_match": PoseEstimator}
BBOX = (40, 20, 400, 470)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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
    """Achieved GFLOP/s of a large square matmul on random data (the device's practical peak)."""
    n = 2048 if device == "cpu" else 8192
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    _, t = best_of(lambda: a @ b, 3 if device == "cpu" else 10, device)
    return 2 * n ** 3 / t / 1e9


def flops(net: torch.nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        net(x)
    return fc.get_total_flops()


def rcnn_placeholders() -> dict[str, torch.Tensor]:
    """The released pose files also hold the R-CNN's 573 ``rcnn.*`` tensors (~313 MB) that
    feat_match never reads; zeros of the recorded shapes, from the golden set when present."""
    keys = FIDELITY / "feat_match.keys.json"
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


def test_image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8), "RGB")


def first_image(det, image: Image.Image) -> None:
    if isinstance(det, CharacterSegmenter):
        det.segment([image])
    elif isinstance(det, DanbooruTagger):
        det.tag([image])
    else:
        det.estimate([image], [BBOX])


def segment_pose(seg: CharacterSegmenter, pose: PoseEstimator) -> Pipeline:
    """Segment+pose with one pose per image (the reference's single box), where the pipeline
    offers the choice: random weights give random masks, which must not change the batch."""
    try:
        return Pipeline(seg, None, pose, characters=1)
    except TypeError:  # a pipeline without the characters option: always one pose per image
        return Pipeline(seg, None, pose)


def out_of_memory(e: Exception) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def load_table(files, image, device: str, repeats: int) -> list[str]:
    rows = []
    for kind, paths in files.items():
        cls = DETECTORS[kind]
        warm, cold, cold_first = [], [], []
        for p in paths:
            warm.append(best_of(lambda p=p: cls.from_pretrained(p, device=device), repeats, device)[0])
            runs, firsts = [], []
            for _ in range(repeats):
                drop_from_page_cache(p)
                t = time.perf_counter()
                det = cls.from_pretrained(p, device=device)
                sync(device)
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
            f"Median of {repeats}. Cold: the file dropped from the page cache first (`posix_fadvise(DONTNEED)`); the "
            "virtual disk may still be served from the host's cache. The first image is the same work for both "
            "formats except that safetensors pages its mapped weights in there.", ""]


def cold_start_probe(files_dir: Path, device: str, precision: str) -> dict:
    """In a fresh process: load segmenter + pose from .safetensors and annotate one image."""
    t = time.perf_counter()
    seg = CharacterSegmenter.from_pretrained(files_dir / "segmenter.safetensors", device=device, precision=precision)
    pose = PoseEstimator.from_pretrained(files_dir / "feat_match.safetensors", device=device, precision=precision)
    sync(device)
    load = time.perf_counter() - t
    image = test_image()
    t = time.perf_counter()
    segment_pose(seg, pose).annotate([image])
    sync(device)
    first = time.perf_counter() - t
    t = time.perf_counter()
    segment_pose(seg, pose).annotate([image])
    sync(device)
    return {"load_s": load, "first_s": first, "second_s": time.perf_counter() - t}


def child(args: list[str], device: str) -> dict:
    """Run this script's hidden probe ``args`` in a fresh process; its last stdout line as JSON."""
    cmd = [sys.executable, __file__, "--device", device, "--threads", str(torch.get_num_threads()), *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.splitlines()[-1])


def cold_start_table(files_dir: Path, device: str, paths: list[str]) -> list[str]:
    rows = []
    for precision in dict.fromkeys(p.partition("+")[0] for p in paths):
        t = time.perf_counter()
        r = child(["--cold-start-probe", precision, str(files_dir)], device)
        total = time.perf_counter() - t
        rows.append(f"| {precision} | {total:.2f} | {r['load_s']:.2f} | {r['first_s']:.3f} | {r['second_s']:.3f} |")
    return ["### Cold start: a fresh process, segmenter + pose from .safetensors, one 512x512 image", "",
            "| precision | process wall s (start to exit) | load s | first image s | second image s |",
            "| --- | ---: | ---: | ---: | ---: |", *rows, "",
            "Process wall: Python start, imports, load, two images and exit; load includes creating the CUDA "
            "context on a GPU; the first image includes cuDNN's first kernel choices.", ""]


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
    peaks = {p: matmul_peak(device, DTYPES[p]) for p in dict.fromkeys(p.partition("+")[0] for p in paths)}
    rows, base = [], None
    for path in paths:
        seg, tag, pose = load_all(files, device, path)
        runs = {"segmenter": lambda: seg.segment([image]), "tagger": lambda: tag.tag([image]),
                "feat_match": lambda: pose.estimate([image], [BBOX])}
        warmup = sum(timed(fn, device) for fn in runs.values())
        peak = peaks[path.partition("+")[0]]
        for kind, fn in runs.items():
            med, mn = best_of(fn, repeats, device)
            rows.append(f"| {kind} | {path} | {med * 1e3:.1f} | {mn * 1e3:.1f} | {gflop[kind]:.1f} | {gflop[kind] / mn:.0f} | {peak:.0f} | |")
        pipe = segment_pose(seg, pose)
        med, mn = best_of(lambda: pipe.annotate([image]), repeats, device)
        base = base or med
        rows.append(f"| **segment+pose** | {path} | {med * 1e3:.1f} | {mn * 1e3:.1f} | "
                    f"{gflop['segmenter'] + gflop['feat_match']:.1f} | - | {peak:.0f} | **{base / med:.2f}x** |")
        rows.append(f"| first calls (compile) | {path} | {warmup * 1e3:.0f} | | | | | |")
    return ["### Per image, batch 1 (512x512 input)", "",
            "| what | path | median ms | min ms | GFLOP/img | achieved GFLOP/s | matmul peak GFLOP/s | segment+pose speed-up vs fp32 |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |", *rows, ""]


def preprocess_ms(image: Image.Image, repeats: int) -> float:
    """CPU milliseconds per image of the segmenter's and the pose crop's input transforms."""
    cb = pose_cropbox(bbox_xywh_to_rc(BBOX), 256, 0.1)
    return best_of(lambda: (segmenter_input(image, 256), pose_input(image, cb)), repeats, "cpu")[1] * 1e3


def throughput_table(files, image, device: str, paths: list[str], batches: list[int], repeats: int) -> list[str]:
    rows = []
    for path in paths:
        seg, _, pose = load_all(files, device, path)
        pipe = segment_pose(seg, pose)
        for b in batches:
            imgs = [image] * b
            try:
                med, _ = best_of(lambda: pipe.annotate(imgs), repeats, device)
                rows.append(f"| {b} | {path} | {b / med:.1f} |")
            except RuntimeError as e:
                if not out_of_memory(e):
                    raise
                rows.append(f"| {b} | {path} | out of memory |")
                torch.cuda.empty_cache()
                break
        seg = pose = pipe = None  # let go of the models before the next path
    prep = preprocess_ms(image, repeats)
    return ["### Segment+pose throughput, end to end", "", "| batch | path | images/s |", "| ---: | --- | ---: |", *rows, "",
            f"End to end: PIL decoding-free preprocessing on the CPU in this one process ({prep:.1f} ms per image for "
            f"the segmenter input and the pose crop, so at most {1e3 / prep:.0f} images/s from one thread), the "
            "networks, and decoding on the CPU. The networks alone: the table before.", ""]


def network_variants(device: str, half: str, compiled: bool) -> list[str]:
    """The eager variants, or (``compiled``) the library's ``compile()``."""
    if compiled:
        return [f"{half} compile"]
    return [f"{half} NCHW", f"{half} channels-last"] + ([f"{half} channels-last + CUDA graph"]
                                                       if device.startswith("cuda") else [])


def _half_detectors(files, device: str, half: str, variant: str):
    seg, _, pose = load_all(files, device, half + ("+compile" if variant.endswith("compile") else ""))
    if "NCHW" in variant:
        for d in (seg, pose):
            d.net.to(memory_format=torch.contiguous_format)
    return seg, pose


def resident_normalisation(net: torch.nn.Module, device: torch.device) -> None:
    """Give ``net``'s ImageNet normalisations their mean and std on ``device`` once: the library's
    uploads them on each call, a host-to-device copy that CUDA graph capture forbids.  The same
    two tensor operations, so the same numbers."""
    mean = torch.as_tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    for m in net.modules():
        if isinstance(m, ImageNetNormalize):
            m.forward = lambda x: (x - mean.to(x.dtype)) / std.to(x.dtype)


def _network_step(seg, pose, x: torch.Tensor, variant: str, device: str, half: str):
    """A zero-argument function running segmenter + pose networks on the device batch ``x``."""
    layout = torch.contiguous_format if "NCHW" in variant else torch.channels_last
    x = x.to(dtype=torch.float32).contiguous(memory_format=layout)
    autocast = lambda: torch.autocast(torch.device(device).type, dtype=DTYPES[half])  # noqa: E731
    if variant.endswith("compile"):
        nets = (seg._compiled, pose._compiled)
        for dim in seg.dynamic_dims:  # as Detector.forward marks its inputs
            torch._dynamo.maybe_mark_dynamic(x, dim)
    else:
        nets = (seg.net, pose.net)

    def step():
        with torch.inference_mode(), autocast():
            return nets[0](x), nets[1](x)

    if not variant.endswith("CUDA graph"):
        return step
    for net in nets:
        resident_normalisation(net, x.device)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up on a side stream before capture, as PyTorch's docs ask
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.autocast("cuda", dtype=DTYPES[half], cache_enabled=False), \
            torch.cuda.graph(graph):
        nets[0](x), nets[1](x)
    return graph.replay


def network_table(files, device: str, half: str, batches: list[int], repeats: int, *, compiled: bool) -> list[str]:
    cuda = device.startswith("cuda")
    x1 = torch.rand(1, 3, 256, 256, device=device)
    seg32, _, pose32 = load_all(files, device, "fp32")
    gflop = (flops(seg32.net, x1) + flops(pose32.net, x1)) / 1e9
    del seg32, pose32
    peak = matmul_peak(device, DTYPES[half]) / 1e3
    rows = []
    for variant in network_variants(device, half, compiled):
        seg, pose = _half_detectors(files, device, half, variant)
        for b in batches:
            x = torch.rand(b, 3, 256, 256, device=device)
            try:
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                step = _network_step(seg, pose, x, variant, device, half)
                med, mn = best_of(step, repeats, device)
                mem = f"{torch.cuda.max_memory_allocated() / 2**20:.0f}" if cuda else "-"
                rows.append(f"| {b} | {variant} | {b / med:.1f} | {b / mn:.1f} | {gflop * b / mn / 1e3:.1f} | "
                            f"{gflop * b / mn / 1e3 / peak:.0%} | {mem} |")
            except RuntimeError as e:
                if not out_of_memory(e):
                    rows.append(f"| {b} | {variant} | failed: {str(e).splitlines()[0][:120]} | | | | |")
                    break
                rows.append(f"| {b} | {variant} | out of memory | | | | |")
                break
            finally:
                step = x = None
        seg = pose = None
        if cuda:
            torch.cuda.empty_cache()
    return [f"### The networks alone: segmenter + pose on device-resident 256x256 batches, {half}"
            + (", compiled" if compiled else ""), "",
            "| batch | variant | images/s (median) | images/s (best) | achieved TFLOP/s | of the matmul peak | peak device memory MiB |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |", *rows, "",
            f"{gflop:.1f} GFLOP per image (segmenter on a 256x256 input, as for a square image, plus the pose network "
            f"on its 256x256 crop); measured {half} matmul peak {peak:.1f} TFLOP/s (a square matmul on random data, "
            f"{'8192' if cuda else '2048'}^3). "
            "No preprocessing and no decoding: the ceiling of the end-to-end figures. Peak memory: "
            "`torch.cuda.max_memory_allocated` over the timed runs (weights included).", ""]


LAYOUTS = {"separate": "three separate fp32 models", "shared": "pipeline, shared trunk, fp32",
           "shared-half": "pipeline, shared trunk, {half} weights"}


def memory_probe(layout: str, files_dir: Path, device: str) -> dict:
    """Run in a fresh process: load the three models in ``layout`` and run one image."""
    half = "fp16" if device.startswith("cuda") else "bf16"
    image = test_image()

    def rss() -> float:
        status = Path("/proc/self/status").read_text()
        return {k: int(v.split()[0]) / 1024 for k, v in (ln.split(":", 1) for ln in status.splitlines()) if k in ("VmRSS", "VmHWM")}

    before = rss()["VmRSS"]
    precision = half if layout == "shared-half" else "fp32"
    dets = [DETECTORS[k].from_pretrained(files_dir / f"{k}.safetensors", device=device, precision=precision) for k in DETECTORS]
    pipe = Pipeline(*dets) if layout != "separate" else None
    weights = weight_bytes(*(d.net for d in dets))
    for d in dets:
        first_image(d, image)
    sync(device)
    after = rss()
    out = {"weights_mb": weights / 1e6, "shared": bool(pipe and pipe.trunk_shared),
           "rss_mb": after["VmRSS"] - before, "peak_mb": after["VmHWM"] - before}
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info()
        out.update(gpu_mb=torch.cuda.memory_allocated() / 1e6, gpu_peak_mb=torch.cuda.max_memory_allocated() / 1e6,
                   gpu_reserved_mb=torch.cuda.max_memory_reserved() / 1e6, device_used_mb=(total - free) / 1e6)
    return out


def memory_table(files_dir: Path, device: str) -> list[str]:
    half = "fp16" if device.startswith("cuda") else "bf16"
    res = {layout: child(["--memory-probe", layout, str(files_dir)], device) for layout in LAYOUTS}
    base = res["separate"]
    cuda = device.startswith("cuda")
    keys = ["weights_mb", "rss_mb", "peak_mb"] + (["gpu_mb", "gpu_peak_mb", "gpu_reserved_mb", "device_used_mb"] if cuda else [])
    rows = []
    for layout, r in res.items():
        cells = " | ".join(f"{r[k]:.0f} ({r[k] / base[k]:.2f}x)" for k in keys)
        name = LAYOUTS[layout].format(half=half) + (f" (trunk shared: {r['shared']})" if layout != "separate" else "")
        rows.append(f"| {name} | {cells} |")
    head = ("| layout | weights MB | RSS growth MB | peak RSS growth MB |"
            + (" GPU allocated MB | GPU peak allocated MB | GPU peak reserved MB | device memory in use MB |" if cuda else ""))
    return ["### Memory, segmenter + tagger + pose loaded (from .safetensors, after one image each at batch 1)", "",
            head, "| --- |" + " ---: |" * len(keys), *rows, "",
            "Each layout in a fresh process; growth over the process after imports. Ratios are against "
            "three separate fp32 models. RSS growth: weights plus what the runs keep (allocator caches); "
            "peak: also the load itself, when a half-precision load reads each float32 file once."
            + (" Device memory in use: the whole GPU's used memory after the run (`torch.cuda.mem_get_info`), "
               "CUDA context and cuDNN workspaces included: what the models need beside another program on "
               "the same card." if cuda else ""), ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--paths", default=None, help="comma-separated latency paths, e.g. fp32,fp16,fp16+compile")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default: 8 on a CPU, 8..256 on CUDA)")
    ap.add_argument("--quick", action="store_true", help="a dry run: fewer repeats and loads, batch 2")
    add_record_arguments(ap)
    ap.add_argument("--memory-probe", nargs=2, metavar=("LAYOUT", "DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--cold-start-probe", nargs=2, metavar=("PRECISION", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    dev = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe[0], Path(args.memory_probe[1]), dev)))
        return
    if args.cold_start_probe:
        print(json.dumps(cold_start_probe(Path(args.cold_start_probe[1]), dev, args.cold_start_probe[0])))
        return
    cuda = dev.startswith("cuda")
    half = "fp16" if cuda else "bf16"
    paths = args.paths.split(",") if args.paths else ["fp32", half] if args.quick else \
        ["fp32", "fp32+compile", half, f"{half}+compile"]
    batches = [int(b) for b in args.batches.split(",")] if args.batches else \
        [2] if args.quick else [8, 32, 64, 128, 256] if cuda else [8]
    repeats = 2 if args.quick else args.repeats
    image = test_image()
    out: list[str] = []

    def emit(table: list[str]) -> None:  # print each table when done: a run cut short keeps them
        print("\n".join(table), flush=True)
        out.extend(table)

    print(f"# bench_pipeline.py on {dev}: paths {paths}, batches {batches}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = write_checkpoints(tmp)
        # most wanted first; compiled paths last (they are slow to build and leave inductor's
        # worker processes behind)
        emit(memory_table(tmp, dev))
        emit(cold_start_table(tmp, dev, paths))
        emit(network_table(files, dev, half, batches, repeats, compiled=False))
        emit(throughput_table(files, image, dev, [half] if cuda else ["fp32", half], batches, max(2, repeats // 2)))
        emit(load_table(files, image, dev, 1 if args.quick else 3))
        emit(latency_table(files, image, dev, paths, repeats))
        if f"{half}+compile" in paths:
            emit(network_table(files, dev, half, batches, repeats, compiled=True))
    record("bench_pipeline.py", dev, "\n".join(out) + "\n", args, echo=False)


if __name__ == "__main__":
    main()
