"""Writing matplotlib figures the way every output is written: temporary file, then rename."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path) -> None:
    """Save `fig` as PNG at `path` atomically (no timestamp metadata: same plot, same bytes) and
    close it; a failed or interrupted save leaves neither a half-written file nor a temp file."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, metadata={"Software": None})
        tmp.replace(path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
