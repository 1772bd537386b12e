"""Every PTQ variant of the demo model, side by side, and the demo's detection section, timed end
to end; writes its tables into docs/BENCHMARKS.md.

Runs `edgequant demo` exactly as a user would (its own report lands in a temporary folder) with a
fresh weights cache by default, so the wall time includes training both FP32 models.

    python benchmarks/bench_demo.py [--warm] [--no-readme]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, write_results_section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--warm", action="store_true", help="reuse the cached FP32 weights (skip training)"
    )
    parser.add_argument("--rounds", type=int, default=3)  # what `edgequant demo` uses
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.warm:
            os.environ["EDGEQUANT_CACHE"] = str(Path(tmp) / "cache")
        from edgequant.report import markdown_table
        from edgequant.workflows.demo import run_demo

        t0 = time.perf_counter()
        result = run_demo(Path(tmp) / "demo", bench_rounds=args.rounds)
        wall = time.perf_counter() - t0
        notes = (Path(tmp) / "demo" / "report.md").read_text().split("\n- ")[1:]
    table = markdown_table(result.rows, result.reference_top1)
    memory = next((n.strip() for n in notes if n.startswith("Peak session memory")), "")
    body = "\n".join(
        [
            f"Machine: {machine()}.",
            f"`edgequant demo` wall time: {wall / 60:.1f} min ({'cached weights' if args.warm else 'including training both FP32 models'}).",
            "Fashion-MNIST test set (10,000 images), 1,000 calibration images; latency × is p50 / FP32 p50 in",
            f"the same interleaved run ({args.rounds} rounds; b = batch, t = threads). {memory}",
            "",
            table,
            *(
                [
                    "",
                    "Its detection section (the built-in YOLO-style detector; mAP50-95 on 500 "
                    "held-out scenes, latency at batch 1):",
                    "",
                    result.detection.section.table,
                ]
                if result.detection is not None
                else []
            ),
        ]
    )
    print(body)
    if not args.no_readme:
        write_results_section("demo", body)


if __name__ == "__main__":
    main()
