"""Dynamic INT8: weights quantized offline, activations quantized per batch at run time.

MatMul/Gemm are converted (Gemm first rewritten as MatMul + Add), and LSTMs become ONNX Runtime's
DynamicQuantizeLSTM (`exporter.recurrent`). For MatMul the writer emits
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
from edgequant.exporter.recurrent import recurrent_layers
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
    has_lstm = any(n.op_type == "LSTM" for n in proto.graph.node)
    if not linears and not has_lstm:
        raise NothingToQuantizeError(
            "dynamic quantization found no MatMul/Gemm with a constant weight and no LSTM; for "
            "CNNs use --method static"
        )
    matmuls = linears_as_matmul(proto.graph, linears)
    plan = plan_dynamic(GraphIndex.of(proto.graph), matmuls, config.weights)
    plan.embeddings = plan_tables(proto.graph, config)
    written = write(proto, plan)
    lstms = recurrent_layers(written, config, frozenset(config.precisions))
    for name in lstms:
        float_nodes.pop(name, None)
    out_model = Model(written, f"{model.name}.dynamic")
    out_model.provenance = Provenance(
        method=config.method.value,
        config=config,
        quantized_nodes=len(matmuls) + len(lstms),
        int8_embeddings=list(plan.embeddings),
        float_nodes=float_nodes,
    )
    return out_model
