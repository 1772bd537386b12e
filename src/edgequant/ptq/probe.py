"""A QDQ model built with placeholder ranges, before any calibration, to ask a runtime which
nodes it will fuse into integer kernels.

Which Q/DQ patterns ONNX Runtime fuses depends on the graph and the types (an int8 activation
beside a depthwise Conv, an int16 tensor, an int4 weight), not on the scale values, so a model
quantized with ranges of [-1, 1] ([0, 1] after a Relu or Clip, so they fold as calibrated ones
would) has the fused graph the calibrated model will have.
"""

from __future__ import annotations

from edgequant.config import Coverage, PTQConfig
from edgequant.exporter.precision import float_layers
from edgequant.graph.index import GraphIndex
from edgequant.graph.macs import float_tensors
from edgequant.graph.preprocess import optimize
from edgequant.graph.rewrite import divisions_as_products
from edgequant.graph.rules import FOLDABLE_ACTIVATIONS
from edgequant.model import Model
from edgequant.ptq.static import (
    Calibrated,
    min_opset,
    quantize_calibrated,
    resolve_coverage,
    select_for,
)


def probe_model(model: Model, config: PTQConfig) -> Model:
    """`model` quantized as `config` says (static), with placeholder ranges."""
    fp32 = optimize(model, min_opset=min_opset(config))
    graph = fp32.proto.graph
    coverage = resolve_coverage(config.coverage, graph)
    if coverage is not Coverage.WEIGHTED:
        divisions_as_products(fp32.proto)
    index = GraphIndex.of(graph)
    floats = float_tensors(fp32.proto)
    produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    bad = {t: "not a float32 tensor" for t in produced if t not in floats}
    exclude = frozenset(float_layers(config.precisions))
    sel = select_for(fp32, index, config, coverage, exclude, bad)
    if not sel.nodes:  # nothing outside `If` branches: the branches are planned by calibration
        return fp32
    producer = {o: n.op_type for n in graph.node for o in n.output}
    ranges = {
        t: (0.0, 1.0) if producer.get(t) in FOLDABLE_ACTIVATIONS else (-1.0, 1.0)
        for t in sel.observed_tensors()
    }
    cal = Calibrated(model.name, fp32, config, ranges, bad, {}, 0, 0, coverage=coverage)
    return quantize_calibrated(cal)
