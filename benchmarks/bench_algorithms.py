"""The measured effect of the PTQ repair algorithms on the demo model (issue 4's table).

Cross-layer equalisation and bias correction (Nagel et al. 2019) on static INT8 with per-tensor
and per-channel weights, and AdaRound (Nagel et al. 2020) on W4A8: accuracy, agreement and output
SQNR against FP32 on the 10,000 test images, size, and the time each adds. Every number comes from ONNX Runtime running the exported model.

    python benchmarks/bench_algorithms.py [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgequant as eq
from _common import calibration_indices, demo_task, machine, write_results_section

CALIB = 1000
CLE = {"equalization": eq.Equalization.CROSS_LAYER}
BC = {"bias_correction": eq.BiasCorrection.EMPIRICAL}
ADA = {"rounding": eq.Rounding.ADAROUND}
INT8, W4A8 = eq.PTQConfig.int8, eq.PTQConfig.w4a8
ROWS = [
    ("INT8 per-tensor", INT8(per_channel=False)),
    ("INT8 per-tensor + CLE", INT8(per_channel=False, **CLE)),
    ("INT8 per-tensor + bias correction", INT8(per_channel=False, **BC)),
    ("INT8 per-tensor + CLE + bias correction", INT8(per_channel=False, **CLE, **BC)),
    ("INT8 per-channel (default)", INT8()),
    ("INT8 per-channel + bias correction", INT8(**BC)),
    ("W4A8 per-channel, round to nearest", W4A8()),
    ("W4A8 per-channel + AdaRound", W4A8(**ADA)),
    ("W4A8 per-channel + AdaRound + bias correction", W4A8(**ADA, **BC)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    fp32, train, test = demo_task()
    calib = eq.ArrayDataset(train.images[calibration_indices(CALIB)], None, 100)
    data = eq.ArrayDataset(test.images, test.labels, 1000)
    reference = eq.evaluate(fp32, data)
    lines = [
        "| static PTQ | top-1 % | drop (pts) | agree % | output SQNR dB | size KB | quantize s |",
        "|---|---|---|---|---|---|---|",
        f"| FP32 | {100 * reference.top1:.2f} | - | - | - | {fp32.size_bytes / 1024:.0f} | - |",
    ]
    for label, config in ROWS:
        t0 = time.perf_counter()
        q = eq.quantize(fp32, config, calibration=calib)
        seconds = time.perf_counter() - t0
        r = eq.evaluate(q, data, reference=fp32)
        row = (
            f"| {label} | {100 * r.top1:.2f} | {100 * (reference.top1 - r.top1):+.2f} | "
            f"{100 * r.agreement:.2f} | {r.output_sqnr_db:.1f} | {q.size_bytes / 1024:.0f} "
            f"| {seconds:.1f} |"
        )
        print(row, flush=True)
        lines.append(row)
    body = (
        f"Machine: {machine()}. Demo EdgeCNN, {CALIB:,} calibration images, 10,000 test images.\n\n"
        + "\n".join(lines)
    )
    print(body)
    if not args.no_readme:
        write_results_section("algorithms", body)


if __name__ == "__main__":
    main()
