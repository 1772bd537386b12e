"""Fake quantization in torch, matching ONNX QuantizeLinear arithmetic (float32 x / scale, round
half to even, saturate), with gradients for training:

- inputs: straight-through estimator, zero outside the clipping range (Bengio et al. 2013);
- scales: LSQ, "Learned Step Size Quantization" (Esser et al. 2019), eq. 3, with the gradient
  scaled by 1 / sqrt(N * qmax) as in their section 2.2.

Written here rather than taken from torch: torch's fused LSQ kernel
(`torch._fake_quantize_learnable_per_tensor_affine`) rounds differently from ONNX QuantizeLinear
(measured: not bit-identical on 1.6M values) and was not faster on CPU, and the exported model
must agree with the trained one.

Scale and zero-point *rules* are not re-derived here: initial values come from
`edgequant.primitives.scale_zero_point`, the same function PTQ uses.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class _LsqFakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        scale: torch.Tensor,
        zero_point: torch.Tensor,
        qmin: int,
        qmax: int,
        grad_factor: float,
    ) -> torch.Tensor:
        q = torch.round(x / scale) + zero_point
        inside = (q >= qmin) & (q <= qmax)
        qc = q.clamp(qmin, qmax)
        ctx.save_for_backward(x, scale, zero_point, inside, qc)
        ctx.grad_factor = grad_factor
        return (qc - zero_point) * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, scale, zero_point, inside, qc = ctx.saved_tensors
        grad_x = grad * inside
        # d out / d scale: (round(x/s) - x/s) inside, (q_clamped - zp) outside (LSQ eq. 3)
        d_scale = torch.where(inside, torch.round(x / scale) - x / scale, qc - zero_point)
        grad_scale = (grad * d_scale).sum().reshape(scale.shape) * ctx.grad_factor
        return grad_x, grad_scale, None, None, None, None


def fake_quant_learned(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Per-tensor fake quantization with an LSQ-learnable `scale` (shape (1,))."""
    factor = 1.0 / math.sqrt(x.numel() * qmax) if x.numel() else 1.0
    return _LsqFakeQuant.apply(x, scale, zero_point, qmin, qmax, factor)


def fake_quant_weight(w: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Symmetric per-output-channel fake quantization (axis 0), straight-through for w."""
    s = scale.reshape(-1, *([1] * (w.dim() - 1)))
    q = torch.clamp(torch.round(w / s), qmin, qmax)
    return w + (q * s - w).detach()
