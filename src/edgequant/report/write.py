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
from edgequant.report.table import Row, markdown_table


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
) -> dict[str, Path]:
    """Write the report files into `folder` (atomically) and return their paths. With
    `metric` (the reference's value of the task metric) rows are read by `Row.metric`;
    `images`: further pictures already in `folder`, (file, what it shows), under the plot."""
    table = markdown_table(rows, reference_top1, metric)
    plot = folder / "tradeoff.png"
    _plot(rows, reference_top1, plot, metric)
    md = (
        f"# {title}\n\n{table}\n\n"
        + "".join(f"- {n}\n" for n in notes)
        + f"\n![accuracy vs size and latency]({plot.name})\n"
        + "".join(f"\n![{alt}]({path.name})\n" for path, alt in images)
        + "".join(f"\n{s.markdown()}" for s in sections)
    )
    write_atomic(folder / "report.md", md.encode())
    img = base64.b64encode(plot.read_bytes()).decode()
    body = _html_table(table)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child{text-align:left}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}<ul>{notes_html}</ul>"
        f"<img alt='accuracy vs size and latency' src='data:image/png;base64,{img}'>"
        + "".join(_html_image(path, alt) for path, alt in images)
        + "".join(s.html() for s in sections)
        + "</body></html>\n"
    )
    write_atomic(folder / "report.html", page.encode())
    data = {
        "title": title,
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
    rows: list[Row], reference_top1: float | None, path: Path, metric: MetricValue | None = None
) -> None:
    """Accuracy (or the task metric) against size and against latency, one point per
    variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def score(r: Row) -> float:
        return (r.metric or 0.0) if metric is not None else 100 * (r.top1 or 0.0)

    reference = metric.value if metric is not None else 100 * (reference_top1 or 0.0)
    label = "top-1 accuracy (%)" if metric is None else f"{metric.name} ({metric.units})"
    pts = [r for r in rows if (r.metric if metric is not None else r.top1) is not None]
    setting = next(iter(pts[0].latency_ratio), None) if pts else None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for ax, xlabel, xs in (
        (axes[0], "size (KB)", [r.size_bytes / 1024 for r in pts]),
        (
            axes[1],
            f"latency ratio to FP32 ({setting})",
            [r.latency_ratio.get(setting, float("nan")) if setting else float("nan") for r in pts],
        ),
    ):
        ax.scatter(xs, [score(r) for r in pts], c="tab:blue")
        for x, r in zip(xs, pts, strict=True):
            ax.annotate(
                r.name,
                (x, score(r)),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axhline(reference, color="gray", ls="--", lw=0.8, label="FP32")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
