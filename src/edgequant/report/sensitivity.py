"""Sensitivity report: sensitivity.md, sensitivity.json and a per-layer bar plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from edgequant.analysis.sensitivity import LayerSensitivity, SensitivityReport
from edgequant.outputs import write_atomic
from edgequant.report.figure import save_figure


def sensitivity_table(report: SensitivityReport, limit: int | None = None) -> str:
    """Markdown table, most sensitive layer first; with a task metric, its values in place of
    top-1 and agreement."""
    Column = tuple[str, Callable[[LayerSensitivity], str]]
    alone_db: Column = ("alone: SQNR dB", lambda r: f"{r.alone_sqnr_db:.1f}")
    without_db: Column = ("all but this: SQNR dB", lambda r: f"{r.without_sqnr_db:.1f}")
    task = report.reference_metric
    columns: list[Column]
    if task is None:
        columns = [
            alone_db,
            ("alone: top-1 %", lambda r: _share(r.alone_top1)),
            ("alone: agree %", lambda r: _share(r.alone_agreement)),
            ("all but this: top-1 %", lambda r: _share(r.without_top1)),
            without_db,
        ]
    else:
        head = f"{task.name} {task.units}".strip()
        columns = [
            (f"alone: {head}", lambda r: _num(r.alone_metric)),
            alone_db,
            (f"all but this: {head}", lambda r: _num(r.without_metric)),
            without_db,
        ]
    lines = [
        "| rank | layer | op | " + " | ".join(name for name, _ in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for rank, r in enumerate(report.layers[:limit], 1):
        cells = " | ".join(cell(r) for _, cell in columns)
        lines.append(f"| {rank} | {r.node} | {r.op_type} | {cells} |")
    return "\n".join(lines)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def write_sensitivity_report(report: SensitivityReport, folder: Path) -> dict[str, Path]:
    """Write the report files into `folder` (atomically) and return their paths."""
    plot = folder / "sensitivity.png"
    _plot(report, plot)
    task = report.reference_metric
    first = (
        f"FP32 top-1 {_pct(report.reference_top1)}, fully quantized {_pct(report.quantized_top1)}"
        if task is None
        else f"FP32 {task.name} {task.value:.4g} {task.units}, fully quantized "
        f"{_num(report.quantized_metric)}"
    )
    head = (
        f"{first} (agreement {_pct(report.quantized_agreement)}, output SQNR "
        f"{report.quantized_sqnr_db:.1f} dB), {report.samples:,} samples."
    )
    if report.support:
        head += f"\n\nOperator support of the fully quantized model: {report.support.summary}"
    md = (
        f"# Sensitivity analysis\n\n{report.sentence()}\n\n{head}\n\n{sensitivity_table(report)}\n\n"
        f"![per-layer sensitivity]({plot.name})\n"
    )
    write_atomic(folder / "sensitivity.md", md.encode())
    text = json.dumps(report.to_dict(), indent=2) + "\n"
    write_atomic(folder / "sensitivity.json", text.encode())
    return {
        "markdown": folder / "sensitivity.md",
        "json": folder / "sensitivity.json",
        "plot": plot,
    }


def _share(x: float | None) -> str:
    """A share in [0, 1] as a percentage (no sign), '-' when not measured."""
    return "-" if x is None else f"{100 * x:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{_share(x)}%"


def _plot(report: SensitivityReport, path: Path) -> None:
    """Per layer in graph order: SQNR when quantized alone (lower = more sensitive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(report.layers, key=lambda r: r.position)
    order = {r.node: i for i, r in enumerate(report.layers)}
    culprits = {r.node for r in report.culprits()}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(layers)), 4.2), dpi=100)
    xs = range(len(layers))
    colors = ["tab:red" if r.node in culprits else "tab:blue" for r in layers]
    ax.bar(xs, [r.alone_sqnr_db for r in layers], color=colors)
    ax.set_xticks(list(xs), [f"{r.node[-28:]} (#{order[r.node] + 1})" for r in layers],
                  rotation=90, fontsize=6)  # fmt: skip
    ax.set_ylabel("SQNR, only this layer quantized (dB)")
    ax.set_title("Per-layer sensitivity (red: most sensitive)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
