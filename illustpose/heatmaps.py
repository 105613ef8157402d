"""From heatmaps to keypoints, and heatmaps back onto the image: the pose model's decoding.

:func:`decode_heatmaps` is the reference's heatmap -> keypoint step (``forward(smoothing=...)``
of ``_train/character_pose_estim/models/fermat.py`` / ``passup.py``, called by
``_scripts/pose_estimator.py infer_pose``): sigmoid, kornia 0.6.2's separable Gaussian blur,
argmax.  :func:`heatmap_on_image` places a crop's heatmap where the crop lies in the input
image (previews and the ComfyUI heatmap output).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .geometry import Cropbox, crop_to_image_affine
from .keypoints import ALL_KEYPOINTS
from .results import PoseResult

__all__ = ["decode_heatmaps", "heatmap_on_image", "pose_heatmap"]


def _gaussian_kernel1d(window: int, sigma: float, dtype: torch.dtype, device) -> torch.Tensor:
    # kornia 0.6.2 filters.kernels.gaussian: offsets centred on window // 2, normalised to sum 1
    x = torch.arange(window, dtype=torch.float32, device=device) - window // 2
    if window % 2 == 0:
        x = x + 0.5
    g = torch.exp(-x.pow(2.0) / (2 * sigma ** 2))
    return (g / g.sum()).to(dtype)


def _filter_reflect(x: torch.Tensor, kernel_hw: torch.Tensor) -> torch.Tensor:
    # kornia 0.6.2 filter2d: reflect-pad to 'same' size, then a depthwise conv2d
    kh, kw = kernel_hw.shape
    b, c, h, w = x.shape
    x = F.pad(x, [(kw - 1) // 2 if kw % 2 == 0 else kw // 2, kw // 2,
                  (kh - 1) // 2 if kh % 2 == 0 else kh // 2, kh // 2], mode="reflect")
    weight = kernel_hw.expand(c, 1, kh, kw)
    return F.conv2d(x, weight, groups=c).view(b, c, h, w)


def decode_heatmaps(
    logits: torch.Tensor, input_size: tuple[int, int], smoothing: float | None = 0.1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heatmap logits -> keypoints in crop pixels, as the reference's ``forward(smoothing=...)``.

    ``p = sigmoid(logits)``; with smoothing, a Gaussian of ``sigma = max(h, w) * smoothing``
    (12.8 at 128) and window ``max(3, 2 * int(sigma) + 1)`` (25) is applied separably, x
    first then y, with reflect borders, exactly as kornia 0.6.2's ``gaussian_blur2d``.  The
    argmax (first index on ties) of each channel gives ``row = idx // w * (H / h)`` and
    ``col = idx % w * (W / w)``: the winning cell's top-left corner in crop pixels (no +0.5).
    Without smoothing the raw logits' argmax is used.

    Args:
        logits: float (B, K, h, w) heatmap logits.
        input_size: ``(H, W)`` of the network input crop in pixels (256, 256).
        smoothing: the reference's smoothing factor (0.1 in ``infer_pose``) or None.

    Returns:
        ``keypoints_rc`` float32 (B, K, 2) (row, col) crop pixels; ``scores`` float32 (B, K):
        the peak of the *unsmoothed* sigmoid map (an illustpose addition; positions are
        unaffected); ``smoothed_max`` float32 (B, K): the maximum of the map the argmax ran on.
    """
    logits = logits.float()
    b, k, h, w = logits.shape
    prob = torch.sigmoid(logits)
    scores = prob.amax(dim=(2, 3))
    if smoothing is None:
        target = logits
    else:
        sigma = max(h, w) * smoothing
        window = max(3, int(sigma) * 2 + 1)
        g = _gaussian_kernel1d(window, sigma, prob.dtype, prob.device)
        target = _filter_reflect(_filter_reflect(prob, g[None, :]), g[:, None])
    flat = target.reshape(b, k, -1)
    idx = flat.argmax(-1)
    rows = idx // w * (input_size[0] / h)
    cols = idx % w * (input_size[1] / w)
    return torch.stack([rows, cols], dim=2).float(), scores, flat.amax(-1)


def heatmap_on_image(heatmap: np.ndarray, cropbox: Cropbox, image_hw: tuple[int, int]) -> np.ndarray:
    """A ``(h, w)`` heatmap of a pose crop, resampled where the crop lies in the image.

    Cell ``(i, j)`` covers crop pixels ``(i, j) * S / h`` onwards, and the crop maps to the
    image by the keypoints' own inverse cropbox (:func:`~illustpose.geometry.crop_to_image_affine`),
    so a cell spans ``from_size / h`` image pixels.  Bilinear; 0 outside the crop.

    Args:
        heatmap: float (h, w), any values (e.g. sigmoid probabilities in [0, 1]).
        cropbox: the forward crop of the pose (:attr:`~illustpose.results.PoseResult.cropbox`).
        image_hw: ``(H, W)`` of the image in pixels.

    Returns:
        float32 (H, W).
    """
    m = crop_to_image_affine(cropbox, heatmap.shape)
    # pixel-centre form (cv2 puts pixel centres at integers): x' = (x + 0.5) * s + t - 0.5
    m[:, 2] = m[:, 2] + 0.5 * np.diag(m[:, :2]) - 0.5
    return cv2.warpAffine(heatmap.astype(np.float32), m, (image_hw[1], image_hw[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def pose_heatmap(pose: PoseResult, joint: str | None = None) -> np.ndarray:
    """A pose's sigmoid heatmap at its image's size: one joint's, or the maximum over all channels.

    Args:
        pose: a result estimated with ``return_heatmaps=True``.
        joint: a name of :data:`~illustpose.keypoints.ALL_KEYPOINTS`, or None for the maximum.

    Returns:
        float32 (H, W) probabilities in [0, 1] (:func:`heatmap_on_image`).

    Raises:
        ValueError: the result holds no heatmaps, or ``joint`` is not a channel name.
    """
    if pose.heatmaps is None:
        raise ValueError("this pose has no heatmaps: estimate it with return_heatmaps=True")
    prob = torch.sigmoid(torch.from_numpy(pose.heatmaps)).numpy()
    if joint is not None and joint not in ALL_KEYPOINTS:
        raise ValueError(f"unknown joint {joint!r}; expected one of {', '.join(ALL_KEYPOINTS)}")
    channel = prob.max(axis=0) if joint is None else prob[ALL_KEYPOINTS.index(joint)]
    return heatmap_on_image(channel, pose.cropbox, pose.image_size_hw)
