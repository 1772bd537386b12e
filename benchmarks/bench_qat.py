"""PTQ against QAT on the demo task, at W8A8 and W4A8, measured in ONNX Runtime; its table in docs/BENCHMARKS.md.

PTQ is the fake-quant model right after its calibration warm start (no training), exported
through the same path as QAT, so the two differ only by the training. Accuracy is on the 10,000
test images from the exported models; latency ratios are to FP32 in one interleaved run.

    python benchmarks/bench_qat.py [--steps8 400] [--steps4 800] [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

from _common import machine, write_results_section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps8", type=int, default=400)
    parser.add_argument("--steps4", type=int, default=800)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)

    from edgequant.workflows.compare import compare, default_recipes
    from edgequant.zoo.tasks import fashion_mnist

    recipes = default_recipes(args.steps8, args.steps4)
    result = compare(fashion_mnist(), recipes=recipes)
    ref = result.reference_top1
    lines = [
        "| method | top-1 % | drop (pts) | agree % | time to quantize | data used | size KB | latency × b1/t2 | latency × b32/t2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rows:
        timing = "-" if r.quantize_s is None else f"{r.quantize_s:.0f} s"
        agree = "-" if r.agreement is None else f"{100 * r.agreement:.2f}"
        data = r.note.removeprefix("data: ") if r.note.startswith("data: ") else "-"
        lines.append(
            f"| {r.name} | {100 * r.top1:.2f} | {100 * (ref - r.top1):+.2f} | {agree} | {timing} | {data} | "
            f"{r.size_bytes / 1024:.0f} | {r.latency_ratio['b1/t2']:.2f} | {r.latency_ratio['b32/t2']:.2f} |"
        )
    top1 = {r.name: r.top1 for r in result.rows}

    def recovery(label: str) -> str:
        lost = ref - top1[f"PTQ {label}"]
        if lost < 0.002:
            return f"PTQ lost only {100 * lost:.2f} points, nothing to recover"
        gained = top1[f"QAT {label}"] - top1[f"PTQ {label}"]
        return f"QAT recovered {100 * gained / lost:.0f}% of the {100 * lost:.2f} points PTQ lost"

    r8, r4 = recipes
    body = "\n".join(
        [
            f"Machine: {machine()}. `edgequant compare` (QAT: SGD, cosine schedule, batch 128); W8A8 {r8.steps}",
            f"steps at lr {r8.lr}, W4A8 {r4.steps} steps at lr {r4.lr}. W8A8: {recovery('W8A8')}; W4A8: {recovery('W4A8')}.",
            "ONNX Runtime has no fused int4 convolution on CPU, so W4A8 convolutions run in float on",
            "dequantized weights: 4-bit buys size here, not speed.",
            "",
            *lines,
        ]
    )
    print(body)
    if not args.no_readme:
        write_results_section("qat", body)


if __name__ == "__main__":
    main()
