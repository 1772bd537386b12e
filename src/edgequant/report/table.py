"""One row per model variant, measured against the FP32 reference in the same run."""

from __future__ import annotations

from dataclasses import dataclass, field

from edgequant.metrics.base import MetricValue


@dataclass
class Row:
    """Everything a report says about one variant. Ratios are variant / FP32 (below 1 is faster).
    `metric`: the value of the report's task metric (`markdown_table(metric=...)`), in its own
    units, where the report measures a task other than classification."""

    name: str
    method: str
    top1: float | None
    agreement: float | None
    sqnr_db: float | None
    size_bytes: int
    size_ratio: float
    latency_ratio: dict[str, float] = field(default_factory=dict)  # "b1/t1" -> ratio
    p50_ms: dict[str, float] = field(default_factory=dict)
    quantize_s: float | None = None
    note: str = ""
    metric: float | None = None

    def accuracy_drop(self, reference_top1: float | None) -> float | None:
        if self.top1 is None or reference_top1 is None:
            return None
        return (reference_top1 - self.top1) * 100.0

    def metric_drop(self, reference: MetricValue) -> float | None:
        """How much worse than the reference, in the metric's units (a rise for a
        lower-is-better metric)."""
        if self.metric is None:
            return None
        worse = reference.value - self.metric
        return worse if reference.higher_is_better else -worse


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _number(x: float | None) -> str:
    """A metric value: two decimals from 1 up (mAP points, %), four significant digits below
    (a CER of 0.0123)."""
    if x is None:
        return "-"
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.4g}"


def markdown_table(
    rows: list[Row], reference_top1: float | None, metric: MetricValue | None = None
) -> str:
    """A GitHub-flavoured Markdown table of the variants: top-1 and its drop, or with `metric`
    (the reference's value) the task metric and its drop in the metric's units."""
    settings = list(rows[0].latency_ratio) if rows else []
    score = "top-1 %" if metric is None else f"{metric.name} ({metric.units})".replace(" ()", "")
    drop_head = "drop (pts)" if metric is None else "drop"
    head = ["variant", score, drop_head, "agree %", "SQNR dB", "size KB", "size ×"]
    head += [f"latency × {s}" for s in settings]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if metric is None:
            value, drop = _pct(r.top1), r.accuracy_drop(reference_top1)
        else:
            value = _number(r.metric)
            drop = r.metric_drop(metric)
        cells = [
            r.name,
            value,
            "-" if drop is None else f"{drop:+.2f}",
            _pct(r.agreement),
            "-"
            if r.sqnr_db is None
            else ("inf" if r.sqnr_db == float("inf") else f"{r.sqnr_db:.1f}"),
            f"{r.size_bytes / 1024:.0f}",
            f"{r.size_ratio:.3f}",
        ]
        cells += [f"{r.latency_ratio[s]:.2f}" for s in settings]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
