"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", arXiv:2210.17323): 4-bit weights that keep a layer's outputs.

Round-to-nearest quantizes every weight on its own. GPTQ quantizes the input dimensions of a
linear layer one at a time and spreads each one's rounding error over the dimensions not yet
quantized, weighted by the inverse Hessian of the layer's reconstruction error,
H = 2 X^T X over calibration inputs X (tokens x K). This is Optimal Brain Quantization made fast:
a fixed order, the Cholesky factor of H^-1, and updates applied a block of columns at a time.
Scales are per group of `group_size` input dimensions per output column, computed from the
weights as they stand when the group is reached (the paper's grouped variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from edgequant.primitives import quantize, scale_zero_point
from edgequant.spec import PerChannel, QuantSpec


@dataclass(frozen=True)
class GPTQConfig:
    """damping: fraction of mean(diag H) added to the diagonal (the paper's 1%);
    block: columns updated together (a multiple of the group size)."""

    damping: float = 0.01
    block: int = 128


def gptq_quantize(
    weight_kn: NDArray[np.floating],
    hessian: NDArray[np.floating],
    spec: QuantSpec,
    group_size: int,
    config: GPTQConfig = GPTQConfig(),
) -> tuple[NDArray[np.int32], NDArray[np.float32], NDArray[np.int32]]:
    """Quantize a (K, N) MatMul weight (Y = X W) given H = 2 X^T X, shape (K, K).

    Returns integer codes (K, N) and scale / zero-point (ceil(K / group_size), N): the layout of
    `QuantSpec(..., PerGroup(group_size, axis=0))` used by the exporter and MatMulNBits.
    """
    k, n = weight_kn.shape
    if hessian.shape != (k, k):
        raise ValueError(f"Hessian {hessian.shape} does not match a weight with K={k}")
    if config.block % group_size:
        raise ValueError(f"block {config.block} must be a multiple of the group size {group_size}")
    column_spec = QuantSpec(spec.qtype, spec.symmetry, PerChannel(0), spec.narrow_range)
    w = np.asarray(weight_kn, np.float64).T.copy()  # (N, K): the paper's rows x columns
    h = np.asarray(hessian, np.float64).copy()
    dead = np.diag(h) == 0  # inputs that were always zero: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h[np.diag_indices(k)] += config.damping * float(np.mean(np.diag(h)))
    h_inv = _upper_cholesky_of_inverse(h)
    groups = -(-k // group_size)
    scales = np.zeros((groups, n), np.float32)
    zeros = np.zeros((groups, n), np.int32)
    codes = np.zeros((n, k), np.int32)
    for start in range(0, k, config.block):
        end = min(start + config.block, k)
        w1 = w[:, start:end].copy()
        err1 = np.zeros_like(w1)
        hinv1 = h_inv[start:end, start:end]
        for i in range(end - start):
            col = start + i
            if col % group_size == 0:
                g = col // group_size
                lo, hi = _column_range(w1[:, i : i + group_size])
                scales[g], zeros[g] = scale_zero_point(lo, hi, column_spec)
            g = col // group_size
            q = quantize(w1[:, i], scales[g], zeros[g], column_spec)
            codes[:, col] = q
            deq = (q - zeros[g].astype(np.float64)) * scales[g].astype(np.float64)
            err = (w1[:, i] - deq) / hinv1[i, i]
            w1[:, i:] -= np.outer(err, hinv1[i, i:])
            err1[:, i] = err
        w[:, end:] -= err1 @ h_inv[start:end, end:]
    return codes.T.copy(), scales, zeros


def _column_range(block: NDArray[np.floating]) -> tuple[np.ndarray, np.ndarray]:
    """Per output row of `block` (N, g): min and max over the group's columns."""
    return block.min(axis=1).astype(np.float32), block.max(axis=1).astype(np.float32)


def _upper_cholesky_of_inverse(h: NDArray[np.float64]) -> NDArray[np.float64]:
    """U with H^-1 = U^T U (upper triangular), as the paper uses it."""
    lower = np.linalg.cholesky(h)
    inv = np.linalg.inv(lower)
    h_inv = inv.T @ inv
    return np.linalg.cholesky(h_inv).T


def hessian(inputs: NDArray[np.floating]) -> NDArray[np.float64]:
    """H = 2 X^T X / tokens for inputs X of shape (..., K), averaged over every leading axis."""
    x = np.asarray(inputs, np.float64).reshape(-1, inputs.shape[-1])
    return 2.0 * (x.T @ x) / max(len(x), 1)
