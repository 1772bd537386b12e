"""Shared by the benchmark scripts: the demo task, peak memory in a fresh process, the result
tables they write into docs/BENCHMARKS.md (and the README's headline table)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"


def machine() -> str:
    """One line naming the machine and the runtime versions (the reports' own line)."""
    from edgequant.runtime.machine import describe

    return describe()


def demo_task():
    """The demo FP32 model (trained or cached) and Fashion-MNIST."""
    import torch

    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo import fashion_mnist
    from edgequant.zoo.train import demo_model

    fp32 = to_onnx(demo_model(), torch.zeros(1, 1, 28, 28), "fp32")
    return fp32, fashion_mnist.load("train"), fashion_mnist.load("test")


def calibration_indices(n: int) -> np.ndarray:
    return np.random.default_rng(0).permutation(60_000)[:n]


def run_child(code: str, *args: str) -> dict:
    """Run `code` in a fresh Python process; it prints one JSON line last."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


PEAK_MEMORY = r'''
from pathlib import Path
def reset_peak():
    """Linux: writing 5 to clear_refs resets VmHWM, so the next reading is the peak from now on."""
    Path("/proc/self/clear_refs").write_text("5")
def rss_mb(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
'''


def read_results_section(name: str, document: Path = BENCHMARKS) -> str:
    """The text between <!-- results:NAME:start --> and <!-- results:NAME:end -->."""
    text = document.read_text()
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    found = re.search(re.escape(start) + "(.*?)" + re.escape(end), text, re.S)
    if not found:
        raise SystemExit(f"{document.name} has no {start} marker")
    return found.group(1)


def write_results_section(name: str, body: str, document: Path = BENCHMARKS) -> None:
    """Replace the text between <!-- results:NAME:start --> and <!-- results:NAME:end -->."""
    text = document.read_text()
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{document.name} has no {start} marker")
    document.write_text(pattern.sub(lambda _m: f"{start}\n{body.strip()}\n{end}", text))
