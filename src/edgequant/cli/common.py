"""Helpers shared by the commands: progress bars, JSON or human output, report printing."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Callable[[str, int, int | None], None]]:
    """A rich progress display on stderr; one bar per stage."""
    if not enabled or not sys.stderr.isatty():
        yield lambda stage, done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as prog:

        def update(stage: str, done: int, total: int | None) -> None:
            if stage not in bars:
                bars[stage] = prog.add_task(stage, total=total)
            prog.update(bars[stage], completed=done, total=total)

        yield update


def floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def emit(data: dict[str, Any], as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=float))
    else:
        human()


def out_option(default: str) -> Callable[[Any], Any]:
    return click.option(
        "-o", "--out", default=default, show_default=True, type=click.Path(), help="Report folder."
    )


def print_report(rows: list[Any], reference_top1: float, report: dict[str, Path]) -> None:
    """The report's table in the terminal, and where the files are."""
    from rich.console import Console
    from rich.markdown import Markdown

    from edgequant.report import markdown_table

    Console().print(Markdown(markdown_table(rows, reference_top1)))
    click.echo(f"report: {report['html']}  ({report['markdown']})")
