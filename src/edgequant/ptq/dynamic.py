"""Dynamic INT8: weights quantized offline, activations quantized per batch at run time.

Only MatMul/Gemm are converted (Gemm first rewritten as MatMul + Add). The writer emits
DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul, which ONNX Runtime fuses into
DynamicQuantizeMatMul, a fast VNNI kernel. Conv is deliberately left in float: ORT's dynamic Conv
path (ConvInteger) has no fused kernel and ran 5-39x slower than FP32 on CNNs
(../shared/PEER-FINDINGS.md); on a CNN use static quantization instead.
"""

from __future__ import annotations

import onnx

from edgequant.config import PTQConfig
from edgequant.errors import NothingToQuantizeError
from edgequant.exporter.planner import plan_dynamic, plan_tables
from edgequant.exporter.write import write
from edgequant.graph.index import GraphIndex
from edgequant.graph.preprocess import optimize
from edgequant.graph.rewrite import linear_nodes, linears_as_matmul
from edgequant.model import Model
from edgequant.provenance import Provenance


def quantize_dynamic(model: Model, config: PTQConfig) -> Model:
    fp32 = optimize(model)
    proto = onnx.ModelProto()
    proto.CopyFrom(fp32.proto)
    index = GraphIndex.of(proto.graph)
    float_nodes: dict[str, str] = {}
    linears = list(linear_nodes(proto.graph, index, frozenset(config.exclude_nodes), float_nodes))
    if not linears:
        raise NothingToQuantizeError(
            "dynamic quantization found no MatMul/Gemm with a constant weight; for CNNs use --method static"
        )
    matmuls = linears_as_matmul(proto.graph, linears)
    plan = plan_dynamic(GraphIndex.of(proto.graph), matmuls, config.weights)
    plan.embeddings = plan_tables(proto.graph, config)
    out_model = Model(write(proto, plan), f"{model.name}.dynamic")
    out_model.provenance = Provenance(
        method=config.method.value,
        config=config,
        quantized_nodes=len(matmuls),
        int8_embeddings=list(plan.embeddings),
        float_nodes=float_nodes,
    )
    return out_model
