"""Operator-support check: which nodes run in integer on a target, which stay float, and why.

A single float operator in a quantized graph is a "float island": the runtime dequantizes,
computes in float and quantizes again, and an NPU splits the graph around it. Three ways to
decide, each the closest to the real runtime that runs here:
- planned (a float model): what the quantizer will put in integer for the target's preset;
- ONNX Runtime CPU targets: the quantized graph after ORT's own QDQ fusions (its optimizer is
  asked, nothing is guessed): a node left as a float Conv/Add between Q/DQ is an island;
- QNN / TensorRT (not runnable here): QDQ node units, the pattern both partition by: a node is
  integer when every input comes from a DequantizeLinear (and, for full-integer targets, every
  output goes to a QuantizeLinear).
TFLite models are checked from their tensor types (`edgequant.tflite.check_tflite`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import onnx

from edgequant.config import Method, PTQConfig, Target
from edgequant.errors import UnsupportedOperatorError
from edgequant.exporter.select import (
    CHOSEN_REASONS,
    FEW_CHANNELS_REASON,
    POOLING,
    is_raw_signal_conv,
)
from edgequant.graph.index import attribute, subgraph_reads, subgraphs
from edgequant.graph.macs import all_nodes, float_tensors, node_macs, weight_macs
from edgequant.graph.rules import FOLDABLE_ACTIVATIONS
from edgequant.model import Model
from edgequant.provenance import SupportBrief
from edgequant.targets import Runtime, TargetPreset, preset

_BOUNDARY = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
# ONNX Runtime CPU kernels that compute in integer (what its QDQ fusions produce).
ORT_INTEGER_KERNELS = frozenset(
    {
        "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul",
        "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid",
        "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean", "QLinearWhere",
        "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
        "QAttention", "QEmbedLayerNormalization", "DynamicQuantizeLSTM",
    }
)  # fmt: skip
_SHAPE_OUTPUT = frozenset({"Shape", "Size"})
_BODY_COMPUTE = frozenset(
    {"Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN", "FusedConv", "FusedGemm",
     "FusedMatMul"}
)  # fmt: skip
_WEIGHT_ONLY = {
    "MatMulNBits": "weight-only: 4-bit weights unpacked inside the kernel, float activations",
    "GatherBlockQuantized": "weight-only: a quantized table read back to float",
}


@dataclass(frozen=True)
class NodeSupport:
    """One compute node: integer or float on the target, why if float, and its MACs.
    `chosen`: float by the quantizer's choice, because it runs as fast and more faithfully
    so on this target (a raw-signal first conv, a detector's box decoding), not for want of
    a kernel."""

    name: str
    op_type: str
    integer: bool
    reason: str = ""
    macs: int = 0
    chosen: bool = False


@dataclass(frozen=True)
class SupportReport:
    """Per-node integer/float verdicts for one model on one target."""

    target: str
    runtime: str
    stage: str  # "planned" (float model, before quantization), "quantized" or "tflite"
    method: str  # how the verdicts were reached
    nodes: tuple[NodeSupport, ...]
    # what NodeSupport.integer means here: "integer" (quantized models), or "fp16" for an FP16
    # model, where it says the node computes in half precision on the runtime
    kind: str = "integer"

    @property
    def float_nodes(self) -> list[NodeSupport]:
        return [n for n in self.nodes if not n.integer]

    @property
    def fully_integer(self) -> bool:
        return not self.float_nodes

    @property
    def fallbacks(self) -> list[NodeSupport]:
        """Float nodes that are not the quantizer's choice: no kernel, excluded, or broken
        ranges (what `--strict` refuses)."""
        return [n for n in self.float_nodes if not n.chosen]

    @property
    def integer_fraction(self) -> float:
        """Share of the multiply-accumulates in integer nodes (node share if no MACs known)."""
        total = sum(n.macs for n in self.nodes)
        if total == 0:
            return sum(n.integer for n in self.nodes) / max(len(self.nodes), 1)
        return sum(n.macs for n in self.nodes if n.integer) / total

    def summary(self) -> str:
        """One line: counts, compute share and the first float nodes."""
        n_int = len(self.nodes) - len(self.float_nodes)
        line = (
            f"{self.target} ({self.runtime}, {self.stage}): {n_int}/{len(self.nodes)} compute "
            f"nodes {self.kind}, {100 * self.integer_fraction:.1f}% of MACs"
        )
        if self.float_nodes:
            first = self.float_nodes[0]
            more = f" and {len(self.float_nodes) - 1} more" if len(self.float_nodes) > 1 else ""
            why = f"by choice: {first.reason}" if first.chosen else first.reason
            line += f"; float: {first.name} ({first.op_type}: {why}){more}"
        return line

    def markdown(self, limit: int = 20) -> str:
        """A summary line and a table of the float nodes with their reasons."""
        out = [f"- {self.summary()}", f"  (decided from {self.method})"]
        if self.float_nodes:
            out += ["", "| float node | op | MACs | why |", "|---|---|---:|---|"]
            out += [
                f"| {n.name} | {n.op_type} | {n.macs:,} | {n.reason} |"
                for n in self.float_nodes[:limit]
            ]
            if len(self.float_nodes) > limit:
                out.append(f"| ... {len(self.float_nodes) - limit} more | | | |")
        return "\n".join(out)

    def brief(self) -> SupportBrief:
        """What a model's sidecar and a report keep: enough to see the float islands."""
        return SupportBrief(
            target=self.target,
            runtime=self.runtime,
            kind=self.kind,
            summary=self.summary(),
            integer_fraction=round(self.integer_fraction, 4),
            integer_nodes=len(self.nodes) - len(self.float_nodes),
            float_nodes={n.name: n.reason for n in self.float_nodes},
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nodes"] = [asdict(n) for n in self.nodes]
        data["integer_fraction"] = self.integer_fraction
        data["fully_integer"] = self.fully_integer
        data["fallbacks"] = [n.name for n in self.fallbacks]
        return data


def check_support(model: Model, target: Target | str | PTQConfig | None = None) -> SupportReport:
    """Which nodes of `model` run in integer on `target` (a Target, its name, or a PTQConfig
    whose target and coverage are used; default: this CPU). A float model is checked as the
    quantizer plans it; a quantized (QDQ) model as its runtime will run it."""
    if isinstance(target, PTQConfig):
        config = target
    else:
        config = PTQConfig.for_target(target or Target.detect())
    p = preset(config.target)  # a QDQ model for tflite: checked as node units, as converted
    quantized = any(n.op_type in _BOUNDARY for n in model.proto.graph.node)
    if not quantized and _has_fp16(model.proto):
        return _fp16(model, p)
    if not quantized:
        if p.runtime is Runtime.ORT_CPU and config.method is Method.STATIC:
            return _planned_by_ort(model, config, p)
        return _planned(model, config, p)
    if p.runtime is Runtime.ORT_CPU:
        return _ort_cpu(model, p)
    return _node_units(model, p)


def _planned_by_ort(model: Model, config: PTQConfig, p: TargetPreset) -> SupportReport:
    """Before calibration, ONNX Runtime's own fusions of the model quantized with placeholder
    ranges (`ptq.probe`): the fused graph does not depend on the scale values."""
    from edgequant.ptq.probe import probe_model

    report = _ort_cpu(probe_model(model, config), p)
    method = "ONNX Runtime's fusions of the model quantized with placeholder ranges"
    return replace(report, stage="planned", method=method)


def _planned(model: Model, config: PTQConfig, p: TargetPreset) -> SupportReport:
    from edgequant.config import Coverage
    from edgequant.exporter.precision import float_layers, requested_layers
    from edgequant.exporter.select import select
    from edgequant.graph.index import GraphIndex
    from edgequant.graph.preprocess import optimize
    from edgequant.ptq.static import resolve_coverage

    fp32 = optimize(model)
    graph = fp32.proto.graph
    coverage = resolve_coverage(config.coverage, graph)
    sel = select(
        graph, GraphIndex.of(graph), exclude_nodes=frozenset(float_layers(config.precisions)),
        weighted_only=coverage is Coverage.WEIGHTED, quantize_outputs=config.full_integer,
        raw_signal_float=config.raw_signal_float, requested=requested_layers(config.precisions),
    )  # fmt: skip
    chosen = {n.name for n in sel.nodes} | set(sel.fold_candidates)
    floats = float_tensors(fp32.proto)
    verdicts = [
        (n, n.name in chosen, "" if n.name in chosen else sel.float_nodes.get(n.name, ""))
        for n in graph.node
        if any(t in floats for t in [*n.input, *subgraph_reads(n)] if t)  # not shape arithmetic
    ]
    return _report(fp32.proto, p, "planned", f"the {p.name} preset's rules", verdicts)


def _ort_cpu(model: Model, p: TargetPreset) -> SupportReport:
    """Ask ONNX Runtime: its optimizer turns every QDQ pattern it has a kernel for into an
    integer op; whatever is left reading dequantized tensors runs in float."""
    from edgequant.graph.preprocess import ort_optimized

    fused = ort_optimized(model.proto, extended=True)
    planned = {
        **dict.fromkeys(raw_signal_convs(fused), FEW_CHANNELS_REASON),
        **(model.provenance.float_nodes if model.provenance is not None else {}),
    }
    integer: set[str] = set()
    dequantized: set[str] = set()
    floaty = {
        i.name
        for i in fused.graph.input
        if i.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    }
    verdicts: list[Verdict] = []
    for node in fused.graph.node:
        ins = [t for t in [*node.input, *subgraph_reads(node)] if t]
        if node.op_type == "QuantizeLinear":
            integer.update(node.output)
            continue
        if node.op_type in _BOUNDARY:
            floaty.update(node.output)
            dequantized.update(node.output)
            continue
        if node.op_type in ORT_INTEGER_KERNELS:
            verdicts.append((node, True, ""))
            floats_out = node.op_type in (
                "MatMulIntegerToFloat",
                "DynamicQuantizeMatMul",
                "DynamicQuantizeLSTM",
            ) or (node.op_type == "QGemm" and len(node.input) < 9)
            (floaty if floats_out else integer).update(node.output)
            continue
        if any(t in floaty for t in ins):
            reason = planned.get(node.name) or _WEIGHT_ONLY.get(node.op_type)
            if reason is None and any(t in dequantized for t in ins):
                reason = (
                    f"no fused integer kernel for this {node.op_type} in ONNX Runtime's CPU "
                    f"provider (dequantize, float {node.op_type}, quantize)"
                )
            verdicts.append((node, False, reason or "not quantized: reads float tensors"))
            if node.op_type not in _SHAPE_OUTPUT:
                floaty.update(node.output)
        elif any(t in integer for t in ins):
            verdicts.append((node, True, ""))  # data movement on integers (Flatten, MaxPool)
            integer.update(node.output)
    return _report(
        model.proto, p, "quantized", "ONNX Runtime's CPU graph after its QDQ fusions", verdicts,
        planned,
    )  # fmt: skip


def raw_signal_convs(proto: onnx.ModelProto) -> set[str]:
    """Names of the convs over the raw signal (`select.is_raw_signal_conv`), in the graph and
    its bodies: on ONNX Runtime's CPU a float one there is the quantizer's choice, which a
    model loaded without its sidecar still shows."""
    graphs = [proto.graph, *(b for n in all_nodes(proto.graph) for b in subgraphs(n))]
    dims = {i.name: tuple(i.dims) for g in graphs for i in g.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in all_nodes(proto.graph):
        for t in node.input:
            readers.setdefault(t, []).append(node)

    def pooled(node: onnx.NodeProto) -> bool:  # through a Relu/Clip, as select.feeds_pooling
        for _ in range(2):
            after = readers.get(node.output[0], [])
            if len(after) != 1:
                return False
            node = after[0]
            if node.op_type in POOLING:
                return True
            if node.op_type not in FOLDABLE_ACTIVATIONS:
                return False
        return False

    return {
        node.name
        for node in all_nodes(proto.graph)
        if node.op_type in ("Conv", "FusedConv")
        and len(node.input) > 1
        and len(shape := dims.get(node.input[1], ())) >= 3
        and is_raw_signal_conv(shape[1], shape[2:], attribute(node, "group", 1))
        and not pooled(node)
    }


def _node_units(model: Model, p: TargetPreset) -> SupportReport:
    """QDQ node units as QNN and TensorRT partition: every float input dequantized (and every
    output quantized, for full-integer targets) or the node runs outside the accelerator."""
    graph = model.proto.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    floats = float_tensors(model.proto)
    outputs = {o.name for o in graph.output}
    constants = {i.name for i in graph.initializer}
    verdicts: list[Verdict] = []
    for node in graph.node:
        if node.op_type in _BOUNDARY:
            continue
        ins = [t for t in node.input if t and t in floats]
        if not ins:
            continue
        raw = [
            t
            for t in ins
            if (producer.get(t) is None or producer[t].op_type != "DequantizeLinear")
            and (p.full_integer or t not in constants)  # TensorRT takes float biases
        ]
        if raw:
            verdicts.append((node, False, f"reads {raw[0]!r} without a DequantizeLinear"))
            continue
        if p.full_integer and node.op_type not in _SHAPE_OUTPUT:
            unq = [
                o for o in node.output
                if o in outputs or any(c.op_type != "QuantizeLinear" for c in consumers.get(o, []))
            ]  # fmt: skip
            if unq:
                verdicts.append((node, False, f"output {unq[0]!r} is not quantized again"))
                continue
        verdicts.append((node, True, ""))
    return _report(
        model.proto, p, "quantized", "QDQ node units (how QNN and TensorRT partition)", verdicts
    )


Verdict = tuple[onnx.NodeProto, bool, str]  # a node of the analysed graph, integer?, why not
_FP16 = onnx.TensorProto.FLOAT16


def _has_fp16(proto: onnx.ModelProto) -> bool:
    return any(i.data_type == _FP16 for i in proto.graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == _FP16 for a in n.attribute)
        for n in proto.graph.node
    )


def _fp16(model: Model, p: TargetPreset) -> SupportReport:
    """An FP16 model: which compute nodes run in half precision on the runtime, which in
    float32. For ONNX Runtime's CPU its own optimized graph is read: where the provider has no
    float16 kernel it inserts Casts back to float32 around the node."""
    proto = model.proto
    method = "tensor types of the FP16 graph"
    if p.runtime is Runtime.ORT_CPU:
        from edgequant.graph.preprocess import ort_optimized

        proto = ort_optimized(model.proto, extended=True)
        method = "tensor types in ONNX Runtime's CPU graph (its inserted Casts included)"
    half = {i.name for i in proto.graph.initializer if i.data_type == _FP16}
    half |= {i.name for i in proto.graph.input if i.type.tensor_type.elem_type == _FP16}
    floats = float_tensors(proto) | half
    verdicts: list[Verdict] = []
    for node in proto.graph.node:
        ins = [t for t in [*node.input, *subgraph_reads(node)] if t in floats]
        if node.op_type == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to == _FP16:
                half.update(node.output)
            if to in (_FP16, onnx.TensorProto.FLOAT):
                floats.update(node.output)
            continue
        if not ins or node.op_type in _SHAPE_OUTPUT:
            continue
        in_half = all(t in half for t in ins)
        reason = (
            ""
            if in_half
            else (
                "computes in float32: ONNX Runtime's CPU provider has no float16 kernel for it"
                if p.runtime is Runtime.ORT_CPU
                else "kept in float32 by the FP16 conversion"
            )
        )
        verdicts.append((node, in_half, reason))
        floats.update(node.output)
        if in_half:
            half.update(node.output)
    report = _report(proto, p, "fp16", method, verdicts)
    return replace(report, kind="fp16")


def _report(
    model: onnx.ModelProto,
    p: TargetPreset,
    stage: str,
    method: str,
    verdicts: list[Verdict],
    planned: dict[str, str] | None = None,
) -> SupportReport:
    """NodeSupport per verdict, with MACs from `model` (by node name, or for a node the runtime
    fused and renamed, by the weight it reads); `planned`: why the quantizer left nodes inside
    control-flow bodies float (its provenance)."""
    by_name, by_weight = node_macs(model), weight_macs(model)
    nodes = []
    for node, integer, reason in _with_bodies(verdicts, planned or {}):
        name = node.name or f"{node.op_type}:{node.output[0] if node.output else ''}"
        macs = by_name.get(node.name, 0) or max(
            (by_weight.get(t, 0) for t in node.input), default=0
        )
        chosen = not integer and reason in CHOSEN_REASONS
        nodes.append(NodeSupport(name, node.op_type, integer, reason, macs, chosen))
    return SupportReport(p.name, p.runtime.value, stage, method, tuple(nodes))


def _with_bodies(verdicts: list[Verdict], planned: dict[str, str]) -> list[Verdict]:
    """After each control-flow node, the compute nodes of its bodies (every If branch, a Loop
    or Scan body once): a VAD can hold all its compute in `If` branches, which a check of the
    top-level nodes would not see. Integer only where ONNX Runtime runs an integer kernel."""
    out: list[Verdict] = []
    for verdict in verdicts:
        out.append(verdict)
        node = verdict[0]
        for inner in all_nodes(node)[1:]:
            if inner.op_type in ORT_INTEGER_KERNELS:
                out.append((inner, True, ""))
            elif inner.op_type in _BODY_COMPUTE:
                where = f"inside {node.op_type} {node.name or node.output[0]}"
                why = (
                    planned.get(inner.name)
                    or f"{where}: a branch stays float when the calibration data never takes it"
                    if node.op_type == "If"
                    else f"{where}: edgequant does not quantize Loop and Scan bodies yet"
                )
                out.append((inner, False, why))
    return out


def require_integer(report: SupportReport) -> None:
    """Raise when any node falls back to float (`--strict`): name them, say why and what to
    do. Nodes kept float by choice (`NodeSupport.chosen`) are no fallback."""
    bad = report.fallbacks
    if not bad:
        return
    shown = "; ".join(f"{n.name} ({n.op_type}: {n.reason})" for n in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    raise UnsupportedOperatorError(
        f"--strict: {len(bad)} node(s) would run in {'float' if report.kind == 'integer' else 'float32'} on {report.target} "
        f"({report.stage}): {shown}{more}. Quantize for this target (--target), replace or "
        "exclude those operators, or drop --strict to accept float fallbacks "
        "(`edgequant check` lists them all)"
    )
