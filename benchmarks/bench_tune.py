"""Accuracy-driven mixed precision on the demo model (issue 4's `edgequant tune` table).

The tuner decides on the first 5,000 test images; every best model is then measured on the
other 5,000, which it never saw (a search that picks among many candidates on one set flatters
itself on that set). Latency of each best model against FP32 and FP16 is timed in one
interleaved run. Local and Ray backends run the same search; their times are compared.

    python benchmarks/bench_tune.py [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgequant as eq
from _common import calibration_indices, demo_task, machine, write_results_section

P = eq.Precision
RUNS = [
    ("0.5 pts", eq.TuneConfig(max_accuracy_drop=0.5, backend=eq.Backend.LOCAL)),
    ("0.5 pts, Ray (2 workers)", eq.TuneConfig(max_accuracy_drop=0.5, backend=eq.Backend.RAY)),
    ("0.2 pts", eq.TuneConfig(max_accuracy_drop=0.2, backend=eq.Backend.LOCAL)),
    (
        "0.5 pts, latency <= 0.6x FP32 (b32)",
        eq.TuneConfig(
            max_accuracy_drop=0.5, max_latency_ratio=0.6, latency_batch=32, backend=eq.Backend.LOCAL
        ),
    ),
    (
        "0.5 pts, AdaRound",
        eq.TuneConfig(
            max_accuracy_drop=0.5,
            backend=eq.Backend.LOCAL,
            ptq=eq.PTQConfig.int8(rounding=eq.Rounding.ADAROUND),
        ),
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    fp32, train, test = demo_task()
    calib = eq.ArrayDataset(train.images[calibration_indices(500)], None, 100)
    tuning = eq.ArrayDataset(test.images[:5000], test.labels[:5000], 500)
    held_out = eq.ArrayDataset(test.images[5000:], test.labels[5000:], 1000)
    fp16 = eq.quantize(fp32, eq.PTQConfig.fp16())
    held_fp32 = eq.evaluate(fp32, held_out).top1
    rows, bests = [], []
    for label, config in RUNS:
        with tempfile.TemporaryDirectory() as out:
            r = eq.tune(fp32, config, calibration=calib, data=tuning, out_dir=out)
            print(r.sentence(), f"{r.seconds:.0f} s", flush=True)
            best = eq.load(r.best_path)
            best.name = label
        held = eq.evaluate(best, held_out).top1
        mix = ", ".join(f"{n} {p}" for p, n in sorted(r.best.counts().items()))
        rows.append((label, mix, r, held))
        bests.append(best)
    bench = eq.benchmark([fp32, fp16, *bests], batch_sizes=(1, 32), threads=(2,), rounds=5,
                         memory=False)  # fmt: skip
    lat = {b.name: (b.at(1, 2).p50_ms, b.at(32, 2).p50_ms) for b in bench}
    base = lat[fp32.name]
    lines = [
        "| budget | best: layers | size % of FP32 | drop, tuning 5k (pts) | drop, held-out 5k "
        "(pts) | latency b1 / b32 x FP32 | trials | time s |",
        "|---|---|---|---|---|---|---|---|",
        f"| FP16 (for scale) | all fp16 | {100 * fp16.size_bytes / fp32.size_bytes:.1f} | - | - "
        f"| {lat[fp16.name][0] / base[0]:.2f} / {lat[fp16.name][1] / base[1]:.2f} | - | - |",
    ]
    for label, mix, r, held in rows:
        b = r.best
        lines.append(
            f"| {label} | {mix} | {100 * b.size_bytes / r.fp32_size_bytes:.1f} "
            f"| {b.drop_points:+.2f} | {100 * (held_fp32 - held):+.2f} "
            f"| {lat[label][0] / base[0]:.2f} / {lat[label][1] / base[1]:.2f} "
            f"| {len(r.trials)} | {r.seconds:.0f} |"
        )
    body = (
        f"Machine: {machine()}. `eq.tune` / `edgequant tune` on the demo model, precisions "
        "int4 < int8 < fp32, 500 calibration images; FP32 top-1 "
        f"{100 * rows[0][2].reference_top1:.2f}% on the tuning half, {100 * held_fp32:.2f}% on "
        "the held-out half. Latency: median at 2 threads, all models in one interleaved run.\n\n"
        + "\n".join(lines)
    )
    print(body)
    if not args.no_readme:
        write_results_section("tune", body)


if __name__ == "__main__":
    main()
