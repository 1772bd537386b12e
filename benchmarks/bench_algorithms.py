"""The measured effect of the PTQ repair algorithms on the demo model (issue 4's table).

Cross-layer equalisation and bias correction (Nagel et al. 2019) on static INT8 with per-tensor
and per-channel weights: accuracy, agreement and output SQNR against FP32 on the 10,000 test
images, and the time each adds. Every number comes from ONNX Runtime running the exported model.

    python benchmarks/bench_algorithms.py [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgequant as eq
from _common import calibration_indices, demo_task, machine, write_readme_section

CALIB = 1000
NONE, CLE = eq.Equalization.NONE, eq.Equalization.CROSS_LAYER
NO_BC, BC = eq.BiasCorrection.NONE, eq.BiasCorrection.EMPIRICAL
ROWS = [
    ("per-tensor", False, NONE, NO_BC),
    ("per-tensor + CLE", False, CLE, NO_BC),
    ("per-tensor + bias correction", False, NONE, BC),
    ("per-tensor + CLE + bias correction", False, CLE, BC),
    ("per-channel (default)", True, NONE, NO_BC),
    ("per-channel + bias correction", True, NONE, BC),
    ("per-channel + CLE + bias correction", True, CLE, BC),
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
        "| static INT8 | top-1 % | drop (pts) | agree % | output SQNR dB | quantize s |",
        "|---|---|---|---|---|---|",
        f"| FP32 | {100 * reference.top1:.2f} | - | - | - | - |",
    ]
    for label, per_channel, equalization, correction in ROWS:
        config = eq.PTQConfig.int8(
            per_channel=per_channel, equalization=equalization, bias_correction=correction
        )
        t0 = time.perf_counter()
        q = eq.quantize(fp32, config, calibration=calib)
        seconds = time.perf_counter() - t0
        r = eq.evaluate(q, data, reference=fp32)
        row = (
            f"| {label} | {100 * r.top1:.2f} | {100 * (reference.top1 - r.top1):+.2f} | "
            f"{100 * r.agreement:.2f} | {r.output_sqnr_db:.1f} | {seconds:.1f} |"
        )
        print(row, flush=True)
        lines.append(row)
    body = (
        f"Machine: {machine()}. Demo EdgeCNN, {CALIB:,} calibration images, 10,000 test images.\n\n"
        + "\n".join(lines)
    )
    print(body)
    if not args.no_readme:
        write_readme_section("algorithms", body)


if __name__ == "__main__":
    main()
