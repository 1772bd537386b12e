"""Dynamic INT8: weights quantized offline, activations quantized per batch at run time.

Only MatMul/Gemm are converted. ONNX Runtime fuses the pattern we write
(DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul) into DynamicQuantizeMatMul, a fast VNNI
kernel. Conv is deliberately left in float: ORT's dynamic Conv path (ConvInteger) has no fused
kernel and ran 5-39x slower than FP32 on CNNs (../shared/PEER-FINDINGS.md); on a CNN use static
quantization instead.
"""

from __future__ import annotations

from dataclasses import replace

import onnx
from onnx import TensorProto, helper, numpy_helper

from edgequant.config import PTQConfig
from edgequant.errors import NothingToQuantizeError
from edgequant.graph.index import GraphIndex
from edgequant.graph.preprocess import optimize
from edgequant.graph.rewrite import linear_nodes, replace_nodes
from edgequant.model import Model
from edgequant.primitives import quantize
from edgequant.ptq.embeddings import embed_int8
from edgequant.ptq.static import weight_quant
from edgequant.spec import PerChannel


def quantize_dynamic(model: Model, config: PTQConfig) -> Model:
    fp32 = optimize(model)
    proto = onnx.ModelProto()
    proto.CopyFrom(fp32.proto)
    index = GraphIndex.of(proto.graph)
    float_nodes: dict[str, str] = {}
    spec = config.weights
    if isinstance(spec.granularity, PerChannel):
        spec = replace(spec, granularity=PerChannel(1))  # columns of (K, N)
    swaps: dict[str, list[onnx.NodeProto]] = {}
    inits: list[onnx.TensorProto] = []
    for lin in linear_nodes(proto.graph, index, frozenset(config.exclude_nodes), float_nodes):
        tq = weight_quant(lin.weight_kn, spec)
        q = quantize(lin.weight_kn, tq.scale, tq.zero_point, spec).astype(spec.qtype.numpy_dtype)
        p = lin.node.name.replace("/", "_").strip("_") or lin.node.output[0]
        inits += [
            numpy_helper.from_array(q, f"{p}_W_q"),
            numpy_helper.from_array(tq.scale, f"{p}_W_scale"),
            numpy_helper.from_array(tq.zero_point.astype(spec.qtype.numpy_dtype), f"{p}_W_zp"),
        ]
        out = lin.node.output[0]
        mm_out = f"{p}_mm" if lin.bias else out
        swaps[lin.node.name] = [
            helper.make_node(
                "DynamicQuantizeLinear",
                [lin.node.input[0]],
                [f"{p}_x_q", f"{p}_x_scale", f"{p}_x_zp"],
            ),
            helper.make_node(
                "MatMulInteger", [f"{p}_x_q", f"{p}_W_q", f"{p}_x_zp", f"{p}_W_zp"], [f"{p}_int"]
            ),
            helper.make_node("Cast", [f"{p}_int"], [f"{p}_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{p}_x_scale", f"{p}_W_scale"], [f"{p}_scale"]),
            helper.make_node("Mul", [f"{p}_float", f"{p}_scale"], [mm_out]),
            *([helper.make_node("Add", [mm_out, lin.bias], [out])] if lin.bias else []),
        ]
    if not swaps:
        raise NothingToQuantizeError(
            "dynamic quantization found no MatMul/Gemm with a constant weight; for CNNs use --method static"
        )
    replace_nodes(proto.graph, swaps, inits)
    tables = embed_int8(proto, config, frozenset())
    out_model = Model(proto, f"{model.name}.dynamic")
    out_model.provenance = {
        "config": config.to_dict(),
        "quantized_nodes": len(swaps),
        "int8_embeddings": tables,
        "float_nodes": float_nodes,
    }
    return out_model
