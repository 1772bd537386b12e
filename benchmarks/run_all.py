"""Run every benchmark one after the other (never in parallel: they share 2 cores) and update
the tables in docs/BENCHMARKS.md and the README headline. `./run bench` calls this."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in (
    "bench_demo.py",
    "bench_vs_ort.py",
    "bench_real_models.py",
    "bench_algorithms.py",
    "bench_tune.py",
    "bench_qat.py",
    "bench_targets.py",
):
    print(f"== {script}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:]], check=True)
