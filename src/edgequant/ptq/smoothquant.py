"""SmoothQuant on an ONNX graph: move activation outliers into the weights of MatMuls.

Every group of MatMuls with constant 2-D weights that read one tensor (the Q, K and V
projections read the same hidden state) gets one set of scales s from that tensor's per-feature
max |x| (a calibration pass) and the group's weights (`algorithms.smoothquant`). The weights are
multiplied row-wise by s and a Mul by 1/s is inserted on the shared input, feeding only the
group: in post-LayerNorm encoders (BERT, MiniLM) the same hidden state also feeds the residual
Add, so folding 1/s into the LayerNorm, as the paper does for pre-LN decoders, would change the
residual stream. The float function is unchanged up to rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgequant.algorithms.smoothquant import smooth_weight, smoothing_scales
from edgequant.graph.index import GraphIndex, topological_sort
from edgequant.model import Model
from edgequant.observers import FeatureAbsMax
from edgequant.progress import ProgressFn, silent
from edgequant.ptq.calibrate import calibrate


def linear_groups(
    graph: onnx.GraphProto, index: GraphIndex, exclude: frozenset[str]
) -> dict[str, list[onnx.NodeProto]]:
    """Input tensor -> the MatMuls with a constant (K, N) weight that read it."""
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if (
            node.op_type == "MatMul"
            and node.domain in ("", "ai.onnx")
            and node.name not in exclude
            and index.is_constant(node.input[1])
            and not index.is_constant(node.input[0])
            and index.array(node.input[1]).ndim == 2
            and index.array(node.input[1]).dtype == np.float32
        ):
            groups.setdefault(node.input[0], []).append(node)
    return groups


def smooth_model(
    model: Model,
    calibration: Iterable[Any],
    *,
    alpha: float,
    max_samples: int,
    exclude: frozenset[str] = frozenset(),
    progress: ProgressFn = silent,
) -> tuple[Model, int]:
    """The smoothed model and the number of MatMuls whose weights took the scales."""
    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    graph = proto.graph
    index = GraphIndex.of(graph)
    groups = linear_groups(graph, index, exclude)
    if not groups:
        return model, 0
    stats = {t: FeatureAbsMax() for t in groups}
    calibrate(model, [], calibration, num_bins=128, max_samples=max_samples, histogram=False,
              statistics=stats, progress=progress)  # fmt: skip
    inits = {i.name: i for i in graph.initializer}
    users = {name: len(index.consumers.get(name, [])) for name in inits}
    new_nodes, smoothed = [], 0
    for tensor, nodes in groups.items():
        weights = [index.array(n.input[1]).astype(np.float32) for n in nodes]
        act = stats[tensor].value
        if act.size != weights[0].shape[0]:
            continue  # the input's last axis is not the reduction axis (never for a MatMul)
        w_absmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scales = smoothing_scales(act, w_absmax, alpha)
        for node, w in zip(nodes, weights, strict=True):
            name = node.input[1]
            values = numpy_helper.from_array(smooth_weight(w, scales), name)
            if users.get(name, 0) > 1:  # shared with a node outside the group: a copy of its own
                name = f"{name}_smoothed_{smoothed}"
                values.name = name
                graph.initializer.append(values)
                node.input[1] = name
            else:
                inits[name].CopyFrom(values)
            smoothed += 1
        inv = f"{tensor}_smooth_inv"
        out = f"{tensor}_smoothed"
        graph.initializer.append(numpy_helper.from_array((1.0 / scales).astype(np.float32), inv))
        new_nodes.append(helper.make_node("Mul", [tensor, inv], [out], f"{tensor}_SmoothQuant"))
        for node in nodes:
            node.input[0] = out
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    ordered = topological_sort([*graph.node, *new_nodes], available)
    del graph.node[:]
    graph.node.extend(ordered)
    return Model(proto, model.name, model.provenance), smoothed
