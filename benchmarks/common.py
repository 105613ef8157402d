"""What every benchmark script shares: the machine's description and recording results.

``record`` prints a run's Markdown and appends it under a dated heading that names the machine:
on a CPU its model, cores, the SIMD flags that decide the speed paths (AVX2, AVX-512, bf16,
AMX), torch and threads; on CUDA the GPU, its memory, the NVIDIA driver, CUDA, cuDNN and torch.
The scripts take ``--no-record`` (print only) and ``--results FILE`` (append elsewhere than
benchmarks/RESULTS.md, e.g. under ``$OUT`` on a lent GPU machine: benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

#: the /proc/cpuinfo flags that decide CPU speed paths
_SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; the platform's machine name and no flags elsewhere."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name or platform.processor() or platform.machine(), flags


def cpu_flags() -> str:
    """The CPU's speed-path flags present here (e.g. ``"avx2 avx512f avx512_bf16"``), or ``"none"``."""
    flags = _cpuinfo()[1]
    return " ".join(f for f in _SPEED_FLAGS if f in flags) or "none"


def nvidia_driver() -> str:
    """The NVIDIA driver version from ``nvidia-smi``, or ``"unknown"`` where it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "unknown"
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def machine(device: str = "cpu") -> str:
    """One line naming the machine a run measured, for a results heading.

    CUDA: ``"NVIDIA H200 (139.8 GiB), driver 580.159.04, CUDA 13.0, cuDNN 91002, torch 2.11.0+cu130,
    host <cpu>, 16 cores"``; CPU: ``"<cpu>, 2 cores, flags avx2 avx512f, torch 2.15.0, 2 threads"``.
    """
    cpu, _ = _cpuinfo()
    if str(device).startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        return (f"{props.name} ({props.total_memory / 2**30:.1f} GiB), driver {nvidia_driver()}, "
                f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, torch {torch.__version__}, "
                f"Python {platform.python_version()}, host {cpu}, {os.cpu_count()} cores")
    return (f"{cpu}, {os.cpu_count()} cores, flags {cpu_flags()}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, {torch.get_num_threads()} threads")


def add_record_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-record`` and ``--results FILE`` to a script's arguments."""
    parser.add_argument("--no-record", action="store_true", help="print only, append nothing")
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="FILE",
                        help="the Markdown file to append to (default: benchmarks/RESULTS.md)")


def record(script: str, device: str, text: str, args: argparse.Namespace | None = None, *, echo: bool = True) -> None:
    """Print a run's Markdown (unless ``echo`` is False: a script that printed each table as it
    went) and, unless ``args.no_record``, append it to ``args.results`` (default
    benchmarks/RESULTS.md) under ``## <script>, <device>: <date>, <machine>``."""
    if echo:
        print(text, flush=True)
    if args is not None and args.no_record:
        return
    path = args.results if args is not None else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"\n## {script}, {device}: {datetime.date.today()}, {machine(device)}\n\n{text}")
