"""Progress reporting: the library calls a plain function; the CLI renders it with rich."""

from __future__ import annotations

from collections.abc import Callable

# progress(stage, done, total): total is None when the length is unknown (a generator).
ProgressFn = Callable[[str, int, int | None], None]


def silent(stage: str, done: int, total: int | None) -> None:
    """The default: report nothing."""
