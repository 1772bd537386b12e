"""FP16: half-precision weights and compute, float32 inputs and outputs.

The writer uses ONNX Runtime's own converter, which knows which operators must stay in float32.
On x86 CPUs without an fp16 conv kernel the model is half the size but not faster; the benchmark
reports it as measured.
"""

from __future__ import annotations

from edgequant.config import PTQConfig
from edgequant.exporter.plan import QuantPlan
from edgequant.exporter.write import write
from edgequant.graph.preprocess import optimize
from edgequant.model import Model
from edgequant.provenance import Provenance


def convert_fp16(model: Model, config: PTQConfig) -> Model:
    fp32 = optimize(model)
    plan = QuantPlan(half_model=True, keep_float=tuple(config.exclude_nodes))
    out = Model(write(fp32.proto, plan), f"{model.name}.fp16")
    out.provenance = Provenance(method=config.method.value, config=config)
    return out
