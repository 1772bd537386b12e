"""Write a report folder: report.md, report.html (plots embedded) and report.json."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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

    def markdown(self) -> str:
        return f"## {self.title}\n\n{self.table}\n\n" + "".join(f"- {n}\n" for n in self.notes)

    def html(self) -> str:
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return f"<h2>{html.escape(self.title)}</h2>{_html_table(self.table)}<ul>{notes}</ul>"


def write_report(
    folder: Path,
    title: str,
    rows: list[Row],
    reference_top1: float,
    notes: list[str],
    extra: dict[str, Any] | None = None,
    sections: Sequence[Section] = (),
) -> dict[str, Path]:
    """Write the report files into `folder` (atomically) and return their paths."""
    table = markdown_table(rows, reference_top1)
    plot = folder / "tradeoff.png"
    _plot(rows, reference_top1, plot)
    md = (
        f"# {title}\n\n{table}\n\n"
        + "".join(f"- {n}\n" for n in notes)
        + f"\n![accuracy vs size and latency]({plot.name})\n"
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
        + "".join(s.html() for s in sections)
        + "</body></html>\n"
    )
    write_atomic(folder / "report.html", page.encode())
    data = {
        "title": title,
        "reference_top1": reference_top1,
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


def _html_table(markdown: str) -> str:
    lines = [line for line in markdown.splitlines() if line.strip()]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    th = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _plot(rows: list[Row], reference_top1: float, path: Path) -> None:
    """Accuracy against size and against latency, one point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.top1 is not None]
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
        ax.scatter(xs, [100 * (r.top1 or 0) for r in pts], c="tab:blue")
        for x, r in zip(xs, pts, strict=True):
            ax.annotate(
                r.name,
                (x, 100 * (r.top1 or 0)),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        ax.axhline(100 * reference_top1, color="gray", ls="--", lw=0.8, label="FP32")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
