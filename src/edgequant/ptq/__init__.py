"""Post-training quantization: `quantize(model, config, calibration=...)`, the one verb for ONNX
and torch models, dispatching to static, dynamic, FP16 and INT4 weight-only."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import onnx

from edgequant.analysis.fidelity import FidelityGuard
from edgequant.config import Method, PTQConfig
from edgequant.errors import ConfigError
from edgequant.model import Model, load
from edgequant.progress import ProgressFn, silent


def quantize_onnx(
    model: Model,
    config: PTQConfig,
    *,
    calibration: Iterable[Any] | None = None,
    guard: FidelityGuard | None = None,
    progress: ProgressFn = silent,
) -> Model:
    """Dispatch on `config.method`; only static quantization needs calibration data. With a
    `guard`, static PTQ promotes the layers that lose fidelity, the other methods are measured
    (on `calibration`, when given)."""
    if config.method is Method.STATIC:
        if calibration is None:
            raise ConfigError(
                "static quantization needs calibration data: pass calibration=... (a few hundred samples)"
            )
        from edgequant.ptq.static import quantize_static

        if guard is not None:
            from edgequant.ptq.guarded import quantize_static_guarded

            return quantize_static_guarded(model, config, calibration, guard, progress)
        return quantize_static(model, config, calibration, progress)
    q = _quantize_other(model, config, calibration, progress)
    if guard is None:
        return q
    from edgequant.ptq.guarded import measure_only

    return measure_only(model, q, calibration, guard)


def _quantize_other(
    model: Model, config: PTQConfig, calibration: Iterable[Any] | None, progress: ProgressFn
) -> Model:
    if config.method is Method.DYNAMIC:
        from edgequant.ptq.dynamic import quantize_dynamic

        return quantize_dynamic(model, config)
    if config.method is Method.FP16:
        from edgequant.ptq.fp16 import convert_fp16

        return convert_fp16(model, config, calibration)
    from edgequant.ptq.int4 import quantize_int4

    return quantize_int4(model, config, calibration, progress)


def quantize(
    model: Any,
    config: PTQConfig | None = None,
    *,
    calibration: Iterable[Any] | None = None,
    example_input: Any = None,
    guard: FidelityGuard | None = FidelityGuard(),  # noqa: B008 (frozen, shared safely)
    progress: ProgressFn = silent,
) -> Model:
    """Quantize a model as `config` says; static INT8 by default.

    `model` is an ONNX model (a `Model`, a ModelProto or a path) or a torch `nn.Module`, which is
    first exported to FP32 ONNX with `example_input` (one batch, e.g. torch.zeros(1, 3, 224, 224)),
    so PTQ and QAT start from the same module. Returns a new in-memory `Model`; call
    `.save(path)` to write it with its `.quant.json`.

    `guard` (on by default) measures every output against FP32 on samples held back from
    `calibration` and, for static PTQ, promotes the layers that lose fidelity until its
    thresholds hold (`edgequant.analysis.fidelity`); a `FidelityWarning` says when they do not.
    `guard=None` turns it off.
    """
    from edgequant.exporter.precision import check_names

    source = _as_onnx(model, example_input)
    config = config or PTQConfig.int8()
    if config.method is not Method.STATIC:  # static checks names on its cleaned-up graph
        check_names({}, source.proto.graph, config.exclude_nodes)
    out = quantize_onnx(source, config, calibration=calibration, guard=guard, progress=progress)
    assert out.provenance is not None  # every method records how it made the model
    out.provenance.source_sha256 = hashlib.sha256(source.serialize()).hexdigest()
    return out


def _as_onnx(model: Any, example_input: Any) -> Model:
    if isinstance(model, Model | onnx.ModelProto | str | Path):
        return load(model)
    if type(model).__module__.startswith("torch") or hasattr(model, "state_dict"):
        if example_input is None:
            raise ConfigError(
                "a torch model needs example_input=... (one input batch) to be exported to ONNX"
            )
        from edgequant.torch_onnx import to_onnx

        return to_onnx(model, example_input, type(model).__name__.lower())
    raise ConfigError(
        f"cannot quantize a {type(model).__name__}: give an ONNX model, a path, or a torch nn.Module"
    )
