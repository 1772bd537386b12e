"""Scale/zero-point rules, quantize, dequantize and fake-quantize: the only place they live.

Observers, the exporter and QAT all call these. Arithmetic follows ONNX QuantizeLinear exactly so
that what we simulate is what ONNX Runtime computes: y = saturate(round_half_even(x / scale) + zp),
with `x / scale` evaluated in float32.

Shapes: for `PerChannel(axis)` scale and zero-point have shape (x.shape[axis],); for
`PerGroup(size, axis)` they have x's shape with x.shape[axis] replaced by ceil(x.shape[axis] / size).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from edgequant.spec import PerChannel, PerGroup, PerTensor, QuantSpec, Symmetry

FloatArray = NDArray[np.float32]
# A scale below this is replaced: it would underflow the int32 bias scale (s_x * s_w).
MIN_SCALE = 1e-12


def reduce_range(x: NDArray[np.floating], spec: QuantSpec) -> tuple[FloatArray, FloatArray]:
    """Min and max of `x` at the granularity of `spec` (shapes as in the module docstring)."""
    x = np.asarray(x, dtype=np.float32)
    gran = spec.granularity
    if isinstance(gran, PerTensor):
        return np.array(x.min(), np.float32), np.array(x.max(), np.float32)
    if isinstance(gran, PerChannel):
        moved = np.moveaxis(x, gran.axis, 0).reshape(x.shape[gran.axis], -1)  # (C, rest)
        return moved.min(axis=1), moved.max(axis=1)
    blocks = _blocked(x, gran)  # (..., n_blocks, size, ...) padded with edge values
    axis = _axis(gran.axis, x.ndim) + 1
    return blocks.min(axis=axis), blocks.max(axis=axis)


def scale_zero_point(
    min_val: NDArray[np.floating] | float, max_val: NDArray[np.floating] | float, spec: QuantSpec
) -> tuple[FloatArray, NDArray[np.int32]]:
    """Scale and zero-point that map [min_val, max_val] onto the integer grid of `spec`.

    The range is first widened to include 0 so that zero is exactly representable (padding and
    ReLU outputs stay exact). Symmetric: zero-point is 0 (signed) or the grid centre (unsigned).
    A degenerate range (all-zero tensor) gets scale 1 so that everything stays finite.
    """
    lo = np.minimum(np.asarray(min_val, np.float64), 0.0)
    hi = np.maximum(np.asarray(max_val, np.float64), 0.0)
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetry is Symmetry.SYMMETRIC:
        amax = np.maximum(-lo, hi)
        scale = amax / ((qmax - qmin) / 2.0)
        centre = 0 if spec.qtype.signed else (qmin + qmax + 1) // 2
        zero_point = np.full(np.shape(scale), centre, np.int64)
    else:
        scale = (hi - lo) / float(qmax - qmin)
        safe = np.where(scale > 0, scale, 1.0)
        zero_point = np.clip(np.round(qmin - lo / safe), qmin, qmax).astype(np.int64)
    scale = np.where(scale > 0, np.maximum(scale, MIN_SCALE), 1.0)
    return scale.astype(np.float32), zero_point.astype(np.int32)


def quantize(
    x: NDArray[np.floating],
    scale: NDArray[np.floating],
    zero_point: NDArray[np.integer],
    spec: QuantSpec,
) -> NDArray[np.int32]:
    """Integer codes of `x` (held in int32 whatever the storage type), saturated to the grid."""
    x = np.asarray(x, np.float32)
    s, z = _broadcast(scale, x, spec), _broadcast(zero_point, x, spec)
    q = np.rint(x / s.astype(np.float32)) + z
    codes: NDArray[np.int32] = np.clip(q, spec.qmin, spec.qmax).astype(np.int32)
    return codes


def dequantize(
    q: NDArray[np.integer],
    scale: NDArray[np.floating],
    zero_point: NDArray[np.integer],
    spec: QuantSpec,
) -> FloatArray:
    """Float values of integer codes: (q - zp) * scale."""
    q = np.asarray(q)
    s, z = _broadcast(scale, q, spec), _broadcast(zero_point, q, spec)
    codes = q.astype(np.int64) - z.astype(np.int64)
    return (codes.astype(np.float32) * s.astype(np.float32)).astype(np.float32)


def fake_quantize(
    x: NDArray[np.floating],
    scale: NDArray[np.floating],
    zero_point: NDArray[np.integer],
    spec: QuantSpec,
) -> FloatArray:
    """dequantize(quantize(x)): the float values a quantized runtime sees."""
    return dequantize(quantize(x, scale, zero_point, spec), scale, zero_point, spec)


INT32_MAX = 2**31 - 1


def bias_scale(activation_scale: FloatArray | float, weight_scale: FloatArray) -> FloatArray:
    """The scale of an int32 bias: input activation scale x weight scale (per output channel),
    in float32, as integer convolution / matmul kernels accumulate."""
    return (np.asarray(activation_scale, np.float32) * np.asarray(weight_scale, np.float32)).astype(
        np.float32
    )


def quantize_bias(values: NDArray[np.floating], scale: FloatArray) -> NDArray[np.int32]:
    """Biases on their int32 grid: round half to even in float64, saturating."""
    q = np.rint(np.asarray(values, np.float64) / np.asarray(scale, np.float64))
    return np.clip(q, -INT32_MAX, INT32_MAX).astype(np.int32)


def sqnr_db(reference: NDArray[np.floating], approx: NDArray[np.floating]) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum(ref^2) / sum((ref - approx)^2))."""
    ref = np.asarray(reference, np.float64)
    noise = float(np.sum((ref - np.asarray(approx, np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return 10.0 * float(np.log10(signal / noise))


def _axis(axis: int, ndim: int) -> int:
    return axis % ndim


def _blocked(x: NDArray[np.floating], gran: PerGroup) -> NDArray[np.floating]:
    """View x as (..., n_blocks, size, ...) along gran.axis, padding the last block with edge values."""
    axis = _axis(gran.axis, x.ndim)
    n = x.shape[axis]
    n_blocks = -(-n // gran.size)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, n_blocks * gran.size - n)
    padded = np.pad(x, pad, mode="edge")
    shape = (*x.shape[:axis], n_blocks, gran.size, *x.shape[axis + 1 :])
    return padded.reshape(shape)


def _broadcast(
    param: NDArray[np.generic], x: NDArray[np.generic], spec: QuantSpec
) -> NDArray[np.generic]:
    """Expand a scale or zero-point to x's shape according to the granularity."""
    param = np.asarray(param)
    gran = spec.granularity
    if isinstance(gran, PerTensor):
        return param.reshape(())
    if isinstance(gran, PerChannel):
        shape = [1] * x.ndim
        shape[_axis(gran.axis, x.ndim)] = -1
        return param.reshape(shape)
    axis = _axis(gran.axis, x.ndim)
    return np.repeat(param, gran.size, axis=axis).take(range(x.shape[axis]), axis=axis)
