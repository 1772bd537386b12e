"""Write a report folder: report.md, report.html (plots embedded) and report.json."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgequant.metrics.base import MetricValue
from edgequant.outputs import write_atomic
from edgequant.report.figure import save_figure
from edgequant.report.table import Row, latency_table, markdown_table, recommend


@dataclass
class Section:
    """A further part of a report: a Markdown table, notes under it, and its data for JSON."""

    title: str
    table: str
    notes: list[str] = field(default_factory=list)
    data: list[dict[str, Any]] = field(default_factory=list)
    # pictures already written into the report folder: (file, what it shows)
    images: list[tuple[Path, str]] = field(default_factory=list)

    def markdown(self) -> str:
        pictures = "".join(f"\n![{alt}]({path.name})\n" for path, alt in self.images)
        notes = "".join(f"- {n}\n" for n in self.notes)
        return f"## {self.title}\n\n{self.table}\n\n{notes}{pictures}"

    def html(self) -> str:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        pictures = "".join(_html_image(path, alt) for path, alt in self.images)
        table = _html_table(self.table)
        return f"<h2>{html.escape(self.title)}</h2>{table}<ul>{notes}</ul>{pictures}"


def write_report(
    folder: Path,
    title: str,
    rows: list[Row],
    reference_top1: float | None,
    notes: list[str],
    extra: dict[str, Any] | None = None,
    sections: Sequence[Section] = (),
    metric: MetricValue | None = None,
    images: Sequence[tuple[Path, str]] = (),
    runtime: str = "ONNX Runtime CPU",
) -> dict[str, Path]:
    """Write the report files into `folder` (atomically) and return their paths. With
    `metric` (the reference's value of the task metric) rows are read by `Row.metric`;
    `images`: further pictures already in `folder`, (file, what it shows), under the plot;
    `runtime`: what the latencies were measured on, named in the plots and the tables."""
    from datetime import datetime, timezone

    from edgequant.runtime.machine import describe

    table = markdown_table(rows, reference_top1, metric)
    advice = recommend(rows, reference_top1, metric)
    measured = f"Measured on {describe()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC."
    plot = folder / "tradeoff.png"
    _plot(rows, reference_top1, plot, metric, runtime)
    timing = latency_table(rows)
    pictures = [(plot, "accuracy vs size and latency")]
    if timing is not None:
        chart = folder / "latency.png"
        _latency_chart(rows, chart, runtime)
        pictures.append((chart, "latency per batch size and thread count"))
    pictures += list(images)
    timing_head = f"Latency (ms, {runtime})"
    timing_intro = (
        "p50 per setting, [p10-p90] of the interleaved rounds' medians, and the ratio to FP32 "
        "(≈: within FP32's own range)."
    )
    timing_md = "" if timing is None else f"\n## {timing_head}\n\n{timing_intro}\n\n{timing}\n"
    md = (
        f"# {title}\n\n**{advice}**\n\n{measured}\n\n{table}\n\n"
        + "".join(f"- {n}\n" for n in notes)
        + "".join(f"\n![{alt}]({path.name})\n" for path, alt in pictures)
        + timing_md
        + "".join(f"\n{s.markdown()}" for s in sections)
    )
    write_atomic(folder / "report.md", md.encode())
    body = _html_table(table)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    timing_html = "" if timing is None else (
        f"<h2>{html.escape(timing_head)}</h2><p>{html.escape(timing_intro)}</p>{_html_table(timing)}"
    )  # fmt: skip
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
        ".advice{font-size:1.15em;background:#eef6ee;padding:.6em;border-left:4px solid #3a3}"
        "img{max-width:100%}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p class='advice'>{html.escape(advice)}</p>"
        f"<p>{html.escape(measured)}</p>{body}<ul>{notes_html}</ul>"
        + "".join(_html_image(path, alt) for path, alt in pictures)
        + timing_html
        + "".join(s.html() for s in sections)
        + "</body></html>\n"
    )
    write_atomic(folder / "report.html", page.encode())
    data = {
        "title": title,
        "recommendation": advice,
        "measured_on": measured,
        "reference_top1": reference_top1,
        "reference_metric": None if metric is None else asdict(metric),
        "rows": [asdict(r) for r in rows],
        "notes": notes,
        "sections": {s.title: s.data for s in sections},
        **(extra or {}),
    }
    write_atomic(folder / "report.json", (json.dumps(data, indent=2) + "\n").encode())
    return {
        "markdown": folder / "report.md",
        "html": folder / "report.html",
        "json": folder / "report.json",
        "plot": plot,
        **({"latency_plot": folder / "latency.png"} if timing is not None else {}),
    }


def _html_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def _html_table(markdown: str) -> str:
    lines = [line for line in markdown.splitlines() if line.strip()]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _plot(
    rows: list[Row],
    reference_top1: float | None,
    path: Path,
    metric: MetricValue | None = None,
    runtime: str = "ONNX Runtime CPU",
) -> None:
    """Accuracy (or the task metric) against size and against latency (a log axis: 4-bit
    variants run ten times slower than INT8 on CPUs without int4 kernels), one labelled point
    per variant; adjustText moves labels apart where points crowd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from adjustText import adjust_text

    def score(r: Row) -> float:
        return (r.metric or 0.0) if metric is not None else 100 * (r.top1 or 0.0)

    reference = metric.value if metric is not None else 100 * (reference_top1 or 0.0)
    label = "top-1 accuracy (%)" if metric is None else f"{metric.name} ({metric.units})"
    pts = [r for r in rows if (r.metric if metric is not None else r.top1) is not None]
    setting = next(iter(pts[0].latency_ratio), None) if pts else None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), dpi=100)
    for ax, xlabel, xs in (
        (axes[0], "size (KB)", [r.size_bytes / 1024 for r in pts]),
        (
            axes[1],
            f"latency ratio to FP32 in {runtime} ({setting}, log scale)",
            [r.latency_ratio.get(setting, float("nan")) if setting else float("nan") for r in pts],
        ),
    ):
        ax.scatter(xs, [score(r) for r in pts], c="tab:blue", zorder=3)
        texts = [ax.text(x, score(r), r.name, fontsize=7) for x, r in zip(xs, pts, strict=True)]
        ax.axhline(reference, color="gray", ls="--", lw=0.8, label="FP32")
        if ax is axes[1] and setting is not None:
            ax.set_xscale("log")
            _plain_ticks(ax)
            ax.axvline(1.0, color="gray", ls=":", lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def _latency_chart(rows: list[Row], path: Path, runtime: str) -> None:
    """p50 latency (ms, log scale: a dot, not a bar, since a bar's length means nothing on a
    log axis) of every variant, one panel per batch size and thread count, with the p10-p90
    range of the rounds as a line through it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s in rows[0].latency_ratio if rows[0].spread_ms.get(s)]
    fig, axes = plt.subplots(
        1, len(settings), figsize=(3.2 * len(settings) + 2, 0.32 * len(rows) + 1.5), dpi=100,
        sharey=True, squeeze=False,
    )  # fmt: skip
    names = [r.name for r in rows]
    for ax, setting in zip(axes[0], settings, strict=True):
        p50 = [r.p50_ms[setting] for r in rows]
        low = [r.p50_ms[setting] - r.spread_ms[setting][0] for r in rows]
        high = [r.spread_ms[setting][1] - r.p50_ms[setting] for r in rows]
        for i, r in enumerate(rows):
            ax.errorbar(p50[i], i, xerr=[[max(low[i], 0)], [max(high[i], 0)]], fmt="o",
                        color="0.4" if r.method == "fp32" else "tab:blue", ms=5, lw=1)  # fmt: skip
        ax.axvline(rows[0].p50_ms[setting], color="0.6", ls=":", lw=0.8)
        ax.set_yticks(range(len(names)), names)
        ax.set_xscale("log")
        _plain_ticks(ax)
        ax.set_title(setting, fontsize=9)
        ax.set_xlabel(f"p50 latency (ms), {runtime}")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    save_figure(fig, path)


def _plain_ticks(ax: Any) -> None:
    """Log-axis ticks as plain numbers (0.5, 1, 2), not powers of ten; the minor ticks are
    labelled only when the axis spans less than a decade (else their labels collide)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda value, _pos: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    low, high = ax.get_xlim()
    ax.xaxis.set_minor_formatter(plain if low > 0 and high / low < 10 else NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
