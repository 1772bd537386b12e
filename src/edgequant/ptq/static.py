"""Static post-training quantization: calibrate activation ranges, then export QDQ ONNX."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.config import BiasCorrection, Calibrator, Equalization, PTQConfig, Rounding
from edgequant.errors import ConfigError, NothingToQuantizeError
from edgequant.exporter import QuantPlan, TensorQuant, export_qdq
from edgequant.exporter.graph import GraphIndex, attribute
from edgequant.model import Model
from edgequant.observers import clip_range
from edgequant.primitives import fake_quantize, reduce_range, scale_zero_point
from edgequant.progress import ProgressFn, silent
from edgequant.ptq.bias_correct import correct_biases, correctable
from edgequant.ptq.calibrate import calibrate
from edgequant.ptq.equalize import equalize_model
from edgequant.ptq.preprocess import optimize
from edgequant.ptq.rules import RANGE_LIMIT, Role
from edgequant.ptq.select import Selection, clip_max, rule_for, select
from edgequant.spec import PerChannel, QuantSpec


def quantize_static(
    model: Model, config: PTQConfig, calibration: Iterable[Any], progress: ProgressFn = silent
) -> Model:
    """Quantize weights and activations to integers; ranges from `calibration` batches."""
    return quantize_calibrated(calibrate_static(model, config, calibration, progress))


@dataclass
class Calibrated:
    """The FP32 graph after clean-up (and equalisation) with everything calibration measured:
    enough to build the quantized model for any subset of its nodes without running the data
    again (sensitivity analysis builds dozens)."""

    model_name: str
    fp32: Model
    config: PTQConfig
    ranges: dict[str, tuple[float, float]]
    bad_tensors: dict[str, str]
    channel_means: dict[str, np.ndarray]
    samples: int
    equalized_pairs: int
    rounded: dict[str, tuple[np.ndarray, TensorQuant]] = field(default_factory=dict)

    def weighted_nodes(self) -> list[onnx.NodeProto]:
        """The quantized nodes with a constant weight (Conv, Gemm, MatMul), in graph order."""
        index = GraphIndex.of(self.fp32.proto.graph)
        sel = self.selection(frozenset(), index)
        return [n for n in sel.nodes if (r := rule_for(n, index)) and r.role is Role.WEIGHTED]

    def selection(self, exclude: frozenset[str], index: GraphIndex) -> Selection:
        exclude = exclude | frozenset(self.config.exclude_nodes)
        sel = select(
            self.fp32.proto.graph, index, exclude_nodes=exclude, bad_tensors=self.bad_tensors
        )
        if not sel.nodes:
            raise NothingToQuantizeError(_nothing_message(sel))
        return sel


def calibrate_static(
    model: Model, config: PTQConfig, calibration: Iterable[Any], progress: ProgressFn = silent
) -> Calibrated:
    """Clean up (and equalise) the graph, then one calibration pass for every tensor involved."""
    fp32 = optimize(model, min_opset=_min_opset(config))
    exclude = frozenset(config.exclude_nodes)
    equalized = 0
    if config.equalization is Equalization.CROSS_LAYER:
        fp32, equalized = equalize_model(fp32, exclude)
    index = GraphIndex.of(fp32.proto.graph)
    sel = select(fp32.proto.graph, index, exclude_nodes=exclude)
    if not sel.nodes:
        raise NothingToQuantizeError(_nothing_message(sel))
    correct = config.bias_correction is BiasCorrection.EMPIRICAL
    ada = config.rounding is Rounding.ADAROUND
    result = calibrate(
        fp32,
        sel.observed_tensors(),
        calibration,
        num_bins=config.num_bins,
        max_samples=config.max_calibration_samples,
        histogram=config.calibrator is not Calibrator.MINMAX,
        channel_means=tuple(n.input[0] for n in sel.nodes if correct and correctable(n, index)),
        keep=tuple(n.input[0] for n in sel.nodes if ada and correctable(n, index)),
        keep_samples=config.rounding_samples if ada else 0,
        progress=progress,
    )
    ranges = {
        t: clip_range(obs, config.calibrator, config.activation_spec, config.percentile)
        for t, obs in result.observers.items()
        if t not in result.non_float
    }
    bad = {t: "not a float32 tensor" for t in result.non_float}
    bad.update(
        {
            t: f"calibrated range [{lo:.3g}, {hi:.3g}] is a sentinel value (e.g. an attention mask), not a signal"
            for t, (lo, hi) in ranges.items()
            if max(abs(lo), abs(hi)) > RANGE_LIMIT
        }
    )
    cal = Calibrated(
        model.name, fp32, config, ranges, bad, result.channel_means, result.samples, equalized
    )
    if ada:
        cal.rounded = _adaround(cal, result.kept, progress)
    return cal


def _adaround(
    cal: Calibrated, kept: dict[str, np.ndarray], progress: ProgressFn
) -> dict[str, tuple[np.ndarray, TensorQuant]]:
    """AdaRound every weighted node with kept inputs: weight name -> (its values, its quant)."""
    try:
        from edgequant.algorithms.adaround import AdaRoundConfig
        from edgequant.ptq.adaround_graph import adaround_node
    except ImportError:
        raise ConfigError("AdaRound needs torch: pip install 'edgequant[torch]'") from None
    index = GraphIndex.of(cal.fp32.proto.graph)
    nodes = [n for n in cal.weighted_nodes() if n.input[0] in kept]
    rounded = {}
    for i, node in enumerate(nodes):
        tq = weight_quant(index.array(node.input[1]), _aim(cal.config.weights, node))
        values = adaround_node(node, index, tq, kept[node.input[0]], AdaRoundConfig())
        if values is not None:
            rounded[node.input[1]] = (values, tq)
        progress("adaptive rounding", i + 1, len(nodes))
    return rounded


def quantize_calibrated(cal: Calibrated, exclude: frozenset[str] = frozenset()) -> Model:
    """The QDQ model of `cal` with the nodes in `exclude` (and the config's) left in float."""
    config = cal.config
    proto = onnx.ModelProto()
    proto.CopyFrom(cal.fp32.proto)  # bias correction edits biases of the nodes quantized now
    index = GraphIndex.of(proto.graph)
    sel = cal.selection(exclude, index)
    missing = [t for t in sel.observed_tensors() if t not in cal.ranges]
    if missing:
        raise NothingToQuantizeError(f"no calibrated range for {missing[0]!r}")  # never expected
    corrected = 0
    if config.bias_correction is BiasCorrection.EMPIRICAL:
        corrected = correct_biases(
            proto.graph,
            sel.nodes,
            cal.channel_means,
            lambda node, w: (
                cal.rounded[node.input[1]][0]
                if node.input[1] in cal.rounded
                else _round_trip(w, _aim(config.weights, node))
            ),
        )
    rounded = _use_rounded(proto, sel, cal.rounded)
    index = GraphIndex.of(proto.graph)
    plan = build_plan(index, sel, cal.ranges, config, rounded)
    plan.min_opset = _min_opset(config)
    out = Model(export_qdq(proto, plan), f"{cal.model_name}.int8")
    out.provenance = {
        "config": config.to_dict(),
        "calibration_samples": cal.samples,
        "quantized_nodes": len(sel.nodes),
        "equalized_pairs": cal.equalized_pairs,
        "bias_corrected_nodes": corrected,
        "adarounded_weights": len(rounded),
        "folded_activations": plan.folded,
        "float_nodes": {k: v for k, v in sel.float_nodes.items() if k not in set(plan.folded)},
    }
    return out


def _min_opset(config: PTQConfig) -> int:
    """4-bit tensors need opset 21 (INT4/UINT4 in QuantizeLinear/DequantizeLinear)."""
    four_bit = 4 in (config.weights.qtype.bits, config.activation_spec.qtype.bits)
    return 21 if four_bit else 13


def _use_rounded(
    proto: onnx.ModelProto, sel: Selection, rounded: dict[str, tuple[np.ndarray, TensorQuant]]
) -> dict[str, TensorQuant]:
    """Put AdaRound's values (on the grid already) into the weights of the quantized nodes."""
    names = {n.input[1] for n in sel.nodes if len(n.input) > 1} & set(rounded)
    for init in proto.graph.initializer:
        if init.name in names:
            init.CopyFrom(numpy_helper.from_array(rounded[init.name][0], init.name))
    return {name: rounded[name][1] for name in names}


def build_plan(
    index: GraphIndex,
    sel: Selection,
    ranges: dict[str, tuple[float, float]],
    config: PTQConfig,
    weight_quants: dict[str, TensorQuant] | None = None,
) -> QuantPlan:
    """Turn calibrated ranges into scales and zero-points for every tensor the selection names."""
    act_spec = config.activation_spec
    plan = QuantPlan()
    folded_inputs = _decide_folds(index, sel, ranges, act_spec, plan)
    for t in sel.activations:
        if t in folded_inputs or t in sel.shared:
            continue
        scale, zp = scale_zero_point(*ranges[t], act_spec)
        plan.activations[t] = TensorQuant(act_spec, scale, zp)
    for out, src in sel.shared.items():
        plan.activations[out] = plan.activations[src]
    for node in sel.nodes:
        rule = rule_for(node, index)
        if rule is None or rule.role is not Role.WEIGHTED or rule.weight_input is None:
            continue
        weight = node.input[rule.weight_input]
        if weight in (weight_quants or {}):
            plan.weights[weight] = weight_quants[weight]  # type: ignore[index]
        elif weight not in plan.weights:
            plan.weights[weight] = weight_quant(index.array(weight), _aim(config.weights, node))
        bias = (
            node.input[rule.bias_input]
            if rule.bias_input is not None and len(node.input) > rule.bias_input
            else ""
        )
        if (
            bias
            and index.is_constant(bias)
            and index.array(bias).ndim == 1
            and bias not in plan.biases
        ):
            plan.biases[bias] = (node.input[0], weight)
    return plan


def weight_quant(values: np.ndarray, spec: QuantSpec) -> TensorQuant:
    """Scale and zero-point of a constant weight from its own min/max at `spec`'s granularity."""
    lo, hi = reduce_range(values, spec)
    scale, zp = scale_zero_point(lo, hi, spec)
    return TensorQuant(spec, scale, zp)


def _round_trip(values: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """`values` quantized as `weight_quant` does, then dequantized: what the kernel multiplies."""
    tq = weight_quant(values, spec)
    return fake_quantize(values, tq.scale, tq.zero_point, spec)


def _aim(template: QuantSpec, node: Any) -> QuantSpec:
    """Point a per-channel template at the operator's output-channel axis."""
    if not isinstance(template.granularity, PerChannel):
        return template
    axis = 0
    if (node.op_type == "Gemm" and not attribute(node, "transB", 0)) or node.op_type == "MatMul":
        axis = 1
    return QuantSpec(template.qtype, template.symmetry, PerChannel(axis), template.narrow_range)


def _decide_folds(
    index: GraphIndex,
    sel: Selection,
    ranges: dict[str, tuple[float, float]],
    spec: QuantSpec,
    plan: QuantPlan,
) -> set[str]:
    """Fold Relu/Clip when the quantizer of its output clips at 0 exactly (zero-point = qmin)
    and never exceeds the Clip's upper bound. Returns the tensors that no longer exist."""
    removed: set[str] = set()
    nodes = {n.name: n for n in index.producer.values()}
    for act_name, pre in sel.fold_candidates.items():
        act = nodes[act_name]
        lo, hi = ranges[act.output[0]]
        scale, zp = scale_zero_point(lo, hi, spec)
        top = float(scale) * (spec.qmax - int(zp))
        if int(zp) == spec.qmin and top <= clip_max(act, index) * (1 + 1e-6):
            plan.folded.append(act_name)
            removed.add(pre)
    return removed


def _nothing_message(sel: Selection) -> str:
    ops = sorted({reason for reason in sel.float_nodes.values()})[:3]
    return "the model has no operator that static INT8 can quantize (" + "; ".join(ops) + ")"
