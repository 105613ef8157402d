"""Deterministic synthetic poses for the pose-index tests (and the kill -9 child process).

Not plausible anatomy: a random base skeleton moved along a few random modes plus noise,
which gives descriptors a low intrinsic dimension like real poses (so the projection bound
of ``illustpose.retrieval.search`` prunes) while staying cheap and reproducible.
"""

from __future__ import annotations

import numpy as np

__all__ = ["random_poses", "entries"]


def random_poses(n: int, seed: int = 0, joints: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """``(keypoints float64 (n, joints, 2) x, y pixels, bbox_xywh float64 (n, 4) integers)``.

    The bbox is the integer box around the joints grown by a random margin, like a
    segmenter's bbox around a character.
    """
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(1234).uniform(0.0, 1.0, (joints, 2))
    modes = np.random.default_rng(4321).normal(0.0, 0.15, (6, joints, 2))
    pts = base + np.einsum("nm,mjk->njk", rng.normal(0.0, 1.0, (n, 6)), modes)
    pts += rng.normal(0.0, 0.01, pts.shape)
    xy = pts * rng.uniform(100.0, 600.0, n)[:, None, None] + rng.uniform(0.0, 300.0, (n, 1, 2))
    margin = rng.uniform(0.0, 40.0, (n, 2))
    lo = np.floor(xy.min(axis=1) - margin)
    hi = np.ceil(xy.max(axis=1) + margin)
    return xy, np.concatenate([lo, hi - lo], axis=1)


def entries(start: int, stop: int, seed: int = 7):
    """IndexEntry objects ``start..stop-1`` of one deterministic stream (source ``pose-<i>``)."""
    from illustpose.retrieval import IndexEntry, PoseKeypoints

    block = 1000
    for b0 in range(start - start % block, stop, block):
        xy, bbox = random_poses(block, seed=seed * 1_000_003 + b0)
        for i in range(max(start, b0), min(stop, b0 + block)):
            yield IndexEntry(PoseKeypoints.create(xy[i - b0], bbox[i - b0]), f"pose-{i}")
