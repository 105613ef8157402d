"""``finetune``: adapt a pose model to your own drawings (:mod:`illustpose.finetune`, docs/finetune.md)."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from . import pipeline as _pipeline
from .pipeline import add_model_arguments, non_negative_float, non_negative_int, positive_float, positive_int, say

__all__ = ["register"]


def run(args) -> int:
    """Resolve the base pose weights as ``annotate`` does, then train; 0 when the run finished."""
    from ..finetune import FinetuneConfig, finetune

    if args.compile or args.precision not in ("auto", "fp32"):
        raise UsageError("finetune trains in fp32: drop --compile and --precision")
    dev = _pipeline.device(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    [(_, _, base)] = _pipeline.weight_files(args, ("pose",))
    segmenter = _pipeline.build_pipeline(args, ("segment",)).segmenter if args.boxes == "segmenter" else None
    config = FinetuneConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                            lambda_match=args.lambda_match, seed=args.seed, augment=args.augment, sigma=args.sigma,
                            device=dev)
    say(f"fine-tuning {base} on {dev}")
    result = finetune(base, args.annotations, args.images, args.out, config=config, val_annotations=args.val,
                      val_images_dir=args.val_images, resume=args.resume, rcnn_weights=args.rcnn_weights,
                      segmenter=segmenter,
                      report=say, progress=True)
    print(f"wrote {result.out} (epoch {result.best_epoch} of {result.epochs})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``finetune`` command."""
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune the pose model on your own annotated drawings (COCO keypoints)",
        description="Train the pose model's head on COCO keypoint annotations of your drawings, as the reference "
                    "trains it (trunk and Keypoint R-CNN frozen), and write a .safetensors that works wherever a "
                    "pose file does. See docs/finetune.md.",
    )
    p.add_argument("--images", required=True, metavar="DIR",
                   help="folder the annotations' file_name entries are relative to")
    p.add_argument("--annotations", required=True, metavar="COCO.json", help="training annotations (COCO keypoints)")
    p.add_argument("--out", required=True, metavar="OUT.safetensors", help="the fine-tuned weights to write")
    p.add_argument("--val", metavar="COCO.json",
                   help="held-out annotations scored after every epoch (PDJ, PCKh); the best epoch is kept")
    p.add_argument("--val-images", metavar="DIR", help="folder of the --val images (default: --images)")
    p.add_argument("--epochs", type=positive_int, default=10, metavar="N", help="passes over the data (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=4, metavar="B",
                   help="images per forward pass: character crops per optimiser step (default 4)")
    p.add_argument("--lr", type=positive_float, default=None, metavar="LR",
                   help="Adam learning rate (default: the base file's margs.lr)")
    p.add_argument("--lambda-match", type=non_negative_float, default=None, metavar="L",
                   help="feat_match's matching-loss weight (default: the file's margs.lambda_match; 0 skips the "
                        "Keypoint R-CNN: several times faster on a CPU, not the reference's training)")
    p.add_argument("--sigma", type=positive_float, default=None, metavar="CELLS",
                   help="width of the Gaussian targets in heatmap cells (default heatmap side / 32)")
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                   help="seeds the order and the augmentation (default 0)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="flip / scale / rotation jitter (default on; --no-augment: the inference crops as they are)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run that wrote --out (same data and settings)")
    p.add_argument("--boxes", choices=("annotations", "segmenter"), default="annotations",
                   help="what crops each drawing: its annotation's bbox (default), or the segmenter's character "
                        "box overlapping it most, as annotate crops (weights: --segmenter, found or downloaded)")
    add_model_arguments(p, ("segment", "pose"))
    p.set_defaults(func=run)
