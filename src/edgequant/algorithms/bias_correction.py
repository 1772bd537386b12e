"""Bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and
Bias Correction", section 4.2, https://arxiv.org/abs/1906.04721).

Rounding weights is a biased error for a layer's output when its input has a non-zero mean:
E[W~ x] - E[W x] = (W~ - W) E[x]. Subtracting that expected shift from the bias removes the
systematic part of the error. We use the empirical input mean from the calibration pass (the
paper's data-free variant estimates it from BatchNorm statistics instead). For a convolution the
mean is taken per input channel over the whole feature map, which ignores zero padding at the
borders (the usual approximation).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]


def conv_output_shift(error: Array, input_mean: Array, groups: int = 1) -> Array:
    """Expected output shift of a Conv from its weight error.

    error: W~ - W, (C_out, C_in/groups, *kernel); input_mean: (C_in,). Returns (C_out,):
    shift_o = sum over its group's input channels c and kernel taps of error[o, c, ...] * mean[c].
    """
    c_out, c_per_group = error.shape[:2]
    per_tap_sum = error.reshape(c_out, c_per_group, -1).sum(
        axis=2, dtype=np.float64
    )  # (C_out, C_in/g)
    means = input_mean.astype(np.float64).reshape(groups, c_per_group)  # (g, C_in/g)
    means = np.repeat(means, c_out // groups, axis=0)  # (C_out, C_in/g): each output's group
    return (per_tap_sum * means).sum(axis=1).astype(np.float32)


def matmul_output_shift(error_kn: Array, input_mean: Array) -> Array:
    """Expected output shift of y = x W with W (K, N): (K,) mean -> (N,) shift = mean @ error."""
    return (input_mean.astype(np.float64) @ error_kn.astype(np.float64)).astype(np.float32)
