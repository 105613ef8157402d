"""Paths to ../shared (golden outputs, sample illustrations) and golden-file access for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIDELITY = SHARED / "fidelity"
SAMPLES = SHARED / "samples"
SAMPLE_STEMS = sorted(p.stem for p in SAMPLES.glob("*.png")) if SAMPLES.is_dir() else []


def load_golden(stem: str) -> dict:
    """The reference implementation's outputs for ``SAMPLES/<stem>.png`` (see FIDELITY/README.md)."""
    return dict(np.load(FIDELITY / "golden" / f"{stem}.npz"))
