"""How far each fast path moves the outputs, on the golden weights and the sample illustrations.

The reference's own outputs (``../shared/fidelity/golden``) are the yardstick; the weights are
the golden set's synthetic ones (``weights_rule.py``), so these numbers say how the paths
compare numerically, not how a trained model behaves.  For each path (precision, optionally
``compile()``) over the 8 samples:

* segmenter: bboxes equal to the golden one, and the largest bbox edge shift in pixels;
* pose stage (crop from the golden bbox): joints within one heatmap cell of the golden
  keypoints, and joints exactly equal (of 8 x 25);
* end to end (crop from the path's own bbox): joints within one heatmap cell;
* tagger: tags whose ``> 0.5`` decision differs from the golden (of 8 x 1062).

Prints a Markdown table and appends it to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_precision.py [--device cpu|cuda] [--paths fp32,bf16,...] [--no-record] [--results FILE]

A path is ``<precision>`` or ``<precision>+compile``; the default is every precision with and
without compile, except fp16+compile on a CPU (fp16 has no CPU kernels; eager fp16 is kept to
show its numerics).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common import add_record_arguments, record  # noqa: E402
from checkpoint_factory import write_lightning_ckpt, write_rules_json  # noqa: E402
from shared_data import FIDELITY, SAMPLE_STEMS, SAMPLES, load_golden  # noqa: E402
from illustpose.geometry import heatmap_cell_xy  # noqa: E402
from illustpose.images import load_image  # noqa: E402
from illustpose.models.pose import PoseEstimator  # noqa: E402
from illustpose.models.segmenter import CharacterSegmenter  # noqa: E402
from illustpose.models.tagger import DanbooruTagger  # noqa: E402


def golden_checkpoints(tmp: Path) -> dict[str, Path]:
    """The golden state dicts written as the authors' Lightning files."""
    sys.path.insert(0, str(FIDELITY))
    import weights_rule as wr

    files = {}
    for model in ("segmenter", "tagger", "feat_match"):
        shapes = wr.key_shapes(model, include_unused=True)
        sd = {k: torch.from_numpy(np.asarray(v)) for k, v in wr.state_dict_for(model, shapes).items()}
        files[model] = write_lightning_ckpt(tmp / f"{model}.ckpt", model, sd,
                                            trainable_prefix="keypoint_head." if model == "feat_match" else "")
    write_rules_json(tmp / "rules.json")
    return files


def within_one_cell(results, goldens) -> tuple[int, int]:
    """(joints within one heatmap cell of the golden keypoints, joints exactly equal)."""
    near = exact = 0
    for r, g in zip(results, goldens):
        d = np.abs(r.keypoints - g["pose_keypoints_xy"])
        near += int(np.all(d <= heatmap_cell_xy(r.cropbox, g["pose_logits"].shape[-1]) + 1e-9, axis=1).sum())
        exact += int(np.all(d == 0, axis=1).sum())
    return near, exact


def measure(path: str, files: dict[str, Path], tmp: Path, images, goldens, device: str) -> str:
    precision, _, compiled = path.partition("+")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fp16 on a CPU: slow, measured anyway
        seg = CharacterSegmenter.from_pretrained(files["segmenter"], device=device, precision=precision)
        tag = DanbooruTagger.from_pretrained(files["tagger"], tags=tmp / "rules.json", device=device, precision=precision)
        pose = PoseEstimator.from_pretrained(files["feat_match"], device=device, precision=precision)
    if compiled:
        for det in (seg, tag, pose):
            det.compile()
    t = time.perf_counter()
    segs = [seg.segment([im])[0] for im in images]  # batch 1: the samples differ in size
    tags = tag.tag(images)
    staged = pose.estimate(images, [g["bbox_xywh"].tolist() for g in goldens])
    e2e = pose.estimate(images, [s.bbox_xywh for s in segs])
    seconds = time.perf_counter() - t
    boxes = np.array([s.bbox_xywh for s in segs], dtype=np.int64)
    gboxes = np.array([g["bbox_xywh"] for g in goldens])
    edges = lambda b: np.c_[b[:, :2], b[:, :2] + b[:, 2:]]  # noqa: E731  (x0, y0, x1, y1)
    shift = int(np.abs(edges(boxes) - edges(gboxes)).max())
    flips = sum(int(((t.logits > 0) != (g["tagger_logits"] > 0)).sum()) for t, g in zip(tags, goldens))
    near, exact = within_one_cell(staged, goldens)
    e2e_near, _ = within_one_cell(e2e, goldens)
    n = 25 * len(images)
    return (f"| {path} | {int((boxes == gboxes).all(1).sum())}/{len(images)} | {shift} | {near}/{n} ({near / n:.1%}) | "
            f"{exact}/{n} | {e2e_near}/{n} ({e2e_near / n:.1%}) | {flips}/{1062 * len(images)} | {seconds:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paths", default=None, help="comma-separated, e.g. fp32,fp32+compile,bf16")
    add_record_arguments(ap)
    args = ap.parse_args()
    if not SAMPLE_STEMS or not (FIDELITY / "weights_rule.py").is_file():
        sys.exit("needs ../shared/samples and ../shared/fidelity (the golden set)")
    cpu = args.device == "cpu"
    paths = (args.paths.split(",") if args.paths else
             ["fp32", "fp32+compile", "bf16", "bf16+compile", "fp16"] + ([] if cpu else ["fp16+compile"]))
    images = [load_image(SAMPLES / f"{s}.png") for s in SAMPLE_STEMS]
    goldens = [load_golden(s) for s in SAMPLE_STEMS]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = golden_checkpoints(tmp)
        rows = []
        for path in paths:
            rows.append(measure(path, files, tmp, images, goldens, args.device))
            print(rows[-1], flush=True)
    text = "\n".join([
        "| path | bboxes equal | max bbox shift px | pose stage: joints within one cell | pose stage: joints exact | "
        "end to end: joints within one cell | tag decisions flipped | run s (incl. compile) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *rows, "",
        "Against the reference's golden outputs, synthetic golden weights, the 8 sample illustrations at batch 1. "
        "Pose stage: crop from the golden bbox; end to end: crop from the path's own segmenter bbox. "
        "One heatmap cell = the crop's source size / 128 in image pixels.",
    ]) + "\n"
    record("bench_precision.py", args.device, text, args)


if __name__ == "__main__":
    main()
