"""`edgequant quantize` as library functions: the FP32 source (a file or a task), operator support
planned before any work (and `strict` failing there), quantization, support on the runtime after,
provenance recorded; `convert_checked` does the same for a TFLite conversion."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgequant.analysis.fidelity import FidelityGuard
from edgequant.analysis.support import SupportReport, check_support, require_integer
from edgequant.config import Method, PTQConfig
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent

if TYPE_CHECKING:
    from edgequant.tflite.convert import TFLiteMode, TFLiteModel


@dataclass(frozen=True)
class CheckedQuantization:
    """The quantized model (its provenance holds both support reports), the FP32 model it came
    from, and the operator support planned before quantization (static only) and found after."""

    model: Model
    fp32: Model
    planned: SupportReport | None
    support: SupportReport
    latency_ratio: float | None = None  # quantized / FP32 here (batch 1, one thread); a check

    def summary(self) -> dict[str, Any]:
        """What `edgequant quantize --json` prints (beside the output path)."""
        prov = self.model.provenance
        assert prov is not None
        return {
            "size_bytes": self.model.size_bytes,
            "fp32_size_bytes": self.fp32.size_bytes,
            "quantized_nodes": prov.quantized_nodes,
            "float_nodes": prov.float_nodes,
            "support": self.support.brief().to_dict(),
            "support_planned": None if self.planned is None else self.planned.brief().to_dict(),
            "fidelity": None if prov.fidelity is None else prov.fidelity.to_dict(),
            "latency_ratio": self.latency_ratio,
        }


def quantize_checked(
    model: Model,
    config: PTQConfig,
    *,
    calibration: Iterable[Any] | None = None,
    strict: bool = False,
    source: str | None = None,
    guard: FidelityGuard | None = FidelityGuard(),  # noqa: B008 (frozen, shared safely)
    progress: ProgressFn = silent,
) -> CheckedQuantization:
    """Quantize `model` as `config` says, checking operator support on the config's target
    before (static: what will run in integer, asked of ONNX Runtime where it runs here) and
    after, under the fidelity `guard` (`edgequant.analysis.fidelity`). `strict` raises
    `UnsupportedOperatorError` as soon as a node would stay float, before any calibration when
    the plan already shows it, and `FidelityError` when the guard's thresholds do not hold.
    `source` (e.g. the model's path) is recorded in the provenance."""
    import warnings

    from edgequant.errors import FidelityError, FidelityWarning
    from edgequant.ptq import quantize
    from edgequant.ptq.guarded import fidelity_advice

    planned = check_support(model, config) if config.method is Method.STATIC else None
    if strict and planned is not None:
        require_integer(planned)  # before any work
    with warnings.catch_warnings():
        if strict:  # an error below says it instead
            warnings.simplefilter("ignore", FidelityWarning)
        q = quantize(model, config, calibration=calibration, guard=guard, progress=progress)
    assert q.provenance is not None
    if strict and q.provenance.fidelity is not None and not q.provenance.fidelity.met:
        raise FidelityError(fidelity_advice(q.provenance.fidelity) + "; nothing was written")
    support = check_support(q, config)
    if strict:
        require_integer(support)
    if source is not None:
        q.provenance.source_model = source
    q.provenance.support = support.brief()
    if planned is not None:
        q.provenance.support_planned = planned.brief()
    return CheckedQuantization(
        q, model, planned, support, _speed_check(model, q, config, calibration)
    )


SLOWER = 1.05  # a quantized model above this latency ratio is said to be slower than FP32


def _speed_check(
    fp32: Model, q: Model, config: PTQConfig, calibration: Iterable[Any] | None
) -> float | None:
    """Latency of `q` / `fp32` on one real sample (batch 1, one thread) when the target's
    runtime is the one here; a `SpeedWarning` when the quantized model is slower (a tiny
    model's Q/DQ overhead outweighs its integer kernels). None when it cannot run here or no
    sample is at hand (a one-shot iterator, or inputs with free dimensions and no data)."""
    import warnings

    from edgequant.errors import SpeedWarning
    from edgequant.runtime.benchmark import latency_ratio
    from edgequant.targets import Runtime, preset

    if preset(config.target).runtime is not Runtime.ORT_CPU:
        return None
    feed = _one_sample(fp32, calibration)
    if feed is None:
        return None
    ratio = latency_ratio(fp32, q, feed)
    if ratio > SLOWER:
        warnings.warn(
            f"the quantized model runs at {ratio:.2f}x the FP32 latency here (ONNX Runtime, "
            "batch 1, one thread): too small for integer kernels to pay off over their "
            "quantize/dequantize steps; keep FP32, or measure your batch and threads with "
            "`edgequant bench`",
            SpeedWarning,
            stacklevel=3,
        )
    return ratio


def _one_sample(model: Model, calibration: Iterable[Any] | None) -> dict[str, Any] | None:
    """One sample (one fixed batch, for a model exported at a fixed batch size) of the
    calibration data, or random inputs of the model's static shapes without data."""
    from edgequant.batching import take
    from edgequant.data import as_batches, batch_axes_of
    from edgequant.errors import EdgeQuantError
    from edgequant.runtime.benchmark import random_feed
    from edgequant.runtime.session import (
        axes_of_specs,
        fixed_batch,
        input_specs,
        make_feed,
        make_session,
    )

    specs = input_specs(
        make_session(model), batch_axes_of(calibration) if calibration is not None else None
    )
    if calibration is None or iter(calibration) is calibration:
        try:
            return random_feed(specs, 1) if calibration is None else None
        except EdgeQuantError:
            return None
    batch = next(iter(as_batches(calibration)), None)
    if batch is None:
        return None
    return take(make_feed(batch, specs), axes_of_specs(specs), 0, fixed_batch(specs) or 1)


@dataclass(frozen=True)
class FP32Source:
    """The FP32 ONNX model to quantize, where it came from (a path or a task entry point), and
    the calibration data a task brings (None for a model file)."""

    model: Model
    label: str
    calibration: Iterable[Any] | None = None


def fp32_source(
    model_path: str | None = None, task_entry: str | None = None, *, loaded: Model | None = None
) -> FP32Source:
    """The FP32 model of an ONNX file, or of a task's torch model (`module:function`, exported
    to ONNX as `quantize` exports it), exactly one of them. `loaded`: the file's model, when the
    caller has loaded it already."""
    from pathlib import Path

    from edgequant.errors import ConfigError
    from edgequant.model import load

    if (model_path is None) == (task_entry is None):
        raise ConfigError("give an ONNX MODEL or --task module:function (one of them)")
    if model_path is not None:
        where = Path(model_path)  # a path, or what edgequant.importers exported (module:function)
        return FP32Source(
            loaded or load(model_path), str(where.resolve()) if where.exists() else model_path
        )
    from edgequant.task import load_task
    from edgequant.torch_onnx import to_onnx

    assert task_entry is not None
    task = load_task(task_entry)
    fp32 = to_onnx(task.model, task.example_input, task_entry.rpartition(":")[2] or "model")
    return FP32Source(fp32, task_entry, task.calibration)


@dataclass(frozen=True)
class CheckedConversion:
    """A TFLite model converted from a task's torch model and its operator support (LiteRT)."""

    model: TFLiteModel
    support: SupportReport


def convert_checked(
    task_entry: str,
    mode: TFLiteMode,
    *,
    calibration: Iterable[Any] | None = None,
    max_samples: int = 1000,
    strict: bool = False,
    progress: ProgressFn = silent,
) -> CheckedConversion:
    """`edgequant quantize --target tflite` as a library function: the task's torch model
    converted by litert-torch (`calibration`: the task's own when None), its operator support
    checked (`strict`: every node integer) and recorded in the provenance."""
    from edgequant.task import load_task
    from edgequant.tflite.convert import to_tflite
    from edgequant.tflite.runtime import check_tflite

    task = load_task(task_entry)
    model = to_tflite(
        task.model, task.example_input, mode=mode,
        calibration=calibration if calibration is not None else task.calibration,
        max_samples=max_samples, name=task_entry.rpartition(":")[2] or "model", progress=progress,
    )  # fmt: skip
    support = check_tflite(model)
    if strict:
        require_integer(support)
    assert model.provenance is not None  # every conversion records how it was made
    model.provenance.source_model = task_entry
    model.provenance.support = support.brief()
    return CheckedConversion(model, support)
