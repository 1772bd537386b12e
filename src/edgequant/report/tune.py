"""Tuning report: tune.md, tune.json and a size-versus-accuracy plot of every trial."""

from __future__ import annotations

import json
from pathlib import Path

from edgequant.analysis.autotune import Trial, TuneResult
from edgequant.outputs import write_atomic
from edgequant.report.figure import save_figure


def trials_table(result: TuneResult, limit: int | None = None) -> str:
    """Markdown table of the trials, in the order they ran."""
    task = result.reference_metric
    value = "top-1 %" if task is None else f"{task.name} {task.units}".strip()
    lines = [
        f"| trial | stage | layers | size % of FP32 | {value} | drop ({result.task_label()}) "
        "| agree % | SQNR dB | latency x FP32 | within budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    best = result.best.index if result.best else None
    for t in result.trials[:limit]:
        mix = ", ".join(f"{n} {p}" for p, n in sorted(t.counts().items()))
        lat = "-" if t.latency_ratio is None else f"{t.latency_ratio:.2f}"
        mark = "**best**" if t.index == best else ("yes" if t.within else "no")
        lines.append(
            f"| {t.index} | {t.stage} | {mix} | {100 * t.size_bytes / result.fp32_size_bytes:.1f} "
            f"| {_value(t):.4g} | {t.drop_points:+.2f} "
            f"| {'-' if t.agreement is None else f'{100 * t.agreement:.2f}'} "
            f"| {t.sqnr_db:.1f} | {lat} | {mark} |"
        )
    return "\n".join(lines)


def write_tune_report(result: TuneResult, folder: Path) -> dict[str, Path]:
    """Write the report files into `folder` (atomically) and return their paths."""
    plot = folder / "tune.png"
    if result.trials:
        _plot(result, plot)
    c = result.config
    budgets = [f"drop <= {c.max_accuracy_drop} ({result.task_label()})"]
    if c.max_size_bytes is not None:
        budgets.append(f"size <= {c.max_size_bytes:,} bytes")
    if c.max_latency_ratio is not None:
        budgets.append(f"latency <= {c.max_latency_ratio}x FP32 at batch {c.latency_batch}")
    best = ""
    if result.best is not None:
        layers = "\n".join(f"| {name} | {p} |" for name, p in result.best.precisions.items())
        best = (
            f"## Best model: `{result.best_path}`\n\n| layer | precision |\n|---|---|\n{layers}\n"
        )
        if result.best_support:
            floats = result.best_support.float_nodes
            islands = "".join(f"- `{name}`: {why}\n" for name, why in list(floats.items())[:20])
            best += f"\nOperator support: {result.best_support.summary}\n\n{islands}"
    md = (
        f"# Mixed-precision tuning\n\n{result.sentence()}\n\n"
        f"Budgets: {'; '.join(budgets)}. Precisions: "
        f"{' < '.join(p.value for p in c.precisions)}. Measured on {result.samples:,} labelled "
        f"samples (FP32 {_reference(result)}); {len(result.trials)} trials "
        f"in {result.seconds:.0f} s.\n\n{trials_table(result)}\n\n"
        + (f"![trials]({plot.name})\n\n" if result.trials else "")
        + best
    )
    write_atomic(folder / "tune.md", md.encode())
    write_atomic(folder / "tune.json", (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return {"markdown": folder / "tune.md", "json": folder / "tune.json", "plot": plot}


def _value(trial: Trial) -> float:
    """The trial's task metric, or its top-1 in %."""
    if trial.metric is not None:
        return trial.metric
    assert trial.top1 is not None
    return 100 * trial.top1


def _reference(result: TuneResult) -> str:
    m = result.reference_metric
    if m is not None:
        return f"{m.name} {m.value:.4g} {m.units}".strip()
    assert result.reference_top1 is not None
    return f"top-1 {100 * result.reference_top1:.2f}%"


def _plot(result: TuneResult, path: Path) -> None:
    """Every trial: size against top-1 drop; the budget as a line, the best circled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    size = [100 * t.size_bytes / result.fp32_size_bytes for t in result.trials]
    drop = [t.drop_points for t in result.trials]
    colors = ["tab:green" if t.within else "tab:gray" for t in result.trials]
    ax.scatter(size, drop, c=colors, s=18)
    ax.axhline(result.config.max_accuracy_drop, color="tab:red", ls="--", lw=1, label="budget")
    if result.best is not None:
        b = result.best
        ax.scatter(
            [100 * b.size_bytes / result.fp32_size_bytes], [b.drop_points],
            s=120, facecolors="none", edgecolors="tab:red", label="best",
        )  # fmt: skip
    ax.set_xlabel("size (% of FP32)")
    ax.set_ylabel(f"drop below FP32 ({result.task_label()})")
    ax.set_title("Tuning trials (green: within every budget)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
