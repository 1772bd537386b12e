"""Per-layer sensitivity: which layer is behind an accuracy drop.

For every weighted layer (Conv, Gemm, MatMul) two models are built from one calibration pass:
the layer quantized alone (everything else float) and every layer quantized but that one. Both
run in ONNX Runtime on labelled data, giving the task metric (top-1), agreement and output SQNR
against FP32. Layers are ranked by the SQNR of "alone": the noise that layer by itself puts on
the output, a continuous measure that a few flipped predictions cannot reorder; top-1 "alone"
and the recovery of "all but this one" are reported next to it, as AIMET's and NNCF's
layer-wise analyses do.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from edgequant.config import Method, PTQConfig
from edgequant.errors import ConfigError
from edgequant.metrics.base import MetricValue
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import SupportBrief


@dataclass(frozen=True)
class LayerSensitivity:
    """One weighted layer: quantized alone, and the model with only this layer left in float."""

    node: str
    op_type: str
    position: int  # in graph order among the weighted layers
    alone_top1: float | None
    alone_agreement: float | None
    alone_sqnr_db: float
    without_top1: float | None
    without_agreement: float | None
    without_sqnr_db: float
    alone_metric: float | None = None  # the task metric (`analyze(metric=...)`), its units
    without_metric: float | None = None


@dataclass(frozen=True)
class SensitivityReport:
    """Layers ranked most sensitive first, with the FP32 and fully quantized figures."""

    config: PTQConfig
    samples: int
    reference_top1: float | None
    quantized_top1: float | None
    quantized_agreement: float | None
    quantized_sqnr_db: float
    layers: tuple[LayerSensitivity, ...]
    support: SupportBrief | None = None  # operator support of the fully quantized model
    reference_metric: MetricValue | None = None  # FP32's task metric (`metric=`)
    quantized_metric: float | None = None  # the fully quantized model's

    def culprits(self, count: int = 3) -> list[LayerSensitivity]:
        return list(self.layers[:count])

    def sentence(self) -> str:
        """A plain sentence naming the culprit layers and what restoring them buys."""
        parts = []
        for layer in self.culprits():
            text = (
                f"{layer.node} ({layer.op_type}, {layer.alone_sqnr_db:.1f} dB when quantized alone"
            )
            task = self.reference_metric
            if task is not None and layer.alone_metric is not None:
                text += f"; {task.name} {layer.alone_metric:.4g} {task.units} quantized alone"
            if layer.without_top1 is not None and self.quantized_top1 is not None:
                gain = 100 * (layer.without_top1 - self.quantized_top1)
                text += f"; keeping it in float changes top-1 by {gain:+.2f} points"
            parts.append(text + ")")
        lost = ""
        if self.reference_top1 is not None and self.quantized_top1 is not None:
            lost = f" The quantized model loses {100 * (self.reference_top1 - self.quantized_top1):.2f} points of top-1."
        if self.reference_metric is not None and self.quantized_metric is not None:
            m = self.reference_metric
            lost = (
                f" The quantized model measures {m.name} {self.quantized_metric:.4g} "
                f"against FP32's {m.value:.4g} {m.units}".rstrip()
                + "."
            )
        return "Most sensitive layers: " + "; ".join(parts) + "." + lost

    def worse(self, value: float | None) -> float:
        """How far `value` of the task metric is worse than FP32's (0 without a metric)."""
        m = self.reference_metric
        if m is None or value is None:
            return 0.0
        return (m.value - value) * (1 if m.higher_is_better else -1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["config"] = self.config.to_dict()
        data["culprit"] = self.layers[0].node if self.layers else None
        data["sentence"] = self.sentence()
        return data


def analyze(
    model: Model,
    config: PTQConfig | None = None,
    *,
    calibration: Iterable[Any],
    data: Iterable[Any],
    metric: str | None = None,
    progress: ProgressFn = silent,
) -> SensitivityReport:
    """Sensitivity of every weighted layer of `model` under static `config` (default INT8).

    `data` should be labelled (inputs, labels) batches for top-1; without labels the ranking
    still works (agreement and SQNR against FP32). It is read once and held in memory with the
    FP32 outputs (every model built, 2 per layer, is scored against them), so a few thousand
    samples are plenty. With `metric` (a built-in name or module:function, `edgequant.metrics`)
    every model is measured by the task metric on `data`'s targets and layers are ranked by how
    much it worsens with the layer quantized alone (SQNR breaking ties).
    """
    from edgequant.analysis.support import check_support
    from edgequant.ptq.static import calibrate_static, quantize_calibrated
    from edgequant.runtime.scoring import Scorer

    config = config or PTQConfig.int8()
    if config.method is not Method.STATIC:
        raise ConfigError("sensitivity analysis needs a static config (weights and activations)")
    calibrated = calibrate_static(model, config, calibration, progress)
    scorer = Scorer(calibrated.fp32, data, metric=metric)  # FP32 outputs once, not per model
    layers = calibrated.weighted_nodes()
    total = 1 + 2 * len(layers)

    def measure(exclude: frozenset[str], step: int) -> Any:
        q = quantize_calibrated(calibrated, exclude)
        progress("sensitivity", step, total)
        return scorer.score(q)

    everything = measure(frozenset(), 1)
    support = check_support(quantize_calibrated(calibrated), config.target).brief()
    rows = []
    for i, node in enumerate(layers):
        others = frozenset(n.name for n in layers if n.name != node.name)
        alone = measure(others, 2 + 2 * i)
        without = measure(frozenset({node.name}), 3 + 2 * i)
        rows.append(
            LayerSensitivity(
                node.name, node.op_type, i,
                alone.top1, alone.agreement, alone.sqnr_db,
                without.top1, without.agreement, without.sqnr_db,
                alone.metric, without.metric,
            )
        )  # fmt: skip
    report = SensitivityReport(
        config,
        scorer.samples,
        scorer.reference_top1,
        everything.top1,
        everything.agreement,
        everything.sqnr_db,
        (),
        support,
        scorer.reference_metric,
        everything.metric,
    )
    rows.sort(key=lambda r: (-report.worse(r.alone_metric), r.alone_sqnr_db, r.node))
    return replace(report, layers=tuple(rows))
