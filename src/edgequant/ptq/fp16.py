"""FP16: half-precision weights and compute, float32 inputs and outputs.

Uses ONNX Runtime's own converter (onnxruntime.transformers.float16), which knows which operators
must stay in float32. On x86 CPUs without an fp16 conv kernel the model is half the size but not
faster; the benchmark reports it as measured.
"""

from __future__ import annotations

import warnings

import onnx

from edgequant.config import PTQConfig
from edgequant.model import Model
from edgequant.ptq.preprocess import optimize


def convert_fp16(model: Model, config: PTQConfig) -> Model:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    fp32 = optimize(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about values clamped to the fp16 range
        proto = convert_float_to_float16(
            fp32.proto,
            keep_io_types=True,
            node_block_list=list(config.exclude_nodes),
            disable_shape_infer=False,
        )
    assert isinstance(proto, onnx.ModelProto)
    out = Model(proto, f"{model.name}.fp16")
    out.provenance = {"config": config.to_dict()}
    return out
