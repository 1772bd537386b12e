"""QAT building blocks: an activation quantizer and Conv(+BN)/Linear with fake-quantized weights.

Every module has three modes (a `Mode` set by context managers in `prepare.py`, never a global
flag): TRAIN/EVAL run fake quantization with gradients; OBSERVE collects calibration statistics
(PTQ warm start); EXPORT emits torch's own fake-quantize ops with constant parameters, which the
ONNX exporter writes as QuantizeLinear/DequantizeLinear pairs that `export.py` reads back.
"""

from __future__ import annotations

import enum

import numpy as np
import torch
from torch import nn

from edgequant.config import Calibrator
from edgequant.observers import HistogramObserver, clip_range
from edgequant.primitives import reduce_range, scale_zero_point
from edgequant.qat.fake_quant import fake_quant_learned, fake_quant_weight
from edgequant.spec import QuantSpec


class Mode(enum.Enum):
    QUANT = "quant"
    OBSERVE = "observe"
    EXPORT = "export"


class ActivationQuantizer(nn.Module):
    """Per-tensor affine fake quantization of an activation, scale learnable (LSQ)."""

    def __init__(self, spec: QuantSpec, learnable: bool = True) -> None:
        super().__init__()
        self.spec = spec
        self.scale = nn.Parameter(torch.ones(1), requires_grad=learnable)
        self.register_buffer("zero_point", torch.zeros(1))
        self.mode = Mode.QUANT
        self.observer: HistogramObserver | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is Mode.OBSERVE:
            assert self.observer is not None
            self.observer.update(x.detach().float().numpy())
            return x
        if self.mode is Mode.EXPORT:
            return torch.fake_quantize_per_tensor_affine(
                x, float(self.scale.detach()), int(self.zero_point), self.spec.qmin, self.spec.qmax
            )
        return fake_quant_learned(
            x, self.scale.abs() + 1e-12, self.zero_point, self.spec.qmin, self.spec.qmax
        )

    def start_observing(self, calibrator: Calibrator) -> None:
        self.observer = HistogramObserver(histogram=calibrator is not Calibrator.MINMAX)

    def finish_observing(self, calibrator: Calibrator) -> None:
        """Set scale and zero-point from what was observed, with PTQ's rules."""
        assert self.observer is not None
        lo, hi = clip_range(self.observer, calibrator, self.spec)
        scale, zp = scale_zero_point(lo, hi, self.spec)
        with torch.no_grad():
            self.scale.copy_(torch.from_numpy(np.atleast_1d(scale)))
            self.zero_point.copy_(torch.from_numpy(np.atleast_1d(zp).astype(np.float32)))
        self.observer = None


def weight_scale(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Per-channel symmetric scale from the weight's own range, by PTQ's rule (primitives)."""
    lo, hi = reduce_range(w.detach().cpu().numpy(), spec)
    scale, _ = scale_zero_point(lo, hi, spec)
    return torch.from_numpy(np.asarray(scale, np.float32))


def transport_weight(module: nn.Module, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The weight for the ONNX export: its fake-quantized values as a constant (made through
    numpy so that tracing records a constant, not the ops). torch's exporter cannot write 4-bit
    quantizers, so the grid travels beside the graph: the module appends (spec, scale) to
    `module.export_log`, in forward order, and `export.py` pairs them with the graph's weights."""
    spec: QuantSpec = module.spec  # type: ignore[assignment]
    with torch.no_grad():
        on_grid = fake_quant_weight(w, scale, spec.qmin, spec.qmax).numpy().copy()
    log = getattr(module, "export_log", None)
    if log is not None:
        log.append((spec, scale.numpy().copy()))
    return torch.from_numpy(on_grid)


class QuantConv(nn.Module):
    """Conv with fake-quantized weights; a following BatchNorm is folded in (Jacob et al. 2018,
    Krishnamoorthi 2018): the conv runs with the folded weight that will be deployed, BN
    statistics keep updating for `bn_freeze_steps` training steps, then stay frozen."""

    def __init__(
        self,
        conv: nn.Conv2d | nn.Conv1d,
        bn: nn.BatchNorm2d | nn.BatchNorm1d | None,
        spec: QuantSpec,
        bn_freeze_steps: int,
    ) -> None:
        super().__init__()
        self.conv, self.bn, self.spec = conv, bn, spec
        self.bn_freeze_steps = bn_freeze_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.mode = Mode.QUANT

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias with BatchNorm folded in (running statistics)."""
        w = self.conv.weight
        b = self.conv.bias if self.conv.bias is not None else torch.zeros(w.shape[0])
        if self.bn is None:
            return w, b
        std = torch.sqrt(self.bn.running_var + self.bn.eps)
        gamma = self.bn.weight / std
        return w * gamma.reshape(-1, *([1] * (w.dim() - 1))), self.bn.bias + (
            b - self.bn.running_mean
        ) * gamma

    def _update_bn_stats(self, x: torch.Tensor) -> None:
        if self.bn is None or not self.training or self.steps >= self.bn_freeze_steps:
            return
        with torch.no_grad():
            y = self.conv._conv_forward(x, self.conv.weight, self.conv.bias)
            dims = [d for d in range(y.dim()) if d != 1]
            mean, var = y.mean(dims), y.var(dims, unbiased=True)
            m = self.bn.momentum if self.bn.momentum is not None else 0.1
            self.bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.bn.running_var.mul_(1 - m).add_(var, alpha=m)
        self.steps += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is not Mode.OBSERVE:
            self._update_bn_stats(x)
        w, b = self.folded()
        if self.mode is Mode.OBSERVE:
            return self.conv._conv_forward(x, w, b)
        scale = weight_scale(w, self.spec)
        if self.mode is Mode.EXPORT:
            w = transport_weight(self, w, scale)
            return self.conv._conv_forward(x, w, b.detach())
        return self.conv._conv_forward(
            x, fake_quant_weight(w, scale, self.spec.qmin, self.spec.qmax), b
        )


class QuantLinear(nn.Module):
    """Linear with per-output-channel fake-quantized weights."""

    def __init__(self, linear: nn.Linear, spec: QuantSpec) -> None:
        super().__init__()
        self.linear, self.spec = linear, spec
        self.mode = Mode.QUANT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight
        if self.mode is Mode.OBSERVE:
            return nn.functional.linear(x, w, self.linear.bias)
        scale = weight_scale(w, self.spec)
        if self.mode is Mode.EXPORT:
            wq = transport_weight(self, w, scale)
            return nn.functional.linear(
                x, wq, None if self.linear.bias is None else self.linear.bias.detach()
            )
        return nn.functional.linear(
            x, fake_quant_weight(w, scale, self.spec.qmin, self.spec.qmax), self.linear.bias
        )
