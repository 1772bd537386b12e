"""INT4 weight-only, group-wise: 4-bit weights with one scale per block along the reduction axis.

Written as standard ONNX (opset 21): DequantizeLinear(int4 weight, block_size) -> MatMul. ONNX
Runtime's optimiser fuses that pair into its MatMulNBits kernel. Gemm is rewritten as MatMul (+Add)
first: torch exports Linear as Gemm, which ORT's own MatMulNBitsQuantizer skips silently.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.config import PTQConfig
from edgequant.errors import NothingToQuantizeError
from edgequant.exporter.graph import GraphIndex
from edgequant.model import Model
from edgequant.primitives import quantize
from edgequant.ptq.preprocess import optimize
from edgequant.ptq.static import weight_quant
from edgequant.ptq.weights import linear_nodes, replace_nodes
from edgequant.spec import PerGroup, QuantSpec

INT4_OPSET = 21  # int4 tensors and blocked DequantizeLinear


def quantize_int4(model: Model, config: PTQConfig) -> Model:
    fp32 = optimize(model, INT4_OPSET)
    proto = onnx.ModelProto()
    proto.CopyFrom(fp32.proto)
    index = GraphIndex.of(proto.graph)
    float_nodes: dict[str, str] = {}
    template = config.weights
    assert isinstance(template.granularity, PerGroup)
    spec = QuantSpec(
        template.qtype,
        template.symmetry,
        PerGroup(template.granularity.size, 0),
        template.narrow_range,
    )
    swaps: dict[str, list[onnx.NodeProto]] = {}
    inits: list[onnx.TensorProto] = []
    for lin in linear_nodes(proto.graph, index, frozenset(config.exclude_nodes), float_nodes):
        k = lin.weight_kn.shape[0]
        if k % spec.granularity.size:  # type: ignore[union-attr]
            float_nodes[lin.node.name] = (
                f"reduction size {k} is not a multiple of the block size {spec.granularity.size}"  # type: ignore[union-attr]
            )
            continue
        tq = weight_quant(lin.weight_kn, spec)  # scale (K / block, N)
        q = quantize(lin.weight_kn, tq.scale, tq.zero_point, spec).astype(spec.qtype.numpy_dtype)
        p = lin.node.name.replace("/", "_").strip("_") or lin.node.output[0]
        inits += [
            numpy_helper.from_array(q, f"{p}_W_q4"),
            numpy_helper.from_array(tq.scale.astype(np.float32), f"{p}_W_scale"),
            numpy_helper.from_array(tq.zero_point.astype(spec.qtype.numpy_dtype), f"{p}_W_zp"),
        ]
        out = lin.node.output[0]
        mm_out = f"{p}_mm" if lin.bias else out
        swaps[lin.node.name] = [
            helper.make_node(
                "DequantizeLinear",
                [f"{p}_W_q4", f"{p}_W_scale", f"{p}_W_zp"],
                [f"{p}_W"],
                axis=0,
                block_size=spec.granularity.size,
            ),  # type: ignore[union-attr]
            helper.make_node("MatMul", [lin.node.input[0], f"{p}_W"], [mm_out]),
            *([helper.make_node("Add", [mm_out, lin.bias], [out])] if lin.bias else []),
        ]
    if not swaps:
        raise NothingToQuantizeError(
            "INT4 weight-only found no MatMul/Gemm with a constant weight to quantize"
        )
    replace_nodes(proto.graph, swaps, inits)
    out_model = Model(proto, f"{model.name}.int4")
    out_model.provenance = {
        "config": config.to_dict(),
        "quantized_nodes": len(swaps),
        "float_nodes": float_nodes,
    }
    return out_model
