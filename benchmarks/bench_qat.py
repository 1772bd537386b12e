"""PTQ against QAT on the demo task, at W8A8 and W4A8, measured in ONNX Runtime; README table.

PTQ is the fake-quant model right after its calibration warm start (no training), exported
through the same path as QAT, so the two differ only by the training. Accuracy is on the 10,000
test images from the exported models; latency ratios are to FP32 in one interleaved run.

    python benchmarks/bench_qat.py [--steps8 400] [--steps4 800] [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch

import edgequant as eq
from _common import calibration_indices, machine, write_readme_section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps8", type=int, default=400)
    parser.add_argument("--steps4", type=int, default=800)
    parser.add_argument("--lr8", type=float, default=5e-4)
    parser.add_argument("--lr4", type=float, default=2e-3)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)

    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo import fashion_mnist
    from edgequant.zoo.train import demo_model

    train, test = fashion_mnist.load("train"), fashion_mnist.load("test")
    calib = eq.ArrayDataset(train.images[calibration_indices(500)], None, 100)
    train_data = eq.ArrayDataset(train.images, train.labels, 128)
    test_data = eq.ArrayDataset(test.images, test.labels, 1000)
    example = torch.zeros(1, 1, 28, 28)
    fp32 = to_onnx(demo_model(), example, "FP32")
    fp32_top1 = eq.evaluate(fp32, test_data).top1
    rows, models = [], [fp32]
    for label, config, steps, lr in (
        ("W8A8", eq.QATConfig.int8(), args.steps8, args.lr8),
        ("W4A8", eq.QATConfig.w4a8(), args.steps4, args.lr4),
    ):
        t0 = time.perf_counter()
        model = eq.prepare_qat(demo_model(), config, calibration=calib)
        ptq = eq.export(model, example, f"PTQ {label}")
        ptq_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        eq.finetune(model, train_data, lr=lr, max_steps=steps)
        qat = eq.export(model, example, f"QAT {label}")
        qat_s = ptq_s + time.perf_counter() - t0
        for name, m, seconds, data in (
            (f"PTQ {label}", ptq, ptq_s, "500 unlabelled"),
            (f"QAT {label}", qat, qat_s, f"500 + {steps * 128:,} labelled"),
        ):
            res = eq.evaluate(m, test_data, reference=fp32)
            rows.append([name, res.top1, res.agreement, seconds, data, m.size_bytes])
            models.append(m)
    bench = eq.benchmark(models, batch_sizes=(1, 32), threads=(2,), rounds=5, memory=False)
    lines = [
        "| method | top-1 % | drop (pts) | agree % | time to quantize | data used | size KB | latency × b1/t2 | latency × b32/t2 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| FP32 | {100 * fp32_top1:.2f} | - | - | - | - | {fp32.size_bytes / 1024:.0f} | 1.00 | 1.00 |",
    ]
    for (name, top1, agree, seconds, data, size), b in zip(rows, bench[1:], strict=True):
        ratios = " | ".join(
            f"{b.at(bs, 2).p50_ms / bench[0].at(bs, 2).p50_ms:.2f}" for bs in (1, 32)
        )
        lines.append(
            f"| {name} | {100 * top1:.2f} | {100 * (fp32_top1 - top1):+.2f} | {100 * agree:.2f} | "
            f"{seconds:.0f} s | {data} | {size / 1024:.0f} | {ratios} |"
        )

    def recovery(i: int) -> str:
        lost = fp32_top1 - rows[i - 1][1]
        if lost < 0.002:
            return f"PTQ lost only {100 * lost:.2f} points, nothing to recover"
        gained = rows[i][1] - rows[i - 1][1]
        return f"QAT recovered {100 * gained / lost:.0f}% of the {100 * lost:.2f} points PTQ lost"

    body = "\n".join(
        [
            f"Machine: {machine()}. QAT: SGD, cosine schedule, batch 128; W8A8 {args.steps8} steps at",
            f"lr {args.lr8}, W4A8 {args.steps4} steps at lr {args.lr4}. W8A8: {recovery(1)}; W4A8: {recovery(3)}.",
            "ONNX Runtime has no fused int4 convolution on CPU, so W4A8 convolutions run in float on",
            "dequantized weights: 4-bit buys size here, not speed.",
            "",
            *lines,
        ]
    )
    print(body)
    if not args.no_readme:
        write_readme_section("qat", body)


if __name__ == "__main__":
    main()
