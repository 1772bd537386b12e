"""Tables in the terminal that never cut a name: a rich table while the names fit whole and the
other columns can wrap at their words, else one block per row (its name, then each column as
`header: value`). Markdown tables (the
reports' own) are shown the same way, the text around them as plain lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BORDER = 3  # rich's box: a bar and a space of padding each side of a cell


def show_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    console: Any = None,
) -> None:
    """Print `rows` under `headers` (the first column names the row); stacked when even
    wrapping the other columns would not fit the console."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    cells = [[str(c) for c in row] for row in rows]
    numeric = [all(_is_number(r[i]) for r in cells) for i in range(len(headers))]
    key = next((i for i, n in enumerate(numeric) if not n), 0)  # the column naming the row
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    # the least each column can wrap to: its longest word (the name column never wraps)
    least = [
        widths[i] if i == key
        else max([len(w) for text in (h, *(r[i] for r in cells)) for w in text.split()] or [1])
        for i, h in enumerate(headers)
    ]  # fmt: skip
    if sum(least) + BORDER * len(headers) + 1 <= console.width:
        table = Table(title=title)
        for i, header in enumerate(headers):
            if i == key:
                table.add_column(header, no_wrap=True, min_width=widths[i])
            else:
                table.add_column(
                    header, justify="right" if numeric[i] else "left", overflow="fold",
                    min_width=least[i],
                )  # fmt: skip
        for row in cells:
            table.add_row(*row)
        console.print(table)
        return
    if title:
        console.print(title, markup=False)
    for line in cells:  # too wide: each row as a block, its name whole on its own line
        console.print(line[key], style="bold", markup=False, overflow="fold")
        for i, (header, cell) in enumerate(zip(headers, line, strict=True)):
            if i != key:
                console.print(f"  {header}: {cell}", markup=False, overflow="fold")


def _is_number(text: str) -> bool:
    """A cell that reads as a number ("1,180", "-0.03", "0.56x", "35.7 dB", "-")."""
    head = text.strip().split(" ")[0].rstrip("x%").replace(",", "")
    if head in ("", "-"):
        return True
    try:
        float(head)
    except ValueError:
        return False
    return True


def show_markdown(text: str, console: Any = None) -> None:
    """Markdown from a report: its tables through `show_table`, every other line as it is
    (headings without their #)."""
    from rich.console import Console

    console = console or Console()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(_cells(lines[i]))
                i += 1
            body = [r for r in block[1:] if not all(set(c) <= set("-: ") for c in r)]
            show_table(
                block[0], [r + [""] * (len(block[0]) - len(r)) for r in body], console=console
            )
            continue
        console.print(line.lstrip("#").strip() if line.startswith("#") else line, markup=False)
        i += 1


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [c.strip().replace("**", "").replace("`", "") for c in inner.split("|")]
