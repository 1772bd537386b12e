"""Cross-layer equalisation (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.1, https://arxiv.org/abs/1906.04721).

For two layers y = W2 f(W1 x + b1) + b2 with f positively homogeneous (ReLU, identity), scaling
output channel i of layer 1 by 1/s_i and input channel i of layer 2 by s_i leaves the function
unchanged. Choosing s_i = sqrt(r1_i / r2_i), with r1_i the range of layer 1's output channel i and
r2_i the range of layer 2's input channel i, gives both the same range sqrt(r1_i r2_i), which is
what per-tensor quantization needs: depthwise convolutions otherwise have channels whose ranges
differ by orders of magnitude, and one scale for all of them rounds the small ones to zero.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float32]

# Scales are clamped so that a nearly dead channel is not blown up into the next layer's range.
MIN_SCALE, MAX_SCALE = 1e-4, 1e4


def output_channel_ranges(weight: Array) -> Array:
    """max |w| per output channel (axis 0); weight (C_out, ...) -> (C_out,)."""
    return np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)


def input_channel_ranges(weight: Array, depthwise: bool) -> Array:
    """max |w| per input channel of a Conv weight (C_out, C_in/groups, kh, kw) -> (C_in,).

    A depthwise conv (C, 1, kh, kw) reads input channel i with its filter i only."""
    if depthwise:
        return output_channel_ranges(weight)
    return np.abs(np.moveaxis(weight, 1, 0).reshape(weight.shape[1], -1)).max(axis=1)


def equalization_scales(r1: Array, r2: Array) -> Array:
    """s_i = sqrt(r1_i / r2_i) (paper eq. 11), 1 where a channel has no weight at all."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(r1 / r2)
    s = np.where((r1 > 0) & (r2 > 0), s, 1.0)
    return np.clip(s, MIN_SCALE, MAX_SCALE).astype(np.float32)


def equalize_pair(
    w1: Array, b1: Array | None, w2: Array, *, depthwise2: bool
) -> tuple[Array, Array | None, Array, Array]:
    """Equalise layer 1 (weight (C, ...), bias (C,)) with layer 2 that reads its C channels.

    Layer 2 is a Conv weight (C_out, C, kh, kw) or, with `depthwise2`, (C, 1, kh, kw).
    Returns (w1', b1', w2', s) with w1' = w1 / s, b1' = b1 / s, w2' = w2 * s on input channels.
    """
    s = equalization_scales(output_channel_ranges(w1), input_channel_ranges(w2, depthwise2))
    shape1 = (-1,) + (1,) * (w1.ndim - 1)  # s per output channel of layer 1
    w1_new = (w1 / s.reshape(shape1)).astype(np.float32)
    b1_new = None if b1 is None else (b1 / s).astype(np.float32)
    if depthwise2:
        w2_new = w2 * s.reshape((-1,) + (1,) * (w2.ndim - 1))
    else:
        w2_new = w2 * s.reshape((1, -1) + (1,) * (w2.ndim - 2))
    return w1_new, b1_new, w2_new.astype(np.float32), s
