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

from edgequant.primitives import INT32_MAX
from edgequant.qat.distributed import rank_and_world


class _LsqFakeQuant(torch.autograd.Function):
    """QAT spends much of its step here (measured: half of a W4A8 step on the demo CNN), so the
    forward computes LSQ's per-element scale derivative once, as an elementwise residual
    (summing two large sums and subtracting them would cancel catastrophically in float32)."""

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
        t = x / scale
        rounded = torch.round(t)
        centred = (rounded + zero_point).clamp_(qmin, qmax).sub_(zero_point)  # grid value - zp
        inside = centred == rounded
        # d out / d scale (LSQ eq. 3): round(x/s) - x/s inside the range, clamp(q) - zp outside
        d_scale = torch.where(inside, t.neg_().add_(rounded), centred)
        ctx.save_for_backward(inside, d_scale)
        ctx.grad_factor = grad_factor
        return centred.mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inside, d_scale = ctx.saved_tensors
        grad_scale = (grad * d_scale).sum().reshape(1) * ctx.grad_factor
        return grad * inside, grad_scale, None, None, None, None


def fake_quant_learned(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int
) -> torch.Tensor:
    """Per-tensor fake quantization with an LSQ-learnable `scale` (shape (1,)).

    LSQ's gradient scale counts the elements of the whole batch; under DDP each process holds
    1/world of it, so the count is of the global batch and training matches one process."""
    numel = x.numel() * rank_and_world()[1]
    factor = 1.0 / math.sqrt(numel * qmax) if numel else 1.0
    return _LsqFakeQuant.apply(x, scale, zero_point, qmin, qmax, factor)


def fake_quant_weight(w: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Symmetric per-output-channel fake quantization (axis 0), straight-through for w."""
    s = scale.reshape(-1, *([1] * (w.dim() - 1)))
    q = torch.clamp(torch.round(w / s), qmin, qmax)
    return w + (q * s - w).detach()


def fake_quant_bias(
    b: torch.Tensor, activation_scale: torch.Tensor, weight_scale: torch.Tensor
) -> torch.Tensor:
    """The bias on the int32 grid the runtime uses (scale = input activation scale x weight
    scale; `primitives.bias_scale` / `quantize_bias` arithmetic, dequantized in float32 as
    ONNX Runtime does), straight-through for b. Invisible at 8-bit activations, but at 4-bit
    the grid is coarse enough to move outputs across activation steps."""
    s = activation_scale.detach().abs().float().reshape(()) * weight_scale.float()
    q = torch.round(b.detach().double() / s.double()).clamp(-INT32_MAX, INT32_MAX)
    on_grid = q.float() * s
    return b + (on_grid.to(b.dtype) - b).detach()
