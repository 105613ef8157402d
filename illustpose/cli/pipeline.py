"""The weight and compute flags every model-running command shares, and the pipeline they build.

The flags come from the registry (:mod:`illustpose.registry`), never written per model: each
task gets ``--<flag> PATH`` (``--segmenter``, ``--tagger``, ``--pose``), a task with several
architectures a ``--<flag>-model`` choice (``--pose-model feat_match|feat_concat``), and each
further file a model's loader takes its own flag (``--tags``, ``--rcnn-weights``).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

from ..registry import TASKS, architecture_weights, architectures, default_weights, file_options, get_weights

__all__ = ["TASK_NAMES", "add_model_arguments", "add_recursive_argument", "file_arguments", "build_pipeline",
           "device", "precision", "weight_files", "positive_int", "non_negative_int",
           "positive_float", "non_negative_float", "say"]

#: every task, in pipeline order (``annotate --skip`` takes these)
TASK_NAMES = tuple(t.name for t in TASKS)


def say(message: str) -> None:
    """One line on stderr, kept clear of a running tqdm bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _whole_number(text: str, least: int) -> int:
    try:
        n = int(text)
    except ValueError:
        n = least - 1
    if n < least:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
    return n


def positive_int(text: str) -> int:
    """argparse ``type``: a whole number >= 1 (anything else is a one-line usage error)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """argparse ``type``: a whole number >= 0 (anything else is a one-line usage error)."""
    return _whole_number(text, 0)


def _finite_number(text: str, zero_allowed: bool) -> float:
    try:
        x = float(text)
    except ValueError:
        x = math.nan
    if not (math.isfinite(x) and (x >= 0 if zero_allowed else x > 0)):
        raise argparse.ArgumentTypeError(f"expected a finite number {'>=' if zero_allowed else '>'} 0, got {text!r}")
    return x + 0.0  # -0.0 -> 0.0


def positive_float(text: str) -> float:
    """argparse ``type``: a finite number > 0 (``1e-4``, ``0.5``); anything else is a one-line usage error."""
    return _finite_number(text, zero_allowed=False)


def non_negative_float(text: str) -> float:
    """argparse ``type``: a finite number >= 0 (``0``, ``0.00``, ``0e0``, ``2.5``); anything else is a
    one-line usage error."""
    return _finite_number(text, zero_allowed=True)


def add_recursive_argument(p: argparse.ArgumentParser) -> None:
    """``--recursive`` / ``--no-recursive``, the same default for every command that walks folders."""
    p.add_argument("--recursive", action=argparse.BooleanOptionalAction, default=True,
                   help="descend into sub-folders of a folder given (default; --no-recursive: its images only)")


def file_arguments(args: argparse.Namespace, task: str | None = None) -> dict:
    """``{keyword: value}`` of the further-file flags of ``task`` (all tasks when None)."""
    return {o.keyword: getattr(args, o.keyword) for o in file_options(task)}


def add_model_arguments(p: argparse.ArgumentParser, tasks: Sequence[str] = TASK_NAMES) -> None:
    """Add the weight-selection flags of ``tasks`` and the device / precision / speed flags."""
    g = p.add_argument_group("weights")
    for task in (t for t in TASKS if t.name in tasks):
        archs = architectures(task.name)
        g.add_argument(f"--{task.flag}", metavar="PATH",
                       help=f"{task.noun} weights (.ckpt/.pth/.safetensors; default: the "
                            f"{default_weights(task.name).name} weights, found or downloaded)")
        if len(archs) > 1:
            preferred = ", ".join(architecture_weights(a).name for a in archs)
            g.add_argument(f"--{task.flag}-model", choices=archs, default=archs[0],
                           help=f"{task.noun} architecture; its weights ({preferred}) are used when "
                                f"--{task.flag} is not given (default {archs[0]})")
        for option in file_options(task.name):
            g.add_argument(option.flag, metavar=option.metavar, help=option.help)
    g.add_argument("--weights-dir", metavar="DIR", action="append", default=[],
                   help="extra folder to search for weight files (repeatable)")
    g.add_argument("--offline", action="store_true", help="never touch the network (also: HF_HUB_OFFLINE=1)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="compute precision: auto = fp16 on CUDA, fp32 (exact) on every CPU; bf16 is about 2x "
                        "faster on CPUs with native bf16 and about 7x slower (with a warning) on others")
    p.add_argument("--exact", action="store_true",
                   help="fp32, equal to the reference implementation (same as --precision fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks (first image of each size compiles for tens of seconds; "
                        "then ~1.3x faster on a CPU; fp32 stays within float tolerance of the reference)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="CPU threads for the networks (default: PyTorch's, one per physical core)")


def device(args) -> str:
    """``--device`` once checked (:func:`illustpose.detector.check_device`), else ``cuda`` when a
    CUDA GPU is available, else ``cpu``.

    Raises:
        DeviceError: ``--device`` is not a device name or names hardware this machine lacks.
    """
    if args.device:
        from ..detector import check_device

        check_device(args.device)
        return args.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _weights_name(args, task) -> str:
    """The registry weights a task uses when no file is given: the chosen architecture's preferred ones."""
    arch = getattr(args, f"{task.flag.replace('-', '_')}_model", None)
    return architecture_weights(arch).name if arch else default_weights(task.name).name


def precision(args, dev: str) -> str:
    """The compute precision the flags choose on device ``dev`` (``--exact`` wins)."""
    from ..detector import resolve_precision

    return "fp32" if args.exact else resolve_precision(args.precision, dev)


def weight_files(args, tasks: Sequence[str]) -> list:
    """``(task, weights name, file)`` for each of ``tasks``, every file found (or downloaded)
    before any is loaded, so all that is missing is reported at once
    (:func:`illustpose.weights.resolve_all`)."""
    from ..weights import resolve_all

    chosen = [(task, _weights_name(args, task)) for task in TASKS if task.name in tasks]
    flags = ", ".join(f"--{task.flag} PATH" for task, _ in chosen)
    skip = " (or leave a model out with --skip " + "/".join(t.name for t, _ in chosen) + ")" if "skip" in args else ""
    files = resolve_all([(weights, getattr(args, task.flag.replace("-", "_"))) for task, weights in chosen],
                        search_dirs=args.weights_dir, offline=args.offline or None,
                        path_hint=f"pass the files with {flags}, or another folder with --weights-dir DIR{skip}")
    return [(task, weights, file) for (task, weights), file in zip(chosen, files)]


def build_pipeline(args, tasks: Sequence[str] = ("segment", "pose")):
    """A :class:`~illustpose.pipeline.Pipeline` with the detectors of ``tasks``, from the parsed flags.

    Every weight file is found (or downloaded) before any is loaded, so all that is missing is
    reported at once (:func:`illustpose.weights.resolve_all`).

    Raises:
        DeviceError: a wrong ``--device``.
        WeightsNotFoundError, CheckpointError: as :meth:`illustpose.detector.Detector.from_pretrained`.
    """
    from ..pipeline import Pipeline

    dev = device(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    common = dict(search_dirs=args.weights_dir, offline=args.offline or None, device=dev,
                  precision=precision(args, dev))
    detectors = {}
    for task, weights, file in weight_files(args, tasks):
        detectors[task.name] = get_weights(weights).detector_class.from_pretrained(
            file, weights=weights, **common, **file_arguments(args, task.name))
    if args.compile:
        for det in detectors.values():
            det.compile()
    return Pipeline(detectors.get("segment"), detectors.get("tag"), detectors.get("pose"))
