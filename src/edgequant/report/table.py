"""One row per model variant, measured against the FP32 reference in the same run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """Everything a report says about one variant. Ratios are variant / FP32 (below 1 is faster)."""

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

    def accuracy_drop(self, reference_top1: float) -> float | None:
        return None if self.top1 is None else (reference_top1 - self.top1) * 100.0


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def markdown_table(rows: list[Row], reference_top1: float) -> str:
    """A GitHub-flavoured Markdown table of the variants."""
    settings = list(rows[0].latency_ratio) if rows else []
    head = ["variant", "top-1 %", "drop (pts)", "agree %", "SQNR dB", "size KB", "size ×"]
    head += [f"latency × {s}" for s in settings]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        drop = r.accuracy_drop(reference_top1)
        cells = [
            r.name,
            _pct(r.top1),
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
