"""Paths to ../shared (golden outputs, sample illustrations) and golden-file access for tests.

``ILLUSTPOSE_SHARED`` names another folder holding ``fidelity/`` and ``samples/`` (a copy
carried to a machine where ../shared is absent: benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ILLUSTPOSE_SHARED") or REPO.parent / "shared").resolve()
FIDELITY = SHARED / "fidelity"
SAMPLES = SHARED / "samples"
SAMPLE_STEMS = sorted(p.stem for p in SAMPLES.glob("*.png")) if SAMPLES.is_dir() else []


def load_golden(stem: str) -> dict:
    """The reference implementation's outputs for ``SAMPLES/<stem>.png`` (see FIDELITY/README.md)."""
    return dict(np.load(FIDELITY / "golden" / f"{stem}.npz"))
