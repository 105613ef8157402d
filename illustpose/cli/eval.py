"""``eval``: the reference's pose metrics (and COCO AP) on COCO keypoint ground truth (:mod:`illustpose.evaluation`)."""

from __future__ import annotations

import argparse
import json
from importlib.util import find_spec
from pathlib import Path

from ..errors import EvaluationError
from ..registry import architectures
from . import pipeline as _pipeline
from .pipeline import add_model_arguments, positive_int, say

__all__ = ["register"]

_AP_COLUMNS = ("AP", "AP50", "AP75", "AR")
_LISTED = 5  # names shown when reporting many images


def _model_predictions(args, records) -> list[dict]:
    """Run the segmenter + pose pipeline the flags select on the annotated images."""
    from ..evaluation import predict

    if not args.images:
        raise EvaluationError("--images DIR is required to run the models (or pass --predictions PRED.json)")
    if not Path(args.images).is_dir():
        raise EvaluationError(f"--images {args.images}: no such folder; give the folder the annotations' "
                              "file_name entries are relative to")
    pipeline = _pipeline.build_pipeline(args, ("segment", "pose"))
    results, _ = predict(pipeline, records, args.images, batch_size=args.batch_size, progress=True, report=say)
    return results


def _file_predictions(path: str, records) -> list[dict]:
    """Predictions read from ``path``; images of the file not in the ground truth are reported."""
    from ..evaluation import read_predictions

    loaded = read_predictions(path, records)
    if loaded.ignored:
        shown = ", ".join(loaded.ignored[:_LISTED])
        say(f"ignored predictions of {len(loaded.ignored)} images not in the ground truth: {shown}")
    return loaded.predictions


def _ap_line(records, predictions) -> str | None:
    """COCO keypoint AP / AR in percent, or None when pycocotools is not installed."""
    from ..evaluation import coco_ap

    if find_spec("pycocotools") is None:
        return None
    stats = coco_ap(records, predictions, skip_missing=True)
    cells = "  ".join(f"{k} " + ("-" if stats[k] < 0 else f"{100 * stats[k]:.1f}") for k in _AP_COLUMNS)
    return f"COCO keypoint AP (pycocotools, standard OKS): {cells}"


def run(args) -> int:
    """Predictions (run or read) -> table on stdout, optional JSON; 1 if some images were not scored."""
    from ..datasets import read_coco
    from ..evaluation import evaluate_predictions, file_names, save_predictions
    from ..fileio import write_text
    from ..metrics import format_table

    records = [r for r in read_coco(args.annotations) if r.annotations]
    if not records:
        raise EvaluationError(f"{args.annotations}: no image has a keypoint annotation, so there is nothing to score")
    if args.predictions:
        predictions = _file_predictions(args.predictions, records)
    else:
        predictions = _model_predictions(args, records)
    if not predictions:
        source = args.predictions or "the pipeline (every image failed, see above)"
        raise EvaluationError(f"no prediction for any of the {len(records)} annotated images from {source}")
    if args.save_predictions:
        save_predictions(args.save_predictions, records, predictions)
    covered = {det.get("image_id") for det in predictions}
    missing = [r for r in records if r.id not in covered]
    summary = evaluate_predictions(records, predictions, skip_missing=True)
    print(format_table(summary))
    line = _ap_line(records, predictions)
    if line:
        print(line)
    if args.json:
        write_text(args.json, json.dumps(summary, indent=1, allow_nan=False) + "\n")
    if missing:
        say(f"not scored: {len(missing)} of {len(records)} annotated images have no prediction "
             f"({file_names(missing)})")
    return 1 if missing else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command."""
    p = subparsers.add_parser(
        "eval",
        help="score poses against COCO keypoint ground truth (PDJ, PCKh, OKS, PCP; COCO AP)",
        description="Run the pose pipeline on every annotated image (or read --predictions) and print the "
                    "reference's metrics per joint, like the paper's Table 1. See docs/evaluation.md.",
    )
    p.add_argument("--annotations", required=True, metavar="COCO.json", help="ground truth: a COCO keypoint JSON file")
    p.add_argument("--images", metavar="DIR",
                   help="folder the annotations' file_name entries are relative to (needed unless --predictions)")
    p.add_argument("--predictions", metavar="PRED.json",
                   help="score this file instead of running the models: a COCO results list or a COCO keypoint "
                        "file (e.g. from --save-predictions)")
    p.add_argument("--json", metavar="PATH", help="also write the summary as JSON here")
    p.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                   help="images per forward pass (default 1)")
    p.add_argument("--save-predictions", metavar="PRED.json",
                   help="write the predictions as a COCO keypoint file (to correct in CVAT / Label Studio)")
    add_model_arguments(p, ("segment", "pose"))
    # the older spelling, kept hidden: the same option as --pose-model
    p.add_argument("--model", dest="pose_model", choices=architectures("pose"), default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.set_defaults(func=run)
