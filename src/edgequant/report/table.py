"""One row per model variant, measured against the FP32 reference in the same run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    # p10 and p90 of the interleaved rounds' medians (ms) per setting: the run-to-run noise
    spread_ms: dict[str, tuple[float, float]] = field(default_factory=dict)

    def drop(self, reference_top1: float | None, metric: MetricValue | None) -> float | None:
        """The loss against FP32 in the report's units: top-1 points, or the task metric's."""
        return self.accuracy_drop(reference_top1) if metric is None else self.metric_drop(metric)

    def within_noise(self, baseline: Row, setting: str) -> bool:
        """Whether this row's latency at `setting` is not told apart from `baseline`'s: their
        p10-p90 ranges across rounds overlap."""
        mine, theirs = self.spread_ms.get(setting), baseline.spread_ms.get(setting)
        if mine is None or theirs is None or self is baseline:
            return False
        return mine[0] <= theirs[1] and theirs[0] <= mine[1]

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


def timing(result: Any, base: Any) -> dict[str, Any]:
    """A Row's latency fields from a `BenchResult` and FP32's: ratio, p50 (ms) and the rounds'
    p10-p90 per "b{batch}/t{threads}" setting."""
    keys = [(f"b{x.batch}/t{x.threads}", x) for x in result.latency]
    return {
        "latency_ratio": {k: x.p50_ms / base.at(x.batch, x.threads).p50_ms for k, x in keys},
        "p50_ms": {k: x.p50_ms for k, x in keys},
        "spread_ms": {k: x.spread() for k, x in keys},
    }


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
    base = _baseline(rows)
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
        cells += [
            f"{r.latency_ratio[s]:.2f}{' ≈' if base is not None and r.within_noise(base, s) else ''}"
            for s in settings
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _baseline(rows: list[Row]) -> Row | None:
    return next((r for r in rows if r.method == "fp32"), None)


def latency_table(rows: list[Row]) -> str | None:
    """p50 latency in ms per setting with the p10-p90 range of the rounds' medians, and the
    ratio to FP32 (≈: within FP32's own range, no difference measured); None without spreads."""
    settings = [s for s in (rows[0].latency_ratio if rows else {}) if rows[0].spread_ms.get(s)]
    if not settings:
        return None
    base = _baseline(rows)
    lines = ["| variant | " + " | ".join(settings) + " |", "|" + "---|" * (len(settings) + 1)]
    for r in rows:
        cells = []
        for s in settings:
            low, high = r.spread_ms[s]
            near = " ≈" if base is not None and r.within_noise(base, s) else ""
            cells.append(
                f"{r.p50_ms[s]:.3f} ms [{low:.3f}-{high:.3f}] {r.latency_ratio[s]:.2f}x{near}"
            )
        lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def recommend(
    rows: list[Row],
    reference_top1: float | None,
    metric: MetricValue | None = None,
    max_drop: float = 1.0,
) -> str:
    """One line: which variant to ship and why. The fastest at the first latency setting among
    those that lose at most `max_drop` (points of top-1, or of the task metric) and run faster
    than FP32 here, preferring those at most 30% of FP32's size (what INT8 gives); FP32 when
    none qualifies, saying so."""
    settings = list(rows[0].latency_ratio) if rows else []
    setting = settings[0] if settings else None
    units = (
        ("point" if max_drop == 1 else "points")
        if metric is None
        else (metric.units or metric.name)
    )
    fit = [
        r for r in rows
        if r.method != "fp32" and (d := r.drop(reference_top1, metric)) is not None
        and d <= max_drop and setting is not None and r.latency_ratio.get(setting, 2.0) < 1.0
    ]  # fmt: skip
    if not fit or setting is None:
        return (
            f"Recommendation: keep FP32 here: no variant stays within {max_drop:g} {units} of it "
            "and runs faster on this runtime."
        )
    small = [r for r in fit if r.size_ratio <= 0.3] or fit
    best = min(small, key=lambda r: (r.latency_ratio[setting], r.size_ratio))
    drop = best.drop(reference_top1, metric)
    assert drop is not None
    what = "top-1" if metric is None else metric.name
    lost = "points" if metric is None else units
    return (
        f"Recommendation: {best.name}: {100 * best.size_ratio:.0f}% of FP32's size, "
        f"{best.latency_ratio[setting]:.2f}x its latency ({setting}), {round(-drop, 2) + 0.0:+.2f} {lost} of "
        f"{what} against FP32 (the fastest variant within {max_drop:g} {units} of FP32 at most "
        "30% of its size; ≈ in the tables marks latencies within FP32's own run-to-run range)."
    )
