"""FP16: half-precision weights and compute, float32 inputs and outputs.

The writer uses ONNX Runtime's own converter, which knows which operators must stay in float32.
On x86 CPUs without an fp16 conv kernel the model is half the size but not faster; the benchmark
reports it as measured.

Values beyond float16's range (65504) become Inf: a spectrogram's powers (up to ~1e12 on 16-bit
audio) turn every frame into NaN/Inf. Weights are checked always and activations when data is
given (one pass of the FP32 model, min/max of every tensor); the nodes that write or read such a
tensor stay float32, each with its reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from edgequant.config import PTQConfig
from edgequant.errors import CalibrationWarning
from edgequant.exporter.plan import QuantPlan
from edgequant.exporter.write import write
from edgequant.graph.index import GraphIndex
from edgequant.graph.preprocess import optimize
from edgequant.model import Model
from edgequant.provenance import Provenance

FP16_MAX = float(np.finfo(np.float16).max)  # 65504


def convert_fp16(
    model: Model, config: PTQConfig, calibration: Iterable[Any] | None = None
) -> Model:
    """`model` in float16, with the nodes around values float16 cannot hold kept float32
    (activations measured on `calibration` when given)."""
    fp32 = optimize(model)
    overflow = fp16_overflow(fp32, calibration, config.max_calibration_samples)
    keep = tuple(dict.fromkeys([*config.exclude_nodes, *overflow]))
    plan = QuantPlan(half_model=True, keep_float=keep)
    out = Model(write(fp32.proto, plan), f"{model.name}.fp16")
    out.provenance = Provenance(method=config.method.value, config=config, float_nodes=overflow)
    return out


def fp16_overflow(
    model: Model, calibration: Iterable[Any] | None, max_samples: int
) -> dict[str, str]:
    """Node -> why it must stay float32: it reads or writes a tensor (a weight, or an
    activation seen on `calibration`) with magnitudes beyond 65504."""
    graph = model.proto.graph
    index = GraphIndex.of(graph)
    large: dict[str, float] = {}
    for init in graph.initializer:
        values = index.array(init.name)
        if values.dtype == np.float32 and values.size and np.abs(values).max() > FP16_MAX:
            large[init.name] = float(np.abs(values).max())
    if calibration is not None:
        from edgequant.ptq.calibrate import calibrate

        tensors = [*model.input_names, *(o for n in graph.node for o in n.output if o)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CalibrationWarning)  # ranges are not the point
            seen = calibrate(
                model, list(dict.fromkeys(tensors)), calibration, num_bins=128,
                max_samples=max_samples, histogram=False,
            )  # fmt: skip
        for name, obs in seen.observers.items():
            top = max(abs(obs.min_val), abs(obs.max_val))
            if name not in seen.non_float and FP16_MAX < top < float("inf"):
                large[name] = top
    reasons: dict[str, str] = {}
    for node in graph.node:
        for name in [*node.input, *node.output]:
            if name in large and node.name not in reasons:
                reasons[node.name] = (
                    f"{name!r} reaches {large[name]:.3g}, beyond float16's 65504 (it would be Inf)"
                )
    return reasons
