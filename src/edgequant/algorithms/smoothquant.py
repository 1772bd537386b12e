"""SmoothQuant (Xiao et al. 2022, "SmoothQuant: Accurate and Efficient Post-Training Quantization
for Large Language Models", arXiv:2211.10438).

Transformer activations have a few input channels with values 10-100x larger than the rest;
per-tensor activation scales sized for those outliers leave the other channels a handful of
levels. Weights are easy to quantize. SmoothQuant moves the difficulty: for Y = X W, divide input
channel j of X by s_j and multiply row j of W by s_j (the product is unchanged), with

    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha),     alpha = 0.5 balances the two,

so that activation and weight ranges per channel meet in the middle.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

EPS = 1e-5


def smoothing_scales(
    act_absmax: NDArray[np.floating], weight_absmax: NDArray[np.floating], alpha: float = 0.5
) -> NDArray[np.float32]:
    """Per input channel s (shape (K,)) from max|X_j| over calibration (K,) and max|W_j,:| (K,).

    Channels that are all zero in either keep s = 1 (nothing to balance)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    a = np.asarray(act_absmax, np.float64)
    w = np.asarray(weight_absmax, np.float64)
    if a.shape != w.shape or a.ndim != 1:
        raise ValueError(f"expected two (K,) vectors, got {a.shape} and {w.shape}")
    live = (a > EPS) & (w > EPS)
    s = np.ones_like(a)
    s[live] = a[live] ** alpha / w[live] ** (1.0 - alpha)
    return s.astype(np.float32)


def smooth_weight(
    weight_kn: NDArray[np.floating], scales: NDArray[np.floating]
) -> NDArray[np.float32]:
    """Row j of a (K, N) MatMul weight times s_j: the weight that takes X / s as its input."""
    return (np.asarray(weight_kn, np.float32) * np.asarray(scales, np.float32)[:, None]).astype(
        np.float32
    )
