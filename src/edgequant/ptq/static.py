"""Static post-training quantization: calibrate activation ranges, then export QDQ ONNX."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgequant.config import BiasCorrection, Calibrator, Equalization, PTQConfig
from edgequant.errors import NothingToQuantizeError
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
    fp32 = optimize(model)
    exclude = frozenset(config.exclude_nodes)
    equalized = 0
    if config.equalization is Equalization.CROSS_LAYER:
        fp32, equalized = equalize_model(fp32, exclude)
    index = GraphIndex.of(fp32.proto.graph)
    sel = select(fp32.proto.graph, index, exclude_nodes=exclude)
    if not sel.nodes:
        raise NothingToQuantizeError(_nothing_message(sel))
    correct = config.bias_correction is BiasCorrection.EMPIRICAL
    result = calibrate(
        fp32,
        sel.observed_tensors(),
        calibration,
        num_bins=config.num_bins,
        max_samples=config.max_calibration_samples,
        histogram=config.calibrator is not Calibrator.MINMAX,
        channel_means=tuple(n.input[0] for n in sel.nodes if correct and correctable(n, index)),
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
    if bad:
        sel = select(fp32.proto.graph, index, exclude_nodes=exclude, bad_tensors=bad)
        if not sel.nodes:
            raise NothingToQuantizeError(_nothing_message(sel))
    corrected = 0
    if correct:
        corrected = correct_biases(
            fp32.proto.graph,
            sel.nodes,
            result.channel_means,
            lambda node, w: _round_trip(w, _aim(config.weights, node)),
        )
        index = GraphIndex.of(fp32.proto.graph)
    plan = build_plan(index, sel, ranges, config)
    out = Model(export_qdq(fp32.proto, plan), f"{model.name}.int8")
    out.provenance = {
        "config": config.to_dict(),
        "calibration_samples": result.samples,
        "quantized_nodes": len(sel.nodes),
        "equalized_pairs": equalized,
        "bias_corrected_nodes": corrected,
        "folded_activations": plan.folded,
        "float_nodes": {k: v for k, v in sel.float_nodes.items() if k not in set(plan.folded)},
    }
    return out


def build_plan(
    index: GraphIndex, sel: Selection, ranges: dict[str, tuple[float, float]], config: PTQConfig
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
        if weight not in plan.weights:
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
