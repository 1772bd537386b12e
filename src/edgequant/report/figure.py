"""Writing matplotlib figures the way every output is written (`edgequant.outputs`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from edgequant.outputs import write_atomic


def save_figure(fig: Any, path: Path) -> None:
    """Save `fig` as PNG at `path` atomically (no timestamp metadata: same plot, same bytes) and
    close it; a failed or interrupted save leaves neither a half-written file nor a temp file."""
    import matplotlib.pyplot as plt

    try:
        buf = io.BytesIO()
        # tight: every label inside the picture (long axis labels were clipped)
        fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())
