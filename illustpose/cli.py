"""Command line: ``python -m illustpose annotate | weights | index | eval``.

Each command translates arguments into one library call and turns library errors
(:class:`~illustpose.errors.IllustposeError`) into one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .errors import IllustposeError
from .weights import POSE_MODELS

__all__ = ["main", "add_model_arguments", "build_pipeline"]

MODELS = ("segment", "tag", "pose")


def add_model_arguments(p: argparse.ArgumentParser, models: Sequence[str] = MODELS) -> None:
    """Weight-selection flags shared by every command that runs models."""
    g = p.add_argument_group("weights")
    if "segment" in models:
        g.add_argument("--segmenter", metavar="PATH", help="segmenter weights (.ckpt/.pth/.safetensors)")
    if "tag" in models:
        g.add_argument("--tagger", metavar="PATH", help="tagger weights")
        g.add_argument("--tags", metavar="PATH", help="tag names (rules JSON or one name per line) when the tagger file has none")
    if "pose" in models:
        g.add_argument("--pose", metavar="PATH", help="pose weights (feat_match/feat_concat .ckpt or converted .safetensors)")
        g.add_argument("--pose-model", choices=POSE_MODELS, default="feat_match",
                       help="pose model whose +data weights are used when --pose is not given (default feat_match)")
        g.add_argument("--rcnn-weights", metavar="PKL",
                       help="Detectron2 model-zoo keypoint_rcnn_R_101_FPN_3x .pkl, for a feat_concat head without R-CNN tensors")
    g.add_argument("--weights-dir", metavar="DIR", action="append", default=[],
                   help="extra folder to search for weight files (repeatable)")
    g.add_argument("--offline", action="store_true", help="never touch the network (also: HF_HUB_OFFLINE=1)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="compute precision: auto = fp16 on CUDA, fp32 (exact) on CPU; bf16 is faster on CPUs with bf16 support")
    p.add_argument("--exact", action="store_true", help="fp32, equal to the reference implementation (same as --precision fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks (first image of each size compiles for tens of seconds; "
                        "then ~1.3x faster on a CPU; fp32 stays within float tolerance of the reference)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads for the networks (default: PyTorch's, one per physical core)")


def _device(args) -> str:
    if args.device:
        return args.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def build_pipeline(args, models: Sequence[str] = ("segment", "pose")):
    """A :class:`~illustpose.pipeline.Pipeline` with the requested models, from the parsed flags."""
    from .pipeline import Pipeline
    from .pose import PoseEstimator
    from .segment import CharacterSegmenter
    from .tag import DanbooruTagger

    device = _device(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    precision = "fp32" if args.exact else args.precision
    if precision == "auto":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    common = dict(search_dirs=args.weights_dir, offline=args.offline or None, device=device, precision=precision)
    detectors = (
        CharacterSegmenter.from_pretrained(args.segmenter, **common) if "segment" in models else None,
        DanbooruTagger.from_pretrained(args.tagger, tags=args.tags, **common) if "tag" in models else None,
        PoseEstimator.from_pretrained(args.pose, weights=f"{args.pose_model}+data", rcnn_weights=args.rcnn_weights,
                                      **common) if "pose" in models else None,
    )
    if args.compile:
        for det in filter(None, detectors):
            det.compile()
    return Pipeline(*detectors)


def _output_stems(inputs: Sequence[str], recursive: bool, out: Path):
    """(image file, output stem) pairs: folders are mirrored under ``out``, files land at its root."""
    from .images import iter_image_files

    for item in inputs:
        base = Path(item)
        for f in iter_image_files([item], recursive=recursive):
            rel = f.relative_to(base) if base.is_dir() else Path(f.name)
            yield f, out / rel.with_suffix("")


def cmd_annotate(args) -> int:
    from tqdm import tqdm

    from .images import load_image
    from .outputs import write_annotation

    models = [m for m in MODELS if m not in args.skip]
    jobs = list(_output_stems(args.inputs, not args.no_recursive, Path(args.out)))
    if not jobs:
        print("annotate: no images found in " + ", ".join(args.inputs), file=sys.stderr)
        return 2
    pipe = build_pipeline(args, models)
    failed = 0
    bar = tqdm(total=len(jobs), unit="img", disable=len(jobs) < 2 or args.quiet)
    for start in range(0, len(jobs), args.batch_size):
        batch, images = [], []
        for f, stem in jobs[start:start + args.batch_size]:
            try:
                images.append(load_image(f))
                batch.append((f, stem))
            except IllustposeError as e:
                failed += 1
                tqdm.write(f"skipped: {e}", file=sys.stderr)
        try:
            annotations = pipe.annotate(images) if images else []
        except IllustposeError as e:
            failed += len(batch)
            tqdm.write(f"failed batch starting at {batch[0][0]}: {e}", file=sys.stderr)
            annotations = []
        for (f, stem), image, ann in zip(batch, images, annotations):
            write_annotation(stem, image, ann, tag_threshold=args.tag_threshold, underscores=args.keep_underscores,
                             exclude_tags=args.exclude_tags, max_tags=args.max_tags)
        bar.update(len(jobs[start:start + args.batch_size]))
    bar.close()
    done = len(jobs) - failed
    if not args.quiet:
        print(f"annotated {done} of {len(jobs)} images into {args.out}", file=sys.stderr)
    return 1 if failed else 0


def cmd_weights_convert(args) -> int:
    from .convert import convert

    dst = convert(args.src, args.out, tags=args.tags)
    print(f"wrote {dst}")
    return 0


def cmd_weights_list(args) -> int:
    from .weights import known_files

    for f in known_files():
        size = f"{f.size / 1e6:.0f} MB" if f.size else "size unknown"
        print(f"{f.model:18s} {f.name}  ({f.format}, {f.source}, {size})")
    return 0


def cmd_weights_download(args) -> int:
    from .weights import resolve

    for kind in args.kinds:
        print(resolve(kind, search_dirs=args.weights_dir, offline=False))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m illustpose", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("annotate", help="mask, cutout, tags and pose for images or folders")
    a.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER")
    a.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    a.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    a.add_argument("--skip", action="append", choices=MODELS, default=[], help="do not run this model (repeatable)")
    a.add_argument("--tag-threshold", type=float, default=0.5, help="score for a tag to enter NAME.tags.txt (default 0.5)")
    a.add_argument("--keep-underscores", action="store_true", help="keep underscores in NAME.tags.txt")
    a.add_argument("--exclude-tags", default="", metavar="T1,T2", help="comma-separated tags left out of NAME.tags.txt")
    a.add_argument("--max-tags", type=int, default=0, help="at most this many tags in NAME.tags.txt (0 = all)")
    a.add_argument("--no-recursive", action="store_true", help="do not descend into sub-folders")
    a.add_argument("--quiet", action="store_true")
    add_model_arguments(a)
    a.set_defaults(func=cmd_annotate)

    w = sub.add_parser("weights", help="list, download or convert weight files").add_subparsers(dest="action", required=True)
    c = w.add_parser("convert", help="convert a .ckpt/.pth/.safetensors to illustpose .safetensors")
    c.add_argument("src")
    c.add_argument("--out", required=True, help="destination .safetensors")
    c.add_argument("--tags", help="tag names for a tagger whose file carries none")
    c.set_defaults(func=cmd_weights_convert)
    w.add_parser("list", help="the known weight files").set_defaults(func=cmd_weights_list)
    d = w.add_parser("download", help="download weights into the first --weights-dir (or the pack's weights/)")
    d.add_argument("kinds", nargs="+", help="model kinds, e.g. segmenter tagger tags feat_match+data")
    d.add_argument("--weights-dir", action="append", default=[])
    d.set_defaults(func=cmd_weights_download)

    try:
        from .retrieval.cli import register as register_index
    except ImportError:  # pragma: no cover - the index is part of the package
        register_index = None
    if register_index:
        register_index(sub, add_model_arguments, build_pipeline)
    try:
        from .evaluation import register as register_eval
    except ImportError:  # pragma: no cover
        register_eval = None
    if register_eval:
        register_eval(sub, add_model_arguments, build_pipeline)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 some inputs failed, 2 error)."""
    args = _parser().parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        print("--batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except IllustposeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
