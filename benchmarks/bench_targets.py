"""Deployment targets (issue 5) on the demo model and the 10,000 Fashion-MNIST test images.

1. Every ONNX preset: top-1 in ONNX Runtime, how much of the compute runs in integer on the
   preset's own runtime (`eq.check_support`) and on this machine's ORT CPU, size, and latency
   ratio to FP32 in ORT CPU (batch 1 and 32, 1 thread). QNN and TensorRT are not here: their
   rows run on ORT's CPU, which is what the "ORT CPU" columns say.
2. TFLite through litert-torch, run in LiteRT: FP32, full-integer INT8, dynamic-range, FP16:
   top-1, size, batch-1 latency (1 and 2 threads) as a ratio to the FP32 .tflite, next to the
   ONNX Runtime INT8 model at batch 1.

    python benchmarks/bench_targets.py [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgequant as eq
from _common import calibration_indices, demo_task, machine, write_results_section
from edgequant.runtime.runtimes import Runtime

ROUNDS = 7


def onnx_presets(fp32: eq.Model, calib: eq.ArrayDataset, test: eq.ArrayDataset) -> list[str]:
    here = eq.Target.detect()
    rows, models = [], [fp32]
    for target in (t for t in eq.Target if eq.preset(t).format == "onnx"):
        t0 = time.perf_counter()
        q = eq.quantize(fp32, eq.PTQConfig.for_target(target), calibration=calib)
        seconds = time.perf_counter() - t0
        q.name = target.value
        models.append(q)
        own = eq.check_support(q, target)
        cpu = eq.check_support(q, here)
        rows.append((target, q, own, cpu, eq.evaluate(q, test).top1, seconds))
        print(target.value, f"{seconds:.1f} s", own.summary(), flush=True)
    bench = {
        b.name: b
        for b in eq.benchmark(
            models, batch_sizes=(1, 32), threads=(1,), rounds=ROUNDS, memory=False
        )
    }
    base = bench[fp32.name]
    # the x86 presets on a second runtime for this CPU: OpenVINO reads the same QDQ files
    x86 = [q for target, q, *_ in rows if target in (eq.Target.X86, eq.Target.X86_VNNI)]
    openvino = {
        b.name: b
        for b in eq.benchmark([fp32, *x86], batch_sizes=(1, 32), threads=(1,), rounds=ROUNDS,
                              memory=False, runtime=Runtime.parse("openvino"))
    }  # fmt: skip
    fp32_top1 = eq.evaluate(fp32, test).top1
    lines = [
        f"| target | runtime | top-1 % (FP32 {100 * fp32_top1:.2f}) | integer MACs on its runtime "
        f"| integer MACs on ORT CPU ({here.value}) | float nodes on ORT CPU | size % of FP32 "
        "| ORT CPU latency b1 / b32 x FP32 | OpenVINO CPU latency b1 / b32 x FP32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for target, q, own, cpu, top1, _ in rows:
        b = bench[q.name]
        r1, r32 = (b.at(n, 1).p50_ms / base.at(n, 1).p50_ms for n in (1, 32))
        ov = openvino.get(q.name)
        ov_base = openvino[fp32.name]
        ov_cell = (
            "-" if ov is None
            else " / ".join(f"{ov.at(n, 1).p50_ms / ov_base.at(n, 1).p50_ms:.2f}" for n in (1, 32))
        )  # fmt: skip
        lines.append(
            f"| {target.value} | {own.runtime} | {100 * top1:.2f} | {100 * own.integer_fraction:.0f}% "
            f"| {100 * cpu.integer_fraction:.0f}% | {len(cpu.float_nodes)} "
            f"| {100 * q.size_bytes / fp32.size_bytes:.1f} | {r1:.2f} / {r32:.2f} | {ov_cell} |"
        )
    return lines


def tflite_rows(train, test_split, ort_int8: eq.Model, fp32: eq.Model) -> list[str]:
    from edgequant.zoo.train import demo_model

    module = demo_model()
    example = test_split.images[:1]
    calib = eq.ArrayDataset(train.images[calibration_indices(500)], None, 100)
    test = eq.ArrayDataset(test_split.images, test_split.labels, 1000)
    t0 = time.perf_counter()
    base = eq.to_tflite(module, example, mode=eq.TFLiteMode.FP32)
    made = [(base, time.perf_counter() - t0)]
    t0 = time.perf_counter()
    made.append((eq.to_tflite(module, example, calibration=calib), time.perf_counter() - t0))
    for mode in (eq.TFLiteMode.DYNAMIC_RANGE, eq.TFLiteMode.FP16):
        t0 = time.perf_counter()
        made.append((eq.quantize_tflite(base, mode), time.perf_counter() - t0))
    sample = test_split.images[0]
    latency = {
        (m.mode, t): eq.benchmark_tflite(m, sample, threads=t, rounds=ROUNDS)
        for t in (1, 2)
        for m, _ in made
    }
    ort = {
        b.name: b
        for b in eq.benchmark([fp32, ort_int8], batch_sizes=(1,), threads=(1, 2), rounds=ROUNDS, memory=False)
    }  # fmt: skip
    fp32_top1 = eq.evaluate_tflite(base, test)
    lines = [
        "| .tflite | top-1 % | drop (pts) | integer MACs | size KB | LiteRT b1 latency t1 / t2 (ms) "
        "| ratio to FP32 .tflite t1 / t2 | convert s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, seconds in made:
        top1 = eq.evaluate_tflite(m, test)
        t1, t2 = latency[(m.mode, 1)], latency[(m.mode, 2)]
        r1, r2 = t1 / latency[(base.mode, 1)], t2 / latency[(base.mode, 2)]
        lines.append(
            f"| {m.mode.value} | {100 * top1:.2f} | {100 * (fp32_top1 - top1):+.2f} "
            f"| {100 * eq.check_tflite(m).integer_fraction:.0f}% | {m.size_bytes / 1024:.0f} "
            f"| {t1:.3f} / {t2:.3f} | {r1:.2f} / {r2:.2f} | {seconds:.1f} |"
        )
    o32, o8 = ort[fp32.name], ort[ort_int8.name]
    lines.append(
        f"| ONNX Runtime INT8 (x86-vnni preset), for comparison | - | - | 100% "
        f"| {ort_int8.size_bytes / 1024:.0f} | {o8.at(1, 1).p50_ms:.3f} / {o8.at(1, 2).p50_ms:.3f} "
        f"| {o8.at(1, 1).p50_ms / o32.at(1, 1).p50_ms:.2f} / {o8.at(1, 2).p50_ms / o32.at(1, 2).p50_ms:.2f} "
        "(to FP32 ONNX) | - |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    fp32, train, test_split = demo_task()
    calib = eq.ArrayDataset(train.images[calibration_indices(1000)], None, 100)
    test = eq.ArrayDataset(test_split.images, test_split.labels, 1000)
    presets = onnx_presets(fp32, calib, test)
    ort_int8 = eq.quantize(fp32, eq.PTQConfig.for_target(eq.Target.X86_VNNI), calibration=calib)
    ort_int8.name = "ort-int8"
    tfl = tflite_rows(train, test_split, ort_int8, fp32)
    text = "\n".join(
        [
            f"Measured on {machine()}, {time.strftime('%Y-%m-%d')}; medians of {ROUNDS} rounds.",
            "",
            "ONNX presets (`eq.PTQConfig.for_target`, 1,000 calibration images):",
            "",
            *presets,
            "",
            "TFLite through litert-torch, run in the LiteRT interpreter (XNNPACK), batch 1:",
            "",
            *tfl,
        ]
    )
    print(text)
    if not args.no_readme:
        write_results_section("targets", text)


if __name__ == "__main__":
    main()
