"""LSTM layers as ONNX Runtime's DynamicQuantizeLSTM: int8 weights, integer gate matmuls.

ONNX Runtime has no QDQ fusion for LSTM (a static Q/DQ pair around it leaves it float); its CPU
provider has a contrib kernel, `com.microsoft.DynamicQuantizeLSTM`, that takes the input and
recurrent weights as int8 with a scale per gate row and quantizes the input and hidden state at
run time, step by step, as ONNX Runtime's own dynamic quantizer emits it
(`onnxruntime/quantization/operators/lstm.py`). We write the node ourselves because that quantizer
rewrites the whole model its way; the weight arithmetic is edgequant's one quantize
(`primitives.quantize`). A text recogniser's BiLSTM held 31% of its weights in float.

Weights: W (directions, 4H, I) and R (directions, 4H, H), symmetric int8 with one scale per row
(direction x gate unit), stored transposed as the kernel reads them: (directions, I, 4H) and
(directions, H, 4H); scales and zero points (directions, 4H).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.config import PTQConfig
from edgequant.exporter.planner import weight_quant
from edgequant.graph.index import GraphIndex, NameSource, attribute, drop_unread_initializers
from edgequant.primitives import quantize
from edgequant.spec import PerChannel, QType, QuantSpec, Symmetry
from edgequant.targets import Runtime, preset

ROW_SPEC = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0))
MS_DOMAIN = "com.microsoft"


def recurrent_layers(
    proto: onnx.ModelProto, config: PTQConfig, exclude: frozenset[str] = frozenset()
) -> list[str]:
    """LSTMs as DynamicQuantizeLSTM where `config`'s target runs ONNX Runtime's CPU provider
    (the kernel is its contrib op), unless excluded by the config or `exclude` (layers given a
    precision of their own); their names."""
    if preset(config.target).runtime is not Runtime.ORT_CPU:
        return []
    return dynamic_lstms(proto, exclude | frozenset(config.exclude_nodes))


def dynamic_lstms(model: onnx.ModelProto, exclude: frozenset[str] = frozenset()) -> list[str]:
    """Rewrite, in place, every top-level LSTM with constant float32 weights (not in `exclude`)
    as DynamicQuantizeLSTM; return the names of the nodes rewritten."""
    graph = model.graph
    index = GraphIndex.of(graph)
    names = NameSource(graph)
    done: list[str] = []
    replaced: set[str] = set()
    for position, node in enumerate(graph.node):
        if node.op_type != "LSTM" or node.domain not in ("", "ai.onnx") or node.name in exclude:
            continue
        if attribute(node, "layout", 0) != 0 or len(node.input) < 3:
            continue  # the contrib kernel has no batch-first layout
        w, r = node.input[1], node.input[2]
        if not (_float_weight(index, w) and _float_weight(index, r)):
            continue
        inputs = [node.input[0]]
        scales = []
        for weight in (w, r):
            codes, scale = _row_quantized(index.array(weight))
            q_name, s_name, z_name = names.new("lstmq"), names.new("lstms"), names.new("lstmz")
            graph.initializer.extend([
                numpy_helper.from_array(codes, q_name),
                numpy_helper.from_array(scale, s_name),
                numpy_helper.from_array(np.zeros(scale.shape, np.int8), z_name),
            ])  # fmt: skip
            inputs.append(q_name)
            scales += [s_name, z_name]
            replaced.add(weight)
        optional = [node.input[i] if len(node.input) > i else "" for i in range(3, 8)]
        attrs = {
            a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "layout"
        }
        new = helper.make_node(
            "DynamicQuantizeLSTM", [*inputs, *optional, *scales], list(node.output),
            name=node.name, domain=MS_DOMAIN, **attrs,
        )  # fmt: skip
        graph.node[position].CopyFrom(new)
        done.append(node.name)
    if done:
        drop_unread_initializers(graph, replaced)
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return done


def _row_quantized(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(directions, 4H, K) float32 -> int8 codes (directions, K, 4H) and scales (directions, 4H)."""
    directions, rows, k = weight.shape
    flat = weight.reshape(directions * rows, k)
    tq = weight_quant(flat, ROW_SPEC)
    codes = quantize(flat, tq.scale, tq.zero_point, ROW_SPEC).astype(np.int8)
    codes = codes.reshape(directions, rows, k).transpose(0, 2, 1)
    scale = np.asarray(tq.scale, np.float32).reshape(directions, rows)
    return np.ascontiguousarray(codes), scale


def _float_weight(index: GraphIndex, name: str) -> bool:
    if not name or not index.is_constant(name):
        return False
    value = index.array(name)
    return value.dtype == np.float32 and value.ndim == 3
