"""Mixed precision: which `QuantSpec` each quantized layer and tensor gets from a precision map.

A layer's `Precision` decides its weight spec (INT4: 4-bit, INT8/INT16: 8-bit, both symmetric at
the config's granularity) and the activation spec of the tensors it reads and writes (INT16:
16 bits). A tensor between two layers has one Q/DQ pair, so it takes the widest activation spec
of the quantized layers that touch it: raising a layer to INT16 never lowers its neighbour.
FP16 and FP32 layers are not quantized at all (see `static.quantize_calibrated`).
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx

from edgequant.config import Precision, PTQConfig
from edgequant.errors import ConfigError
from edgequant.exporter.select import Selection, data_inputs, rule_for
from edgequant.graph.index import GraphIndex
from edgequant.graph.macs import all_nodes
from edgequant.graph.rules import Role
from edgequant.spec import QType, QuantSpec, Symmetry

FP16_OPS = frozenset({"Conv", "Gemm", "MatMul"})  # float inputs, float weights: safe to cast
_WIDER = {QType.UINT8: QType.UINT16, QType.INT8: QType.INT16}


def check_names(
    precisions: Mapping[str, Precision],
    graph: onnx.GraphProto,
    excluded: tuple[str, ...] = (),
) -> None:
    """A precision for a node the graph does not have is a typo, never silently ignored; the
    message names the option it came from (`exclude_nodes`/--exclude or `layer_precisions`).
    Nodes inside `If` branches count: their branch is quantized as a model of its own
    (`ptq.bodies`), which applies them."""
    ops = {n.name: n.op_type for n in all_nodes(graph)}
    for option, names in (
        ("exclude_nodes (--exclude)", [n for n in excluded]),
        ("layer_precisions (--layer)", [n for n in precisions if n not in excluded]),
    ):
        unknown = sorted(set(names) - set(ops))
        if unknown:
            raise ConfigError(
                f"{option} names nodes the model does not have: {unknown[:5]}; "
                "`edgequant check MODEL` lists the node names"
            )
    halves = sorted(
        k for k, v in precisions.items() if v is Precision.FP16 and ops[k] not in FP16_OPS
    )
    if halves:
        raise ConfigError(
            f"FP16 per layer is for {'/'.join(sorted(FP16_OPS))} layers; {halves[0]!r} is "
            f"{ops[halves[0]]}: give it FP32 or an integer precision"
        )


def float_layers(precisions: Mapping[str, Precision]) -> dict[str, Precision]:
    """The layers left in floating point (FP16 or FP32)."""
    return {k: v for k, v in precisions.items() if not v.quantized}


def requested_layers(precisions: Mapping[str, Precision]) -> frozenset[str]:
    """The layers given an integer precision by name: quantized even where the default rules
    would leave them float (`select.few_channel_conv`)."""
    return frozenset(k for k, v in precisions.items() if v.quantized)


def weight_template(config: PTQConfig, precision: Precision | None) -> QuantSpec:
    """The weight spec of a layer at `precision` (None: the config's own `weights`)."""
    base = config.weights
    if precision is None:
        return base
    qtype = QType.INT4 if precision is Precision.INT4 else QType.INT8
    if base.qtype is qtype:
        return base
    return QuantSpec(qtype, Symmetry.SYMMETRIC, base.granularity)


def activation_template(config: PTQConfig, precision: Precision | None) -> QuantSpec:
    """The activation spec a layer at `precision` asks for on its inputs and output."""
    base = config.activation_spec
    if precision is not Precision.INT16 or base.qtype.bits == 16:
        return base
    if base.qtype not in _WIDER:
        raise ConfigError(f"no 16-bit form of {base.qtype.value} activations")
    return QuantSpec(_WIDER[base.qtype], base.symmetry, base.granularity, base.narrow_range)


def activation_specs(
    sel: Selection, index: GraphIndex, config: PTQConfig, precisions: Mapping[str, Precision]
) -> dict[str, QuantSpec]:
    """Spec of every activation tensor the selection quantizes: the widest its layers ask for."""
    base = config.activation_spec
    specs = {t: base for t in sel.activations}
    for node in sel.nodes:
        spec = activation_template(config, precisions.get(node.name))
        if spec is base:
            continue
        rule = rule_for(node, index)
        touched = [*data_inputs(node, rule), *node.output[:1]] if rule else []
        for t in touched:
            if t in specs and spec.qtype.bits > specs[t].qtype.bits:
                specs[t] = spec
    for act_name, pre in sel.fold_candidates.items():  # a Relu after a widened layer: widen too
        out = index.node(act_name).output[0]
        if out in specs and specs[pre].qtype.bits > specs[out].qtype.bits:
            specs[out] = specs[pre]
    for _ in range(len(sel.shared)):  # MaxPool/Reshape outputs share their input's Q/DQ:
        changed = False  # a pair takes the wider spec of the two (chains settle in a few rounds)
        for out, src in sel.shared.items():
            wide = max(specs[out], specs[src], key=lambda spec: spec.qtype.bits)
            if specs[out] is not wide or specs[src] is not wide:
                specs[out] = specs[src] = wide
                changed = True
        if not changed:
            break
    return specs


def weight_specs(
    sel: Selection, index: GraphIndex, config: PTQConfig, precisions: Mapping[str, Precision]
) -> dict[str, QuantSpec]:
    """Weighted node name -> its weight spec template (not yet aimed at the channel axis)."""
    out = {}
    for node in sel.nodes:
        rule = rule_for(node, index)
        if rule is not None and rule.role is Role.WEIGHTED:
            out[node.name] = weight_template(config, precisions.get(node.name))
    return out
