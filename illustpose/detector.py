"""What every detector shares: a network in eval mode on a device, built from a checkpoint."""

from __future__ import annotations

import contextlib
import gc
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .checkpoints import Checkpoint, read_checkpoint

__all__ = ["Detector", "PRECISIONS", "AUTO_PRECISION", "native_bf16_cpu", "resolve_precision", "check_device",
           "compile_cache_dir"]

#: Compute precisions.  ``fp32`` is the exact path (equal to the reference, golden-tested; TF32 is
#: switched off on CUDA).  ``bf16``/``fp16`` store the convolution and linear weights in that
#: dtype (half the weight memory) and run the network under ``torch.autocast`` in channels-last
#: layout: faster (bf16 on CPUs with native bf16, fp16 on CUDA GPUs) but not equal to the
#: reference (measured agreement: docs/precision.md).
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

#: The precision choice that picks per device: :func:`resolve_precision`.
AUTO_PRECISION = "auto"

#: /proc/cpuinfo flags of native bf16 arithmetic: x86 AVX512-BF16 and AMX-BF16, Arm's BF16 extension
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


def native_bf16_cpu() -> bool:
    """True when this machine's CPU has native bf16 arithmetic (AVX512-BF16, AMX-BF16 or Arm
    BF16), read from the ``flags``/``Features`` lines of ``/proc/cpuinfo``.  False where they
    are absent or cannot be read (not Linux): a fast path is never assumed.  Without them,
    PyTorch emulates bf16 and runs about 7x slower than fp32 (benchmarks/RESULTS.md)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return not _BF16_FLAGS.isdisjoint(value.split())
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """The compute precision to use: ``precision`` itself, or for ``"auto"`` fp16 on a CUDA GPU
    and fp32 (exact, equal to the reference) on a CPU.

    ``auto`` never picks bf16 on a CPU, even one with native bf16: there it is about 2x faster
    but moves about 7% of the keypoints by a heatmap cell on the golden weights
    (docs/precision.md), and a default must not depend on which CPU a machine has.

    Raises:
        ValueError: an unknown precision.
    """
    if precision == AUTO_PRECISION:
        return "fp16" if torch.device(device).type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be {AUTO_PRECISION} or one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


#: Modules whose weights a half precision stores in half; normalisation layers keep float32
#: statistics (autocast feeds them half inputs, as in standard mixed precision).
_HALF_STORED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@contextlib.contextmanager
def _no_tf32():
    """Exact float32 on CUDA: cuDNN convolutions and cuBLAS matmuls without TF32 (PyTorch lets
    cuDNN use TF32 by default, which rounds inputs to 10 mantissa bits); restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class Detector:
    """Base of :class:`~illustpose.models.segmenter.CharacterSegmenter`,
    :class:`~illustpose.models.tagger.DanbooruTagger` and
    :class:`~illustpose.models.pose.PoseEstimator`: load once, call many times.

    Attributes:
        net: the ``nn.Module`` in eval mode.
        source: the weight file it came from (for messages and metadata).
        kind: the architecture (``"segmenter"``, ``"tagger"``, ``"feat_match"``, ``"feat_concat"``).
    """

    #: the registry task (``"segment"``, ``"tag"``, ``"pose"``) whose weights this class runs
    task: str = ""

    def __init__(self, net: nn.Module, *, source: str = "", kind: str = ""):
        self.net = net.eval()
        self.source = source
        self.kind = kind
        self.precision = "fp32"
        self._compiled: Callable | None = None

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device | None = None, *, precision: str | None = None) -> "Detector":
        """Move the network and/or set its compute precision; returns self.

        Going from ``fp32`` to ``bf16``/``fp16`` casts the convolution and linear weights in
        place (weight memory halves); the float32 values are not kept, so a detector already
        in half precision cannot go back: load it again at the precision wanted.

        Args:
            device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (unchanged when None).
            precision: one of :data:`PRECISIONS` (unchanged when None).

        Raises:
            ValueError: an unknown precision, a change away from a half precision, or any
                change after :meth:`compile`.
        """
        if self._compiled is not None and (precision not in (None, self.precision) or
                                           (device is not None and torch.device(device) != self.device)):
            raise ValueError("this detector is compiled with its weights frozen in; set device and precision "
                             "before compile(), or load it again")
        if precision is not None and precision != self.precision:
            if precision not in PRECISIONS:
                raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
            if self.precision != "fp32":
                raise ValueError(
                    f"{self.kind or 'detector'} weights are stored in {self.precision}, so {precision} cannot "
                    f"restore them; load it again with precision={precision!r}"
                )
            for m in self.net.modules():
                if isinstance(m, _HALF_STORED):
                    m.to(PRECISIONS[precision])
                else:  # own copies of the float32 rest: a view would keep a mapped checkpoint resident
                    m._apply(torch.clone, recurse=False)
            self.net.to(memory_format=torch.channels_last)
            self.precision = precision
        if device is not None and torch.device(device) != self.device:
            self.net.to(device)
            if torch.device(device).type == "cuda":
                torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        if precision == "fp16" and self.device.type == "cpu":
            warnings.warn("fp16 on a CPU has no native kernels and runs about 6x slower than fp32; "
                          "use fp32 (or bf16 on a CPU with native bf16)", stacklevel=2)
        elif precision == "bf16" and self.device.type == "cpu" and not native_bf16_cpu():
            warnings.warn("bf16 on this CPU (no AVX512-BF16, AMX or Arm BF16) is emulated and runs about 7x "
                          "slower than fp32; use fp32 (--precision auto)", stacklevel=2)
        return self

    #: input dimensions a compiled detector marks dynamic on each call: the batch, and for a
    #: detector whose input size follows the image (the segmenter) height and width too
    dynamic_dims: tuple[int, ...] = (0,)

    def compile(self) -> "Detector":
        """Run the network through ``torch.compile`` (inductor) with frozen weights; returns self.

        Freezing folds each BatchNorm into its convolution and pre-packs the weights, so the
        results equal the eager ones only to float rounding (within the golden tolerances in
        fp32, tested), not bit for bit.  Compiling happens at the first call: tens of seconds
        on a small CPU, so it pays for batch runs over many images (measured speed-ups in
        benchmarks/RESULTS.md).  Two things keep that cost from coming back:

        * persistent caches: torch's compiled graphs and kernels are kept in
          ``TORCHINDUCTOR_CACHE_DIR`` (when unset it is set, for this process, to
          :func:`compile_cache_dir`), so another process compiling the same network on the
          same machine and torch version reuses them;
        * dynamic shapes: each call marks :attr:`dynamic_dims` of its input dynamic, so one
          graph serves every batch size past 1 (PyTorch gives batch size 1 a graph of its own)
          and, for the segmenter, every image size: on the CPU as fast per image as a graph
          compiled for one size (benchmarks/RESULTS.md).

        Call it after :meth:`to`; compile errors (e.g. no C++ compiler for the CPU backend)
        surface at that first call.
        """
        if self._compiled is None:
            os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache_dir()))
            self._compiled = torch.compile(self.net, options={"freezing": True})
        return self

    def _numerics(self):
        """The context a forward pass runs in: autocast for half precisions, no TF32 for fp32 on CUDA."""
        if self.precision != "fp32":
            return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])
        return _no_tf32() if self.device.type == "cuda" else contextlib.nullcontext()

    def _input(self, batch: torch.Tensor) -> torch.Tensor:
        """A CPU batch moved to the network's device (pinned, asynchronous copy on CUDA) and layout."""
        device = self.device
        if device.type == "cuda":
            batch = batch.pin_memory().to(device, non_blocking=True)
        else:
            batch = batch.to(device)
        if self.precision != "fp32":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Run the network on a CPU batch at the detector's precision; float32 output on the CPU."""
        with torch.inference_mode(), self._numerics():
            batch = self._input(batch)
            if self._compiled is None:
                return self.net(batch).float().cpu()
            for dim in self.dynamic_dims:
                torch._dynamo.maybe_mark_dynamic(batch, dim)
            return self._compiled(batch).float().cpu()

    def checkpoint_metadata(self) -> dict[str, str]:
        """String metadata ``weights convert`` stores beside the tensors (the tagger's tag names)."""
        return {}

    @classmethod
    def default_weights(cls) -> str:
        """The registry name of the weights used when none are named (``feat_match+data``)."""
        from .registry import default_weights

        return default_weights(cls.task).name

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, **kwargs) -> "Detector":  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        *,
        weights: str | None = None,
        search_dirs: Sequence[str | os.PathLike] = (),
        offline: bool | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        **kwargs,
    ):
        """Find (or download), read and load weights.

        Args:
            path: an explicit weight file (``.ckpt``, ``.pth``, ``.safetensors``); wins over
                everything else.
            weights: a registry weights name (:func:`illustpose.registry.list_weights`, e.g.
                ``"feat_concat+data"``; default: :meth:`default_weights`).
            search_dirs: extra folders to look in first (ComfyUI's ``models/illustpose``).
            offline: never download (default: the ``HF_HUB_OFFLINE`` environment variable).
            device: where to put the network.
            precision: ``"fp32"`` (exact, default), ``"bf16"`` or ``"fp16"`` (see :data:`PRECISIONS`).

        Raises:
            WeightsNotFoundError: nothing found and no download possible (the message lists
                what to get and where to put it).
            CheckpointError, UnsafeCheckpointError, WrongModelError: a bad or wrong file.
        """
        from .weights import resolve

        file = resolve(weights or cls.default_weights(), path, search_dirs=search_dirs, offline=offline)
        gc_was_on = gc.isenabled()
        gc.disable()  # building a network makes thousands of objects: no collector passes meanwhile
        try:
            det = cls.from_checkpoint(read_checkpoint(file), search_dirs=search_dirs, **kwargs)
        finally:
            if gc_was_on:
                gc.enable()
        return det.to(device, precision=precision)


def compile_cache_dir() -> Path:
    """Where :meth:`Detector.compile` keeps torch's compile caches unless ``TORCHINDUCTOR_CACHE_DIR``
    says otherwise: ``compile`` in illustpose's user cache folder (``$XDG_CACHE_HOME/illustpose``,
    else ``~/.cache/illustpose``).  Deleting it only costs the next compile its full time."""
    from .weights import user_cache_dir

    return user_cache_dir() / "compile"


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, once it is known to exist on this machine.

    Checks the name (``cpu``, ``cuda``, ``cuda:1``, ``mps``, ...) and, for an accelerator, that
    PyTorch can use it and that the index is below the number of devices, so a wrong device
    fails here in one line instead of deep inside PyTorch when the first weights move.

    Raises:
        DeviceError: not a device name (e.g. ``"gpu"``), no such accelerator, or no such index.
    """
    from .errors import DeviceError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"device {str(device)!r} is not a device name; use cpu, cuda, cuda:N "
                          "(N counts from 0) or mps") from None
    backend = getattr(torch, dev.type, None) if dev.type != "cpu" else None
    if backend is None or not hasattr(backend, "is_available"):
        return dev
    if not backend.is_available():
        why = ("this PyTorch build has no CUDA support" if dev.type == "cuda" and torch.version.cuda is None
               else "no usable GPU or driver")
        raise DeviceError(f"device {str(device)!r}: PyTorch finds no {dev.type.upper()} device on this "
                          f"machine ({why}); use cpu (--device cpu)")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if dev.index is not None and dev.index >= count:
        raise DeviceError(f"device {str(device)!r}: this machine has {count} {dev.type.upper()} "
                          f"device(s), numbered from 0; use {dev.type}:0 to {dev.type}:{count - 1}")
    return dev
