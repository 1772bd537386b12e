"""Static post-training quantization: calibrate activation ranges, then export QDQ ONNX."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgequant.config import (
    BiasCorrection,
    Calibrator,
    Coverage,
    Equalization,
    Precision,
    PTQConfig,
    Rounding,
    Smoothing,
)
from edgequant.errors import ConfigError, NothingToQuantizeError
from edgequant.exporter.plan import QuantPlan, TensorQuant
from edgequant.exporter.planner import aim_weight_spec, plan_static, plan_tables, weight_quant
from edgequant.exporter.precision import (
    activation_specs,
    check_names,
    float_layers,
    requested_layers,
    weight_specs,
)
from edgequant.exporter.recurrent import recurrent_layers
from edgequant.exporter.select import (
    FEW_CHANNELS_REASON,
    Selection,
    mismatched_concats,
    rule_for,
    select,
)
from edgequant.exporter.write import write
from edgequant.graph.index import GraphIndex
from edgequant.graph.preprocess import optimize, upgrade_opset
from edgequant.graph.rewrite import divisions_as_products
from edgequant.graph.rules import RANGE_LIMIT, Role
from edgequant.model import Model
from edgequant.observers import HistogramObserver, clip_range
from edgequant.primitives import fake_quantize
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import Provenance
from edgequant.ptq.bias_correction import correct_biases, correctable
from edgequant.ptq.bodies import QuantizedBranches, branches, quantize_branches, recorded_tensors
from edgequant.ptq.calibrate import calibrate
from edgequant.ptq.equalization import equalize_model
from edgequant.ptq.smoothquant import smooth_model
from edgequant.spec import QuantSpec


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
    kept: dict[str, np.ndarray] = field(default_factory=dict)  # layer inputs kept for AdaRound
    smoothed: int = 0  # MatMuls whose weights took SmoothQuant's scales
    coverage: Coverage = Coverage.ALL  # resolved from the config's (AUTO looks at the graph)
    # (weight name, aimed spec) -> AdaRound's values on the grid and their quantization
    rounded: dict[tuple[str, QuantSpec], tuple[np.ndarray, TensorQuant] | None] = field(
        default_factory=dict
    )
    held: list[dict[str, np.ndarray]] = field(default_factory=list)  # the guard's model inputs
    held_back: bool = False  # True: `held` came after the calibrated samples
    axes: dict[str, int | None] = field(default_factory=dict)  # batch axis of each input
    branches: QuantizedBranches = field(default_factory=QuantizedBranches)  # `If` bodies

    def weighted_nodes(self) -> list[onnx.NodeProto]:
        """The quantized nodes with a constant weight (Conv, Gemm, MatMul), in graph order."""
        index = GraphIndex.of(self.fp32.proto.graph)
        sel = self.selection(frozenset(), index)
        return [n for n in sel.nodes if (r := rule_for(n, index)) and r.role is Role.WEIGHTED]

    def selection(
        self, exclude: frozenset[str], index: GraphIndex, requested: frozenset[str] = frozenset()
    ) -> Selection:
        exclude = exclude | frozenset(float_layers(self.config.precisions))
        sel = select_for(
            self.fp32, index, self.config, self.coverage, exclude, self.bad_tensors, requested
        )
        if not sel.nodes and not self.branches.bodies:  # quantized branches are enough
            raise NothingToQuantizeError(_nothing_message(sel))
        return sel

    def round_weight(
        self, node: onnx.NodeProto, spec: QuantSpec
    ) -> tuple[np.ndarray, TensorQuant] | None:
        """AdaRound's weight for `node` at `spec` (None: not rounded), computed once per spec."""
        if self.config.rounding is not Rounding.ADAROUND or node.input[0] not in self.kept:
            return None
        key = (node.input[1], spec)
        if key not in self.rounded:
            try:
                from edgequant.algorithms.adaround import AdaRoundConfig
                from edgequant.ptq.adaround import adaround_node
            except ImportError:
                raise ConfigError("AdaRound needs torch: pip install 'edgequant[torch]'") from None
            index = GraphIndex.of(self.fp32.proto.graph)
            tq = weight_quant(index.array(node.input[1]), spec)
            values = adaround_node(node, index, tq, self.kept[node.input[0]], AdaRoundConfig())
            self.rounded[key] = None if values is None else (values, tq)
        return self.rounded[key]


def calibrate_static(
    model: Model,
    config: PTQConfig,
    calibration: Iterable[Any],
    progress: ProgressFn = silent,
    hold_back: int = 0,
) -> Calibrated:
    """Clean up (and equalise) the graph, then one calibration pass for every tensor involved;
    `hold_back` samples' inputs kept for the fidelity guard (`ptq.calibrate.calibrate`)."""
    if config.smoothing is Smoothing.SMOOTHQUANT and iter(calibration) is calibration:
        raise ConfigError(
            "SmoothQuant reads the calibration data twice (scales, then ranges): give a list, "
            "an eq.ArrayDataset or eq.Dataset(list), not a one-shot iterator or generator"
        )
    fp32 = optimize(model, min_opset=min_opset(config))
    check_names(config.precisions, fp32.proto.graph, config.exclude_nodes)
    exclude = frozenset(float_layers(config.precisions))
    equalized = smoothed = 0
    if config.equalization is Equalization.CROSS_LAYER:
        fp32, equalized = equalize_model(fp32, exclude)
    if config.smoothing is Smoothing.SMOOTHQUANT:
        fp32, smoothed = smooth_model(
            fp32, calibration, alpha=config.smoothing_alpha,
            max_samples=config.max_calibration_samples, exclude=exclude, progress=progress,
        )  # fmt: skip
    coverage = resolve_coverage(config.coverage, fp32.proto.graph)
    if coverage is not Coverage.WEIGHTED:
        divisions_as_products(fp32.proto)
    index = GraphIndex.of(fp32.proto.graph)
    sel = select_for(fp32, index, config, coverage, exclude, {})
    found = branches(fp32.proto.graph)
    if not sel.nodes and not found:  # else the branches may hold what quantizes
        raise NothingToQuantizeError(_nothing_message(sel))
    correct = config.bias_correction is BiasCorrection.EMPIRICAL
    ada = config.rounding is Rounding.ADAROUND
    # ranges for the convs left float by default too, should a precision name them later
    # (mixed precision, tune, analyze)
    raw = frozenset(n for n, why in sel.float_nodes.items() if why == FEW_CHANNELS_REASON)
    wide = select_for(fp32, index, config, coverage, exclude, {}, raw) if raw else sel
    result = calibrate(
        fp32,
        wide.calibrated_tensors(),
        calibration,
        num_bins=config.num_bins,
        max_samples=config.max_calibration_samples,
        histogram=config.calibrator is not Calibrator.MINMAX,
        channel_means=tuple(n.input[0] for n in sel.nodes if correct and correctable(n, index)),
        keep=tuple(n.input[0] for n in sel.nodes if ada and correctable(n, index)),
        keep_samples=config.rounding_samples if ada else 0,
        hold_back=hold_back,
        record=recorded_tensors(found),
        progress=progress,
    )
    bodies = quantize_branches(fp32, config, result.recorded, guarded=hold_back > 0)
    result.recorded.clear()
    ranges = {
        t: clip_range(obs, config.calibrator, config.activation_spec, config.percentile)
        for t, obs in result.observers.items()
        if t not in result.non_float
    }
    bad = {t: "not a float32 tensor" for t in result.non_float}
    for t, (lo, hi) in ranges.items():
        reason = unrepresentable(result.observers[t], lo, hi, config.activation_spec)
        if reason:
            bad[t] = reason
    for t, reason in mismatched_concats(fp32.proto.graph, ranges).items():
        bad.setdefault(t, reason)
    cal = Calibrated(
        model.name, fp32, config, ranges, bad, result.channel_means, result.samples, equalized,
        result.kept, smoothed=smoothed, coverage=coverage, held=result.held,
        held_back=result.held_back, axes=result.axes, branches=bodies,
    )  # fmt: skip
    if ada:  # round every layer at its configured precision now, with progress shown
        index = GraphIndex.of(fp32.proto.graph)
        nodes = [n for n in cal.weighted_nodes() if n.input[0] in cal.kept]
        specs = weight_specs(cal.selection(frozenset(), index), index, config, config.precisions)
        for i, node in enumerate(nodes):
            cal.round_weight(node, aim_for_target(specs[node.name], node, config))
            progress("adaptive rounding", i + 1, len(nodes))
    return cal


@dataclass
class StaticPlan:
    """What static PTQ hands to the writer: the float graph (biases corrected, weights rounded)
    and the plan over it, with what the provenance reports."""

    proto: onnx.ModelProto
    plan: QuantPlan
    selection: Selection
    layers: dict[str, Precision]
    corrected: int  # biases corrected
    rounded: int  # weights rounded by AdaRound


def plan_calibrated(
    cal: Calibrated,
    exclude: frozenset[str] = frozenset(),
    precisions: Mapping[str, Precision] | None = None,
) -> StaticPlan:
    """The plan of `cal` with the nodes in `exclude` left in float and `precisions`
    (node -> Precision) over the config's own per-layer precisions."""
    config = cal.config
    layers = {**config.precisions, **(precisions or {})}
    layers.update({name: Precision.FP32 for name in exclude})
    check_names(layers, cal.fp32.proto.graph, (*config.exclude_nodes, *exclude))
    floats = float_layers(layers)
    proto = onnx.ModelProto()
    proto.CopyFrom(cal.fp32.proto)  # bias correction edits biases of the nodes quantized now
    index = GraphIndex.of(proto.graph)
    sel = cal.selection(frozenset(floats), index, requested_layers(layers))
    missing = [t for t in sel.observed_tensors() if t not in cal.ranges]
    if missing:
        raise NothingToQuantizeError(f"no calibrated range for {missing[0]!r}")  # never expected
    specs = {
        name: aim_for_target(spec, index.node(name), config)
        for name, spec in weight_specs(sel, index, config, layers).items()
    }

    def weight_for(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
        rounded = cal.round_weight(node, specs[node.name])
        return rounded[0] if rounded is not None else _round_trip(w, specs[node.name])

    corrected = 0
    if config.bias_correction is BiasCorrection.EMPIRICAL:
        corrected = correct_biases(proto.graph, sel.nodes, cal.channel_means, weight_for)
    rounded = _use_rounded(proto, index, specs, cal)
    index = GraphIndex.of(proto.graph)
    plan = plan_static(index, sel, cal.ranges, activation_specs(sel, index, config, layers), specs)
    plan.weights.update(rounded)
    if cal.coverage is Coverage.WEIGHTED:
        chosen = {n.name for n in sel.nodes}
        plan.float_readers = frozenset(n.name for n in proto.graph.node if n.name not in chosen)
        plan.read_quantized = frozenset(sel.read_quantized)
    plan.min_opset = max(min_opset(config), plan.min_opset, cal.branches.opset)
    plan.int32_biases = config.full_integer
    plan.half_nodes = tuple(name for name, p in floats.items() if p is Precision.FP16)
    plan.embeddings = plan_tables(proto.graph, config, frozenset(floats))
    proto = upgrade_opset(proto, plan.min_opset)
    return StaticPlan(proto, plan, sel, layers, corrected, len(rounded))


def quantize_calibrated(
    cal: Calibrated,
    exclude: frozenset[str] = frozenset(),
    precisions: Mapping[str, Precision] | None = None,
) -> Model:
    """The QDQ model of `plan_calibrated(cal, exclude, precisions)`."""
    planned = plan_calibrated(cal, exclude, precisions)
    plan, sel, config = planned.plan, planned.selection, cal.config
    proto = write(planned.proto, plan)
    cal.branches.splice(proto)
    lstms = recurrent_layers(proto, config, frozenset(planned.layers))
    out = Model(proto, f"{cal.model_name}.{_suffix(config, planned.layers)}")
    out.provenance = Provenance(
        method=config.method.value,
        config=config.with_(layer_precisions=planned.layers, exclude_nodes=()),
        calibration_samples=cal.samples,
        quantized_nodes=len(sel.nodes) + len(lstms),
        equalized_pairs=cal.equalized_pairs,
        smoothed_matmuls=cal.smoothed,
        coverage=cal.coverage.value,
        int8_embeddings=list(plan.embeddings),
        bias_corrected_nodes=planned.corrected,
        adarounded_weights=planned.rounded,
        folded_activations=list(plan.folded),
        float_nodes={
            k: v
            for k, v in {**sel.float_nodes, **cal.branches.float_nodes}.items()
            if k not in {*plan.folded, *lstms}
        },
    )
    return out


def unrepresentable(obs: HistogramObserver, lo: float, hi: float, spec: QuantSpec) -> str:
    """Why a tensor calibrated to [lo, hi] cannot go on `spec`'s integer grid ("" if it can):
    the geometric mean of its non-zero magnitudes below a quarter step (most values would round
    to zero: spectrogram powers, say), or a range beyond RANGE_LIMIT made by a few sentinel values (an
    attention mask adds -3.4e38; quantizing it gives scales of 1e36, as ORT's quantizer does)."""
    step = (hi - lo) / (spec.qmax - spec.qmin)
    typical, top = obs.typical_magnitude, max(abs(lo), abs(hi))
    if typical and typical < step / 4:
        return (
            f"values typically {typical:.3g} but up to {top:.3g}: on a {spec.qtype.bits}-bit "
            "grid over that range most of them round to zero (powers of a spectrogram, say)"
        )
    if top > RANGE_LIMIT:
        return f"calibrated range [{lo:.3g}, {hi:.3g}] holds sentinel values (an attention mask, say), not a signal"
    return ""


def select_for(
    fp32: Model,
    index: GraphIndex,
    config: PTQConfig,
    coverage: Coverage,
    exclude: frozenset[str],
    bad: dict[str, str],
    requested: frozenset[str] = frozenset(),
) -> Selection:
    """The node selection for `config` (its coverage, its target's full-integer rule, the
    layers given an integer precision by name, in its precisions or in `requested`)."""
    return select(
        fp32.proto.graph, index, exclude_nodes=exclude, bad_tensors=bad,
        weighted_only=coverage is Coverage.WEIGHTED, quantize_outputs=config.full_integer,
        raw_signal_float=config.raw_signal_float,
        requested=requested | requested_layers(config.precisions),
    )  # fmt: skip


def resolve_coverage(coverage: Coverage, graph: onnx.GraphProto) -> Coverage:
    """AUTO: WEIGHTED for transformer-like graphs: a LayerNormalization, or attention (a MatMul
    of two activations). A CNN that ends in Softmax stays ALL (its Convs fuse end to end)."""
    if coverage is not Coverage.AUTO:
        return coverage
    index = GraphIndex.of(graph)
    transformer = any(
        n.op_type == "LayerNormalization"
        or (n.op_type == "MatMul" and not any(index.is_constant(i) for i in n.input[:2]))
        for n in graph.node
    )
    return Coverage.WEIGHTED if transformer else Coverage.ALL


def _suffix(config: PTQConfig, layers: Mapping[str, Precision]) -> str:
    return "mixed" if layers else ("w4a8" if config.weights.qtype.bits == 4 else "int8")


def min_opset(config: PTQConfig) -> int:
    """4- and 16-bit tensors need opset 21 (INT4/INT16 in QuantizeLinear/DequantizeLinear)."""
    bits = {config.weights.qtype.bits, config.activation_spec.qtype.bits}
    wide = {Precision.INT4, Precision.INT16} & set(config.precisions.values())
    return 21 if bits & {4, 16} or wide else 13


def _use_rounded(
    proto: onnx.ModelProto, index: GraphIndex, specs: dict[str, QuantSpec], cal: Calibrated
) -> dict[str, TensorQuant]:
    """Put AdaRound's values (on the grid already) into the weights of the quantized nodes;
    returns weight name -> its quantization."""
    rounded: dict[str, tuple[np.ndarray, TensorQuant]] = {}
    for name, spec in specs.items():
        node = index.node(name)
        result = cal.round_weight(node, spec)
        if result is not None and node.input[1] not in rounded:
            rounded[node.input[1]] = result
    for init in proto.graph.initializer:
        if init.name in rounded:
            init.CopyFrom(numpy_helper.from_array(rounded[init.name][0], init.name))
    return {name: tq for name, (_, tq) in rounded.items()}


def _round_trip(values: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """`values` quantized as `weight_quant` does, then dequantized: what the kernel multiplies."""
    tq = weight_quant(values, spec)
    return fake_quantize(values, tq.scale, tq.zero_point, spec)


def aim_for_target(template: QuantSpec, node: Any, config: PTQConfig) -> QuantSpec:
    """`aim_weight_spec` with the per-tensor operators of the config's target."""
    return aim_weight_spec(template, node, frozenset(config.per_tensor_weight_ops))


def _nothing_message(sel: Selection) -> str:
    reasons = set(sel.float_nodes.values())
    excluded = sorted(r for r in reasons if "exclude" in r)
    ops = (excluded + sorted(reasons - set(excluded)))[:3]  # the user's own choice first
    return "the model has no operator that static INT8 can quantize (" + "; ".join(ops) + ")"
