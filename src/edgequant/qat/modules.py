"""QAT building blocks: an activation quantizer and Conv(+BN)/Linear with fake-quantized weights.

Every module has three modes (a `Mode` set by context managers in `prepare.py`, never a global
flag): TRAIN/EVAL run fake quantization with gradients; OBSERVE collects calibration statistics
(PTQ warm start); EXPORT emits torch's own fake-quantize ops with constant parameters, which the
ONNX exporter writes as QuantizeLinear/DequantizeLinear pairs that `export.py` reads back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgequant.config import Calibrator
from edgequant.observers import HistogramObserver, clip_range
from edgequant.primitives import reduce_range, scale_zero_point
from edgequant.qat.config import RangeLearning
from edgequant.qat.distributed import global_max, global_sum
from edgequant.qat.fake_quant import fake_quant_bias, fake_quant_learned, fake_quant_weight
from edgequant.spec import QuantSpec


@dataclass
class WeightedState:
    """What a weighted QAT layer knows beyond its parameters, typed: the activation quantizer
    that feeds it (a plain reference, not a submodule: the bias grid depends on its scale; set
    by `prepare.py`) and, during an export, where it logs its weight grid (`export.py`)."""

    input_quantizer: ActivationQuantizer | None = None
    # (spec, scale) per weighted layer in forward order; None for a layer left float
    export_log: list[tuple[QuantSpec, np.ndarray] | None] | None = None


class Mode(enum.Enum):
    QUANT = "quant"
    OBSERVE = "observe"
    EXPORT = "export"


class ActivationQuantizer(nn.Module):
    """Per-tensor affine fake quantization of an activation. The scale is learned (LSQ), frozen
    at its calibrated value, or follows a moving average of the batch ranges (`RangeLearning`)."""

    def __init__(
        self, spec: QuantSpec, ranges: RangeLearning = RangeLearning.LSQ, momentum: float = 0.01
    ) -> None:
        super().__init__()
        self.spec, self.ranges, self.momentum = spec, ranges, momentum
        self.scale = nn.Parameter(torch.ones(1), requires_grad=ranges is RangeLearning.LSQ)
        self.register_buffer("zero_point", torch.zeros(1))
        self.register_buffer("running_range", torch.zeros(2))  # MOVING_MINMAX: (min, max)
        self.mode = Mode.QUANT
        self.observer: HistogramObserver | None = None
        self.export_log: list[QuantSpec] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is Mode.OBSERVE:
            assert self.observer is not None
            self.observer.update(x.detach().float().numpy())
            return x
        if self.mode is Mode.EXPORT:
            return self._export(x)
        if self.ranges is RangeLearning.MOVING_MINMAX and self.training:
            self._track_range(x)
        return fake_quant_learned(
            x, self.scale.abs() + 1e-12, self.zero_point, self.spec.qmin, self.spec.qmax
        )

    def _export(self, x: torch.Tensor) -> torch.Tensor:
        """torch's ONNX export writes only 8-bit quantizers: a 4-bit one travels as its 8-bit
        container type with the same scale and zero-point, and its spec goes into `export_log`
        (forward order) for `export.py` to restore."""
        if self.export_log is not None:
            self.export_log.append(self.spec)
        lo, hi = (-128, 127) if self.spec.qtype.signed else (0, 255)
        return torch.fake_quantize_per_tensor_affine(
            x, float(self.scale.detach()), int(self.zero_point), lo, hi
        )

    def _track_range(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            lo, hi = torch.aminmax(x.detach())
            # the range of the whole batch, over all processes under DDP: max of (-min, max)
            neg_lo, hi = global_max(torch.stack([-lo, hi]))
            self.running_range.lerp_(torch.stack([-neg_lo, hi]), self.momentum)
            self._set_range(float(self.running_range[0]), float(self.running_range[1]))

    def _set_range(self, lo: float, hi: float) -> None:
        scale, zp = scale_zero_point(lo, hi, self.spec)
        with torch.no_grad():
            self.scale.copy_(torch.from_numpy(np.atleast_1d(scale)))
            self.zero_point.copy_(torch.from_numpy(np.atleast_1d(zp).astype(np.float32)))

    def start_observing(self, calibrator: Calibrator) -> None:
        self.observer = HistogramObserver(histogram=calibrator is not Calibrator.MINMAX)

    def finish_observing(self, calibrator: Calibrator) -> None:
        """Set scale and zero-point from what was observed, with PTQ's rules."""
        assert self.observer is not None
        lo, hi = clip_range(self.observer, calibrator, self.spec)
        self._set_range(float(lo), float(hi))
        self.running_range.copy_(torch.tensor([float(lo), float(hi)]))
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
    log = module.state.export_log  # type: ignore[union-attr]
    if log is not None:
        log.append((spec, scale.numpy().copy()))
    return torch.from_numpy(on_grid)


def transport_float(module: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """The weight of a layer left float, for the ONNX export: a constant (BatchNorm folded in),
    logged as None so that `export.py` pairs the other layers' grids with the right weights."""
    log = module.state.export_log  # type: ignore[union-attr]
    if log is not None:
        log.append(None)
    return torch.from_numpy(w.detach().numpy().copy())


def batch_statistics(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (axis 1) mean and unbiased variance of `y` (N, C, ...), over all processes
    when training runs under torch.distributed, so that BatchNorm statistics under DDP equal
    those of one process seeing the whole batch.

    torch's batch-norm kernel gives the local moments 5x faster than `torch.var_mean` on
    channels-last tensors (measured on the demo CNN)."""
    _, mean, invstd = torch.native_batch_norm(y, None, None, None, None, True, 0.0, 0.0)
    mean, var = mean.double(), invstd.double().pow(-2)  # float64: E[y^2] - E[y]^2 cancels
    count = float(y.numel() // y.shape[1])
    # (count, count * E[y], count * E[y^2]) add up across processes
    sums = global_sum(
        torch.cat(
            [torch.tensor([count], dtype=torch.float64), count * mean, count * (var + mean * mean)]
        )
    )
    total, channels = sums[0], (len(sums) - 1) // 2
    mean = sums[1 : 1 + channels] / total
    var = (sums[1 + channels :] / total - mean * mean).clamp_min(0) * (
        total / (total - 1).clamp_min(1)
    )
    mean, var = mean.float(), var.float()
    return mean, var


def _bias(module: nn.Module, b: torch.Tensor | None, w_scale: torch.Tensor) -> torch.Tensor | None:
    """The bias as deployed: on its int32 grid when an activation quantizer feeds the layer
    (`WeightedState.input_quantizer`)."""
    source = module.state.input_quantizer  # type: ignore[union-attr]
    if b is None or source is None:
        return b
    return fake_quant_bias(b, source.scale, w_scale)


MIN_BN_BATCH = 16  # smaller training batches leave the folded BatchNorm statistics frozen


class QuantConv(nn.Module):
    """Conv with fake-quantized weights; a following BatchNorm is folded in (Jacob et al. 2018,
    Krishnamoorthi 2018): the conv runs with the folded weight that will be deployed, BN
    statistics keep updating for `bn_freeze_steps` training steps, then stay frozen. With
    `spec` None the folded conv stays float (a raw-signal conv, as PTQ plans it)."""

    def __init__(
        self,
        conv: nn.Conv2d | nn.Conv1d,
        bn: nn.BatchNorm2d | nn.BatchNorm1d | None,
        spec: QuantSpec | None,
        bn_freeze_steps: int,
    ) -> None:
        super().__init__()
        self.conv, self.bn, self.spec = conv, bn, spec
        self.bn_freeze_steps = bn_freeze_steps
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.mode = Mode.QUANT
        self.state = WeightedState()

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
        # a few samples' statistics would replace good ones; the batch is counted over every
        # process (each rank takes the same decision, so the collectives below stay matched)
        if global_sum(torch.tensor([float(x.shape[0])], dtype=torch.float64)).item() < MIN_BN_BATCH:
            return
        with torch.no_grad():
            y = self._conv(x, self.conv.weight, self.conv.bias)
            mean, var = batch_statistics(y)
            m = self.bn.momentum if self.bn.momentum is not None else 0.1
            self.bn.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.bn.running_var.mul_(1 - m).add_(var, alpha=m)
        self.steps += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is not Mode.OBSERVE:
            self._update_bn_stats(x)
        w, b = self.folded()
        if self.mode is Mode.OBSERVE:
            return self._conv(x, w, b)
        if self.spec is None:
            if self.mode is Mode.EXPORT:
                return self._conv(x, transport_float(self, w), b.detach())
            return self._conv(x, w, b)
        scale = weight_scale(w, self.spec)
        if self.mode is Mode.EXPORT:
            w = transport_weight(self, w, scale)
            return self._conv(x, w, b.detach())
        return self._conv(
            x, fake_quant_weight(w, scale, self.spec.qmin, self.spec.qmax), _bias(self, b, scale)
        )

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        """The conv's own forward with weight `w` and bias `b`: a subclass (the "same" padding
        of TensorFlow ports pads first) keeps doing what it does."""
        return _own_forward(self.conv, (nn.Conv1d, nn.Conv2d), x, w, b)


class QuantLinear(nn.Module):
    """Linear with per-output-channel fake-quantized weights."""

    def __init__(self, linear: nn.Linear, spec: QuantSpec) -> None:
        super().__init__()
        self.linear, self.spec = linear, spec
        self.mode = Mode.QUANT
        self.state = WeightedState()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight
        if self.mode is Mode.OBSERVE:
            return self._linear(x, w, self.linear.bias)
        scale = weight_scale(w, self.spec)
        if self.mode is Mode.EXPORT:
            wq = transport_weight(self, w, scale)
            return self._linear(
                x, wq, None if self.linear.bias is None else self.linear.bias.detach()
            )
        return self._linear(
            x,
            fake_quant_weight(w, scale, self.spec.qmin, self.spec.qmax),
            _bias(self, self.linear.bias, scale),
        )

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return _own_forward(self.linear, (nn.Linear,), x, w, b)


def _own_forward(
    module: nn.Module,
    bases: tuple[type[nn.Module], ...],
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None,
) -> torch.Tensor:
    """`module`'s forward with its weight and bias replaced: torch's own layers directly, a
    subclass with its own forward (padding first, say) by running that forward with `w` and
    `b` in place of its parameters. (`torch.func.functional_call` does this too, but refuses to
    run inside torch.onnx's tracing, which the export needs.)"""
    if any(type(module).forward is base.forward for base in bases):
        if isinstance(module, nn.Linear):
            return nn.functional.linear(x, w, b)
        return module._conv_forward(x, w, b)  # type: ignore[operator]
    params = module._parameters
    saved = params["weight"], params.get("bias")
    params["weight"], params["bias"] = w, b  # type: ignore[assignment]
    try:
        return type(module).forward(module, x)  # type: ignore[no-any-return]
    finally:
        params["weight"], params["bias"] = saved
