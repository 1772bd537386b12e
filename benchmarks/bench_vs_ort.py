"""edgequant's default static INT8 against onnxruntime.quantization.quantize_static, side by side.

Same FP32 model, same calibration images, same 10,000 test images, latency measured interleaved
in one run. ORT is run twice: with its API defaults (QDQ, s8 activations, s8 per-tensor weights,
MinMax, no pre-processing) and with its best settings for this CPU as found in
../shared/PEER-FINDINGS.md (quant_pre_process, u8 activations, per-channel weights, MinMax).
Calibration peak memory is measured in a fresh process per (tool, sample count).

    python benchmarks/bench_vs_ort.py [--samples 100 1000 10000] [--no-readme]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edgequant as eq
from _common import (
    PEAK_MEMORY,
    calibration_indices,
    demo_task,
    machine,
    run_child,
    write_results_section,
)

CALIB = 1000

CHILD = (
    PEAK_MEMORY
    + r"""
import json, sys, time, tempfile
import numpy as np
sys.path.insert(0, "benchmarks")
from _common import calibration_indices
from edgequant.zoo import fashion_mnist
import edgequant as eq
tool, n, model_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
images = fashion_mnist.load("train").images[calibration_indices(n)]
import onnxruntime, onnx  # imported before the baseline so both tools pay the same
from onnxruntime.quantization import quantize_static, CalibrationDataReader, QuantType, QuantFormat
base = rss_mb("VmRSS"); reset_peak(); t0 = time.perf_counter()
if tool == "edgequant":
    q = eq.quantize(eq.load(model_path), eq.PTQConfig.int8(max_calibration_samples=n),
                    calibration=eq.ArrayDataset(images, None, 100))
else:
    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": images[i:i + 100]} for i in range(0, n, 100)])
        def get_next(self):
            return next(self.batches, None)
    with tempfile.TemporaryDirectory() as tmp:
        quantize_static(model_path, tmp + "/q.onnx", Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
seconds = time.perf_counter() - t0
print(json.dumps({"peak_mb": rss_mb("VmHWM") - base, "seconds": seconds}))
"""
)


def ort_quantize(model_path: Path, images, out: Path, best: bool) -> float:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                [{"input": images[i : i + 100]} for i in range(0, len(images), 100)]
            )

        def get_next(self):
            return next(self.batches, None)

    t0 = time.perf_counter()
    src = model_path
    if best:
        src = out.with_suffix(".pre.onnx")
        quant_pre_process(str(model_path), str(src))
        quantize_static(
            str(src),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    else:
        quantize_static(str(model_path), str(out), Reader())  # the API's defaults
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()

    fp32, train, test = demo_task()
    calib_images = train.images[calibration_indices(CALIB)]
    test_data = eq.ArrayDataset(test.images, test.labels, 500)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "fp32.onnx"
        fp32.save(model_path)
        t0 = time.perf_counter()
        ours = eq.quantize(
            fp32, eq.PTQConfig.int8(), calibration=eq.ArrayDataset(calib_images, None, 100)
        )
        ours_s = time.perf_counter() - t0
        ours.name = "edgequant default"
        peers = []
        for label, best in (
            ("ORT quantize_static, defaults", False),
            ("ORT quantize_static, best settings", True),
        ):
            out = Path(tmp) / f"ort_{best}.onnx"
            seconds = ort_quantize(model_path, calib_images, out, best)
            model = eq.load(out)
            model.name = label
            peers.append((model, seconds))
        fp32.name = "FP32"
        models = [fp32, ours, *(m for m, _ in peers)]
        times = [None, ours_s, *(s for _, s in peers)]
        evals = [eq.evaluate(m, test_data, reference=fp32) for m in models]
        bench = eq.benchmark(
            models, batch_sizes=(1, 32), threads=(1, 2), rounds=args.rounds, memory=False
        )
        memory = {
            tool: {n: run_child(CHILD, tool, str(n), str(model_path)) for n in args.samples}
            for tool in ("edgequant", "ort")
        }

    settings = [(b, t) for t in (1, 2) for b in (1, 32)]
    head = (
        "| | top-1 % | agree % | size KB | quantize s | "
        + " | ".join(f"latency × b{b}/t{t}" for b, t in settings)
        + " |"
    )
    lines = [head, "|" + "---|" * (5 + len(settings))]
    for m, ev, b, s in zip(models, evals, bench, times, strict=True):
        ratios = " | ".join(
            f"{b.at(bb, tt).p50_ms / bench[0].at(bb, tt).p50_ms:.2f}" for bb, tt in settings
        )
        lines.append(
            f"| {m.name} | {100 * ev.top1:.2f} | {100 * ev.agreement:.2f} | {m.size_bytes / 1024:.0f} | "
            f"{'-' if s is None else f'{s:.1f}'} | {ratios} |"
        )
    mem_head = "| calibration samples | " + " | ".join(str(n) for n in args.samples) + " |"
    mem_lines = [mem_head, "|" + "---|" * (1 + len(args.samples))]
    for tool, label in (("edgequant", "edgequant peak MB (s)"), ("ort", "ORT MinMax peak MB (s)")):
        cells = " | ".join(
            f"{memory[tool][n]['peak_mb']:.0f} ({memory[tool][n]['seconds']:.1f})"
            for n in args.samples
        )
        mem_lines.append(f"| {label} | {cells} |")
    fp32_ms = " / ".join(f"{bench[0].at(b, t).p50_ms:.3f}" for b, t in settings)
    body = "\n".join(
        [
            f"Machine: {machine()}. Demo EdgeCNN, {CALIB} calibration images, 10,000 test images; latency ×",
            f"is p50 / FP32 p50 in the same interleaved run ({args.rounds} rounds; FP32 p50 ms {fp32_ms}).",
            "",
            *lines,
            "",
            "Peak memory added during calibration + quantization, fresh process each (MB), and seconds:",
            "",
            *mem_lines,
        ]
    )
    print(body)
    if not args.no_readme:
        write_results_section("vs-ort", body)


if __name__ == "__main__":
    main()
