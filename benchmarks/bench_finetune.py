"""Fine-tuning cost: seconds per epoch for 20 annotated drawings at the released sizes.

Random weights (the architecture alone sets the cost): a feat_match network at the released
sizes (256 px crop, 128 heatmap) with a random Keypoint R-CNN under ``rcnn.model.*``, as in the
authors' checkpoint, saved as safetensors.  The 20 drawings are the 8 sample illustrations of
../shared/samples, listed again until there are 20 annotations (tests/data/samples_coco.json).
Each setting trains ``--epochs`` epochs (batch 4, augmentation on) and reports the mean time
of an epoch after the first (the first also pays one-off costs):

* ``lambda_match 0``: the heatmap loss alone (the Keypoint R-CNN never runs);
* ``lambda_match 1``: the reference's training, the R-CNN's ``features_last`` on every crop;
* ``--val``: the same 20 annotations scored after each epoch (added to the epoch time).

    .venv/bin/python benchmarks/bench_finetune.py [--epochs 2] [--device cpu] [--threads 2] [--no-record]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from common import add_record_arguments, machine, record  # noqa: E402
from illustpose.checkpoints import save_safetensors  # noqa: E402
from illustpose.finetune import FinetuneConfig, finetune  # noqa: E402
from illustpose.models.feat_match import FeatMatchPoseNet  # noqa: E402
from illustpose.models.keypoint_rcnn import KeypointRCNNBranch  # noqa: E402
from shared_data import SAMPLES  # noqa: E402

HPARAMS = {"largs": {"danbooru_coco": {"size": 256, "padding": 0.1}, "danbooru_sfw": {"size": 256}},
           "margs": {"size": 128, "lr": 0.001, "lambda_match": 1.0}}


def twenty_annotations(path: Path) -> Path:
    doc = json.loads((ROOT / "tests" / "data" / "samples_coco.json").read_text())
    images, annotations = [], []
    for i in range(20):
        img = dict(doc["images"][i % len(doc["images"])], id=i + 1)
        src = next(a for a in doc["annotations"] if a["image_id"] == doc["images"][i % len(doc["images"])]["id"])
        images.append(img)
        annotations.append(dict(src, id=i + 1, image_id=i + 1))
    path.write_text(json.dumps(dict(doc, images=images, annotations=annotations)))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    add_record_arguments(p)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sd = {**FeatMatchPoseNet().state_dict(),
          **{f"rcnn.model.{k}": v * 0.01 for k, v in KeypointRCNNBranch().state_dict().items()}}
    rows = ["| setting | s / epoch (20 crops) | s / crop |", "| --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base = tmp / "base.safetensors"
        save_safetensors(base, sd, model="feat_match", hparams=HPARAMS)
        ann = twenty_annotations(tmp / "twenty.json")
        for label, lam, val in (("lambda_match 0", 0.0, False), ("lambda_match 1 (reference)", 1.0, False),
                                ("lambda_match 0, --val", 0.0, True)):
            stamps = []
            config = FinetuneConfig(epochs=args.epochs, batch_size=4, lambda_match=lam, device=args.device)
            start = time.perf_counter()
            finetune(base, ann, SAMPLES, tmp / "out.safetensors", config=config, val_annotations=ann if val else None,
                     report=lambda line: stamps.append(time.perf_counter()))
            times = [b - a for a, b in zip([start, *stamps], stamps)]
            per_epoch = sum(times[1:]) / len(times[1:]) if len(times) > 1 else times[0]
            rows.append(f"| {label} | {per_epoch:.1f} | {per_epoch / 20:.2f} |")
            print(rows[-1], flush=True)
    text = (f"Random weights at the released sizes (256 px crop, 128 heatmap), batch 4, augmentation on, "
            f"{args.epochs} epochs, mean of the epochs after the first; {machine(args.device)}.\n\n"
            + "\n".join(rows) + "\n")
    record("bench_finetune.py", args.device, text, args)


if __name__ == "__main__":
    main()
