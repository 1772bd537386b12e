"""Decide which nodes of a float graph are quantized, and why the others stay in float."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from edgequant.graph.index import GraphIndex, attribute, subgraphs
from edgequant.graph.rules import (
    FOLDABLE_ACTIVATIONS,
    OP_RULES,
    RANGE_LIMIT,
    OpRule,
    Role,
    plain_gemm,
)

CONSTANT_OPERAND_OPS = frozenset({"Add", "Mul"})
# layers ONNX Runtime runs in integer only with a quantized output (QLinearConv); MatMul and Gemm
# also have kernels with a float output (MatMulIntegerToFloat, QGemm)
OUTPUT_QUANTIZED_LAYERS = frozenset({"Conv"})


@dataclass
class Selection:
    """Quantized nodes (graph order), float nodes with reasons, and the tensors involved."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    float_nodes: dict[str, str] = field(default_factory=dict)
    activations: list[str] = field(default_factory=list)  # tensors that get a Q/DQ pair
    shared: dict[str, str] = field(
        default_factory=dict
    )  # output tensor -> input it shares params with
    fold_candidates: dict[str, str] = field(
        default_factory=dict
    )  # Relu/Clip node -> its input tensor
    # constant operand of an Add/Mul -> the operand it is combined with (quantized per tensor
    # from its own values: ONNX Runtime fuses DQ(constant) + DQ(x) -> Add/Mul -> Q)
    constants: dict[str, str] = field(default_factory=dict)
    # quantized tensors that every reader reads through their DequantizeLinear, float readers
    # under Coverage.WEIGHTED too (a Conv's output: no kernel fuses a Conv read both ways)
    read_quantized: set[str] = field(default_factory=set)

    def observed_tensors(self) -> list[str]:
        """Tensors whose ranges this selection's plan reads."""
        seen = [t for t in self.activations if t not in self.shared]
        seen += [t for t in self.fold_candidates.values() if t not in seen]
        return seen

    def calibrated_tensors(self) -> list[str]:
        """Tensors calibration measures: those the plan reads and the outputs of data movement
        too (a Reshape's output shares its input's range only while the Reshape is quantized;
        with a node before it excluded, by the guard or the user, it needs its own)."""
        return [
            *self.observed_tensors(),
            *(t for t in self.shared if t not in self.fold_candidates.values()),
        ]


def rule_for(node: onnx.NodeProto, index: GraphIndex) -> OpRule | None:
    rule = OP_RULES.get(node.op_type)
    if rule is None or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type == "MatMul" and not index.is_constant(node.input[1]):
        return OpRule(Role.ELEMENTWISE, (0, 1))  # activation x activation (attention)
    return rule


def data_inputs(node: onnx.NodeProto, rule: OpRule) -> list[str]:
    idx = range(len(node.input)) if rule.data_inputs is None else rule.data_inputs
    return [node.input[i] for i in idx if i < len(node.input) and node.input[i]]


def select(
    graph: onnx.GraphProto,
    index: GraphIndex,
    *,
    exclude_nodes: frozenset[str] = frozenset(),
    bad_tensors: dict[str, str] | None = None,
    weighted_only: bool = False,
    quantize_outputs: bool = False,
    raw_signal_float: bool = False,
    requested: frozenset[str] = frozenset(),
) -> Selection:
    """Walk nodes in graph order; `bad_tensors` (name -> reason) are never quantized.
    `weighted_only` (Coverage.WEIGHTED): only layers with weights, their inputs quantized and
    their outputs left float (a later quantized layer quantizes what it reads) - except a
    Conv's: ONNX Runtime has no integer Conv with a float output, so it is quantized (its
    Relu/Clip folded) and every reader reads it dequantized (`Selection.read_quantized`).
    `quantize_outputs`: graph outputs get a Q/DQ pair too (full-integer targets).
    `raw_signal_float`: convs over the raw signal stay float (`few_channel_conv`; ONNX
    Runtime's CPU kernels) except the `requested` ones, given an integer precision by name."""
    bad = bad_tensors or {}
    sel = Selection()
    quantized: set[str] = set()
    feeding = set() if quantize_outputs else feeds_a_layer(graph, index)
    for node in graph.node:
        rule = rule_for(node, index)
        reason = _float_reason(node, rule, index, exclude_nodes, bad, quantized)
        if reason is None and not quantize_outputs and _tail_arithmetic(node, rule, feeding):
            reason = TAIL_REASON
        if (
            reason is None
            and raw_signal_float
            and node.name not in requested
            and few_channel_conv(node, index)
        ):
            reason = FEW_CHANNELS_REASON
        if reason is None and weighted_only and rule is not None and rule.role is not Role.WEIGHTED:
            reason = "not a layer with weights (coverage: weighted)"
        if reason is not None:
            sel.float_nodes[node.name] = reason
            continue
        assert rule is not None
        sel.nodes.append(node)
        inputs = data_inputs(node, rule)
        if rule.role is Role.ELEMENTWISE and any(index.is_constant(t) for t in inputs):
            const, other = sorted(inputs, key=lambda t: not index.is_constant(t))
            sel.constants.setdefault(const, other)
            inputs = [other]
        own_output = not weighted_only or node.op_type in OUTPUT_QUANTIZED_LAYERS
        outputs = (
            [o for o in node.output[:1] if quantize_outputs or o not in index.graph_outputs]
            if own_output
            else []
        )
        if weighted_only:
            sel.read_quantized.update(outputs)
        if rule.role is Role.SHARED_RANGE:
            for out in outputs:
                sel.shared[out] = inputs[0]
        for t in [*inputs, *outputs]:
            if t not in quantized:
                quantized.add(t)
                sel.activations.append(t)
        if rule.role is not Role.SHARED_RANGE and own_output:
            # now, not after the walk: a MaxPool/Flatten after the Relu must see it quantized
            _register_fold(node, sel, index, quantized)
            act = fold_target(node, index) if weighted_only else None
            if act is not None:
                sel.read_quantized.add(act.output[0])
    return sel


TAIL_REASON = (
    "after the last layer with weights: no integer layer reads it, so integer arithmetic here "
    "only adds rounding (a detector's box decoding, say)"
)

# A Conv that reads at most this many input channels (mono or stereo audio, grayscale, RGB) over
# at most RAW_DEPTH inputs per output (channels x kernel: 3x5x5) stays float by default
RAW_CHANNELS = 3
RAW_DEPTH = 75
FEW_CHANNELS_REASON = (
    f"a convolution over at most {RAW_CHANNELS} input channels (the raw signal: pixels, audio): "
    "ONNX Runtime's integer kernel is no faster there and its 8-bit input grid loses most"
)


def few_channel_conv(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """A non-grouped Conv whose constant weight (out, in, *kernel) reads at most RAW_CHANNELS
    channels and RAW_DEPTH inputs per output: a model's first layer on pixels or audio, or a
    1-channel filter bank (`is_raw_signal_conv` decides). Only for ONNX Runtime's CPU targets
    (`PTQConfig.raw_signal_float`): full-integer and NPU targets quantize it."""
    if node.op_type != "Conv" or len(node.input) < 2 or not index.is_constant(node.input[1]):
        return False
    shape = index.array(node.input[1]).shape
    return (
        len(shape) >= 3
        and is_raw_signal_conv(shape[1], tuple(shape[2:]), attribute(node, "group", 1))
        and not feeds_pooling(node, index)
    )


POOLING = frozenset({"MaxPool", "AveragePool"})


def feeds_pooling(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """Whether `node`'s output, directly or through its Relu/Clip, is pooled. A float conv
    before a pool keeps the pool in float on the full-resolution map, where integer kernels
    pool uint8: measured slower (a CNN on MNIST, conv 1->32 then MaxPool: 0.62x -> 0.80x FP32
    latency with the conv float; a conv + BiLSTM recogniser 0.67x -> 0.79x), so such a conv
    is quantized."""
    outputs = [node.output[0]]
    act = fold_target(node, index)
    if act is not None:
        outputs.append(act.output[0])
    return any(c.op_type in POOLING for t in outputs for c in index.consumers.get(t, []))


def is_raw_signal_conv(in_channels: int, kernel: tuple[int, ...], groups: int) -> bool:
    """Whether a convolution is better left float on ONNX Runtime's CPU kernels, by its
    weight's shape (shared with QAT's `prepare_qat`, so that PTQ and QAT plan the same layers;
    both also keep it integer when a pool reads it, `feeds_pooling`). Each output sums only
    channels x kernel products, so the integer kernel saves little work beside quantizing its
    input and requantizing its output: measured on this machine, float is no slower up to a
    depth of 75 (the demo CNN's first conv, 1x3x3: 0.554x FP32 float vs 0.563x integer at
    batch 1) and slower at 147 (3x7x7); and the raw signal is where an 8-bit grid costs most
    (a VAD's 1-channel filter bank: 2 of 387 streamed decisions flipped with it integer, 1
    float; a YOLO-style detector +0.25 mAP50-95, an attention model +1.5 dB SQNR)."""
    depth = in_channels * int(np.prod(kernel))
    return groups == 1 and in_channels <= RAW_CHANNELS and depth <= RAW_DEPTH


# float by choice, not for want of a kernel (`analysis.support.NodeSupport.chosen`)
CHOSEN_REASONS = frozenset({TAIL_REASON, FEW_CHANNELS_REASON})
# an activation after a quantized layer: no float island (folded into the quantizer where its
# range allows, else the runtime fuses it with the layer, as TensorRT and ORT do with Relu)
FOLDED_REASON = "activation: folded into the preceding quantizer when its range allows"


def feeds_a_layer(graph: onnx.GraphProto, index: GraphIndex) -> set[str]:
    """Names of the nodes from which some layer with a constant weight (Conv, Gemm, MatMul)
    can be reached downstream."""
    feeding: set[str] = set()
    for node in reversed(graph.node):  # graph order is topological: readers come later
        for out in node.output:
            for reader in index.consumers.get(out, []):
                if reader.name in feeding or _has_weight(reader, index):
                    feeding.add(node.name)
    return feeding


def _has_weight(node: onnx.NodeProto, index: GraphIndex) -> bool:
    rule = rule_for(node, index)
    return rule is not None and rule.role is Role.WEIGHTED


def _tail_arithmetic(node: onnx.NodeProto, rule: OpRule | None, feeding: set[str]) -> bool:
    """Arithmetic with its own output range (Add, Mul, Concat, pooling) that no layer with
    weights reads, directly or through other nodes: integer kernels here save no work (their
    output is dequantized for float readers anyway) and each one rounds to 8 bits again; in a
    detector's head that is box decoding (anchor offsets, strides, pixels up to the image size)
    and the concatenation of boxes with 0-1 scores under one scale. Activation x activation
    MatMuls are compute, not arithmetic, and stay quantized."""
    return (
        rule is not None
        and rule.role in (Role.ELEMENTWISE, Role.OWN_RANGE)
        and node.op_type != "MatMul"
        and node.name not in feeding
    )


# A Concat whose inputs' ranges differ more than this keeps its output float: on one 8-bit scale
# the narrowest part would keep fewer than 4 of its 8 bits (boxes in pixels beside 0-1 scores)
CONCAT_RANGE_RATIO = 16.0


def mismatched_concats(
    graph: onnx.GraphProto, ranges: dict[str, tuple[float, float]]
) -> dict[str, str]:
    """Output tensor -> reason, for each Concat whose calibrated inputs span ranges too
    different for one scale: its output stays float and each input keeps the scale its
    producer gave it."""
    out = {}
    for node in graph.node:
        if node.op_type != "Concat" or not node.output:
            continue
        spans = {t: ranges[t] for t in node.input if t in ranges and ranges[t][1] > ranges[t][0]}
        if len(spans) < 2:
            continue
        wide = max(spans, key=lambda t: spans[t][1] - spans[t][0])
        narrow = min(spans, key=lambda t: spans[t][1] - spans[t][0])
        ratio = (spans[wide][1] - spans[wide][0]) / (spans[narrow][1] - spans[narrow][0])
        if ratio > CONCAT_RANGE_RATIO:
            (a, b), (c, d) = spans[wide], spans[narrow]
            out[node.output[0]] = (
                f"joins ranges {ratio:.0f}x apart ([{a:.3g}, {b:.3g}] and [{c:.3g}, {d:.3g}]): "
                "one 8-bit scale would round the narrow part away, so each part keeps its own "
                "scale and the Concat runs in float"
            )
    return out


def _float_reason(
    node: onnx.NodeProto,
    rule: OpRule | None,
    index: GraphIndex,
    exclude: frozenset[str],
    bad: dict[str, str],
    quantized: set[str],
) -> str | None:
    if rule is None:
        if node.op_type in FOLDABLE_ACTIVATIONS and node.input and node.input[0] in quantized:
            return FOLDED_REASON
        if node.op_type in FOLDABLE_ACTIVATIONS:
            return f"{node.op_type} after a float node: nothing to fold it into"
        return f"{node.op_type} has no integer kernel among ONNX Runtime's QDQ fusions"
    if node.name in exclude:
        return "excluded by the configuration"
    inputs = data_inputs(node, rule)
    if rule.role is Role.SHARED_RANGE:
        return (
            None
            if inputs and inputs[0] in quantized and inputs[0] not in bad
            else "data movement between float tensors"
        )
    constants = [t for t in inputs if index.is_constant(t)]
    if constants:
        why = _constant_operand_reason(node, constants, index)
        if why is not None:
            return why
    for t in inputs:
        if t in bad:
            return bad[t]
    for t in node.output[:1]:
        if t in bad:
            return bad[t]
    if rule.role is Role.WEIGHTED:
        return _weight_reason(node, rule, index)
    return None


def _constant_operand_reason(
    node: onnx.NodeProto, constants: list[str], index: GraphIndex
) -> str | None:
    """Why a node with constant inputs stays float: only Add/Mul with one constant float32
    operand of representable values run integer (QLinearAdd/QLinearMul; the pieces of
    hard-swish, GELU and LayerNorm, a detector's anchor offsets)."""
    const = constants[0]
    if node.op_type not in CONSTANT_OPERAND_OPS or len(constants) != 1 or len(node.input) != 2:
        return f"input {const!r} is a constant, not an activation"
    values = index.array(const)
    if values.dtype != np.float32 or values.size == 0:
        return f"constant operand {const!r} is not float32"
    if not np.isfinite(values).all() or np.abs(values).max() > RANGE_LIMIT:
        return f"constant operand {const!r} holds values an 8-bit grid cannot (a sentinel)"
    return None


def _weight_reason(node: onnx.NodeProto, rule: OpRule, index: GraphIndex) -> str | None:
    assert rule.weight_input is not None
    weight = node.input[rule.weight_input]
    if not index.is_constant(weight):
        return "weight is computed at run time, not a constant"
    if index.array(weight).dtype != np.float32:
        return "weight is not float32"
    if node.op_type == "Gemm" and not plain_gemm(node):
        return "Gemm with transA/alpha/beta has no fused integer kernel"
    if node.op_type == "MatMul" and index.array(weight).ndim != 2:
        return "MatMul with a batched (3-D+) weight has no per-channel integer kernel"
    return None


def _register_fold(
    node: onnx.NodeProto, sel: Selection, index: GraphIndex, quantized: set[str]
) -> None:
    """A fold candidate (decided after calibration, `planner.plan_folds`); the activation's
    output is quantized either way."""
    act = fold_target(node, index)
    if act is None:
        return
    sel.fold_candidates[act.name] = node.output[0]
    if act.output[0] not in quantized:
        quantized.add(act.output[0])
        sel.activations.append(act.output[0])


def fold_target(node: onnx.NodeProto, index: GraphIndex) -> onnx.NodeProto | None:
    """The Relu/Clip(0, c) that is the sole consumer of `node`'s output, if neither tensor is a
    graph output: the one activation a quantizer after it could do the work of."""
    if not node.output:
        return None
    out = node.output[0]
    users = index.consumers.get(out, [])
    if (
        out in index.graph_outputs
        or len(users) != 1
        or users[0].op_type not in FOLDABLE_ACTIVATIONS
    ):
        return None
    act = users[0]
    if act.output[0] in index.graph_outputs or not _clips_at_zero(act, index):
        return None
    if any(subgraphs(reader) for reader in index.consumers.get(act.output[0], [])):
        return None  # a branch reads the float tensor by name, not through the quantizer
    return act


def _clips_at_zero(node: onnx.NodeProto, index: GraphIndex) -> bool:
    if node.op_type == "Relu":
        return True
    low = node.input[1] if len(node.input) > 1 and node.input[1] else None
    if low is None:
        return attribute(node, "min", None) == 0.0
    return (
        index.is_constant(low)
        and float(index.array(low)) == 0.0
        and (len(node.input) < 3 or not node.input[2] or index.is_constant(node.input[2]))
    )


def clip_max(node: onnx.NodeProto, index: GraphIndex) -> float:
    """Upper bound of a Relu (inf) or Clip node."""
    if node.op_type == "Relu":
        return float("inf")
    if len(node.input) > 2 and node.input[2]:
        return float(index.array(node.input[2]))
    value = attribute(node, "max", None)
    return float("inf") if value is None else float(value)
