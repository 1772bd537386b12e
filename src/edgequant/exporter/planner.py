"""The one planner: what PTQ measured or QAT learned, turned into a `QuantPlan`.

Every method ends here and then in `exporter.write`:
- static PTQ: `plan_static` (calibrated ranges of the selected tensors);
- QAT: `qat.export` reads the learned Q/DQ pairs and weight scales, then `share_ranges`,
  `plan_biases` and `plan_folds` complete the plan with the same rules as PTQ;
- dynamic INT8 and weight-only INT4: `plan_dynamic` / `plan_weight_only` over the MatMuls that
  `graph.rewrite.linears_as_matmul` produced;
- int8 embedding tables: `plan_embeddings`; FP16: `plan_half_model` / the plan's `half_nodes`.
The rules (which bias goes int32, when a Relu/Clip folds into the quantizer after it, which
outputs share their input's parameters) are written once, here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import onnx

from edgequant.choices import Embeddings
from edgequant.config import PTQConfig
from edgequant.exporter.plan import QuantPlan, TensorQuant
from edgequant.exporter.select import Selection, clip_max, fold_target, rule_for
from edgequant.graph.index import GraphIndex, attribute
from edgequant.graph.rules import OP_RULES, Role
from edgequant.primitives import reduce_range, scale_zero_point
from edgequant.spec import PerChannel, PerTensor, QType, QuantSpec, Symmetry

# one int8 scale per table row (token): rows differ by orders of magnitude
ROW_SPEC = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0))
MIN_TABLE_ELEMENTS = 65_536  # smaller tables (positions, token types) are not worth the nodes


def plan_static(
    index: GraphIndex,
    sel: Selection,
    ranges: Mapping[str, tuple[float, float]],
    act_specs: Mapping[str, QuantSpec],
    weight_specs: Mapping[str, QuantSpec],
) -> QuantPlan:
    """Scales and zero-points for every tensor the selection names, from calibrated ranges.

    act_specs: activation tensor -> its spec; weight_specs: weighted node -> its aimed spec."""
    plan = QuantPlan()
    for t in sel.activations:
        if t not in sel.shared:
            plan.activations[t] = TensorQuant(
                act_specs[t], *scale_zero_point(*ranges[t], act_specs[t])
            )
    plan_folds(index, plan, sel.fold_candidates)
    share_ranges(plan, sel.shared)
    for node in sel.nodes:
        rule = rule_for(node, index)
        if rule is None or rule.role is not Role.WEIGHTED or rule.weight_input is None:
            continue
        weight = node.input[rule.weight_input]
        if weight not in plan.weights:
            plan.weights[weight] = weight_quant(index.array(weight), weight_specs[node.name])
    for const, other in sel.constants.items():  # per tensor, the spec of what it meets
        spec = replace(act_specs[other], granularity=PerTensor())
        plan.weights.setdefault(const, weight_quant(index.array(const), spec))
    plan_biases(index, plan, sel.nodes)
    plan.min_opset = max(plan.min_opset, plan_opset(plan))
    return plan


def share_ranges(plan: QuantPlan, shared: Mapping[str, str]) -> None:
    """Data movement (MaxPool, Reshape, ...) outputs reuse their input's parameters, so that
    ONNX Runtime drops the Q/DQ pair and moves integers. shared: output -> input."""
    for out, src in shared.items():
        if src in plan.activations:
            plan.activations[out] = plan.activations[src]


def shared_outputs(graph: onnx.GraphProto, index: GraphIndex, plan: QuantPlan) -> dict[str, str]:
    """Output -> input of every data-movement node whose input is quantized and whose output
    has no quantizer of its own (QAT places quantizers itself; PTQ's selection says it)."""
    shared: dict[str, str] = {}
    for node in graph.node:
        rule = OP_RULES.get(node.op_type)
        if rule is None or rule.role is not Role.SHARED_RANGE:
            continue
        src, out = node.input[0], node.output[0]
        quantized = src in plan.activations or src in shared
        if quantized and out not in plan.activations and out not in index.graph_outputs:
            shared[out] = src
    return shared


def plan_biases(index: GraphIndex, plan: QuantPlan, nodes: Iterable[onnx.NodeProto]) -> None:
    """Each weighted node's constant 1-D bias, noted with its input activation and weight (the
    writer stores it as int32 at input scale x weight scale where the kernel needs it)."""
    for node in nodes:
        rule = rule_for(node, index)
        if rule is None or rule.role is not Role.WEIGHTED or rule.weight_input is None:
            continue
        weight = node.input[rule.weight_input]
        b = rule.bias_input
        bias = node.input[b] if b is not None and len(node.input) > b else ""
        if (
            bias
            and weight in plan.weights
            and node.input[0] in plan.activations
            and index.is_constant(bias)
            and index.array(bias).ndim == 1
            and bias not in plan.biases
        ):
            plan.biases[bias] = (node.input[0], weight)


def plan_folds(
    index: GraphIndex,
    plan: QuantPlan,
    candidates: Mapping[str, str],
    *,
    lend_unfolded: bool = False,
) -> None:
    """Fold each candidate Relu/Clip (node name -> its input tensor) whose output quantizer clips
    at 0 exactly (zero-point = qmin) and never exceeds the Clip's upper bound: the quantizer then
    does the activation's work, the node goes and its input needs no quantizer of its own.

    lend_unfolded: an activation that cannot fold lends its output's quantizer to its input, when
    that has none (QAT learns one range per Relu/Clip pair). Exact for Relu/Clip(0, c): values on
    one grid, clipped at 0 and c, then put on the same grid again, equal clipping first."""
    for act_name, pre in candidates.items():
        act = index.node(act_name)
        tq = plan.activations.get(act.output[0])
        if tq is None:
            continue
        if folds_cleanly(act, tq, index):
            plan.folded.append(act_name)
            plan.activations.pop(pre, None)
        elif lend_unfolded and pre not in plan.activations:
            plan.activations[pre] = tq


def folds_cleanly(act: onnx.NodeProto, tq: TensorQuant, index: GraphIndex) -> bool:
    """Whether the quantizer `tq` of `act`'s output does exactly what the Relu/Clip `act` does."""
    spec = tq.spec
    zp = int(np.asarray(tq.zero_point))
    top = float(np.asarray(tq.scale)) * (spec.qmax - zp)
    return zp == spec.qmin and top <= clip_max(act, index) * (1 + 1e-6)


def fold_candidates(graph: onnx.GraphProto, index: GraphIndex, plan: QuantPlan) -> dict[str, str]:
    """Relu/Clip nodes after a quantizable compute node whose output has no quantizer while the
    activation's output has one (how QAT's exported graph shows a fusable pair). A layer
    whose weight is not planned stays float, its activation too, as in PTQ's selection."""
    found: dict[str, str] = {}
    for node in graph.node:
        rule = rule_for(node, index)
        if rule is None or rule.role is Role.SHARED_RANGE or not node.output:
            continue
        if rule.role is Role.WEIGHTED and node.input[1] not in plan.weights:
            continue
        act = fold_target(node, index)
        if act is not None and node.output[0] not in plan.activations:
            found[act.name] = node.output[0]
    return found


def plan_opset(plan: QuantPlan) -> int:
    """4- and 16-bit tensors need opset 21 (INT4/INT16 in QuantizeLinear/DequantizeLinear)."""
    quants = [*plan.activations.values(), *plan.weights.values()]
    return 21 if any(tq.spec.qtype.bits != 8 for tq in quants) else 13


def weight_quant(values: np.ndarray, spec: QuantSpec) -> TensorQuant:
    """Scale and zero-point of a constant weight from its own min/max at `spec`'s granularity."""
    lo, hi = reduce_range(values, spec)
    scale, zp = scale_zero_point(lo, hi, spec)
    return TensorQuant(spec, scale, zp)


def aim_weight_spec(
    template: QuantSpec, node: Any, per_tensor_ops: frozenset[str] = frozenset()
) -> QuantSpec:
    """Point a per-channel template at the operator's output-channel axis; operators in
    `per_tensor_ops` (the target's kernels take one weight scale) get a per-tensor spec."""
    if not isinstance(template.granularity, PerChannel):
        return template
    if node.op_type in per_tensor_ops:
        return replace(template, granularity=PerTensor())
    axis = 0
    if (node.op_type == "Gemm" and not attribute(node, "transB", 0)) or node.op_type == "MatMul":
        axis = 1
    return replace(template, granularity=PerChannel(axis))


def plan_dynamic(
    index: GraphIndex, matmuls: Iterable[onnx.NodeProto], spec: QuantSpec
) -> QuantPlan:
    """Dynamic INT8: each MatMul's (K, N) weight per output column (or per tensor); inputs are
    quantized at run time, so nothing is calibrated."""
    if isinstance(spec.granularity, PerChannel):
        spec = replace(spec, granularity=PerChannel(1))  # columns of (K, N)
    plan = QuantPlan(min_opset=11)  # DynamicQuantizeLinear, MatMulInteger
    for node in matmuls:
        plan.dynamic[node.name] = weight_quant(index.array(node.input[1]).astype(np.float32), spec)
    return plan


def plan_weight_only(
    index: GraphIndex,
    matmuls: Iterable[onnx.NodeProto],
    spec: QuantSpec,
    rounded: Mapping[str, tuple[np.ndarray, TensorQuant]] | None = None,
) -> QuantPlan:
    """Weight-only (INT4 group-wise): each MatMul's (K, N) weight behind a DequantizeLinear, no
    activation quantized. `rounded`: weight -> (codes, quantization) chosen by GPTQ."""
    plan = QuantPlan()
    for node in matmuls:
        weight = node.input[1]
        if weight in plan.weights:
            continue
        if rounded and weight in rounded:
            plan.weight_codes[weight], plan.weights[weight] = rounded[weight]
        else:
            plan.weights[weight] = weight_quant(index.array(weight).astype(np.float32), spec)
    plan.min_opset = plan_opset(plan)
    return plan


def plan_tables(
    graph: onnx.GraphProto, config: PTQConfig, exclude: frozenset[str] = frozenset()
) -> dict[str, TensorQuant]:
    """`plan_embeddings` when the config asks for int8 tables (the default),
    with its own excluded nodes and `exclude` left alone."""
    if config.embeddings is not Embeddings.INT8:
        return {}
    return plan_embeddings(graph, exclude | frozenset(config.exclude_nodes))


def plan_embeddings(graph: onnx.GraphProto, exclude: frozenset[str]) -> dict[str, TensorQuant]:
    """Every float32 2-D constant table of at least MIN_TABLE_ELEMENTS values that only
    Gathers on axis 0 read (none of them excluded): table -> its per-row quantization."""
    index = GraphIndex.of(graph)
    initializers = {i.name for i in graph.initializer}
    tables: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type != "Gather" or node.name in exclude or not index.is_constant(node.input[0]):
            continue
        if attribute(node, "axis", 0) == 0:
            tables.setdefault(node.input[0], []).append(node)
    planned: dict[str, TensorQuant] = {}
    for name, gathers in tables.items():
        values = index.array(name)
        if (
            values.dtype == np.float32
            and values.ndim == 2
            and values.size >= MIN_TABLE_ELEMENTS
            and len(index.consumers.get(name, [])) == len(gathers)
            and name in initializers
        ):
            planned[name] = weight_quant(values, ROW_SPEC)
    return planned
