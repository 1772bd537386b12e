"""The per-target section of a report: for each deployment preset, the model quantized for it,
its accuracy, how much of its compute runs in integer on the preset's runtime and on this CPU,
and latency where the runtime is here (ONNX Runtime CPU; LiteRT for TFLite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from edgequant.api import quantize
from edgequant.config import PTQConfig, Target
from edgequant.data import ArrayDataset
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent
from edgequant.report.write import Section
from edgequant.runtime.benchmark import benchmark
from edgequant.runtime.evaluate import evaluate
from edgequant.support import check_support
from edgequant.targets import preset


def target_section(
    fp32: Model,
    calibration: ArrayDataset,
    test: ArrayDataset,
    models_dir: Path,
    *,
    torch_model: Any = None,
    progress: ProgressFn = silent,
    rounds: int = 3,
) -> Section:
    """Quantize `fp32` for every preset (and convert `torch_model` to full-integer TFLite when
    litert-torch is installed), evaluate, check operator support, and time what runs here."""
    here = Target.detect()
    targets = [t for t in Target if preset(t).format == "onnx"]
    made: list[tuple[Target, Model]] = []
    for i, target in enumerate(targets):
        progress("quantizing for each target", i, len(targets))
        q = quantize(fp32, PTQConfig.for_target(target), calibration=calibration)
        q.name = f"{fp32.name.split('.')[0]}.{target.value}"
        q.save(models_dir / f"{q.name}.onnx")
        made.append((target, q))
    progress("quantizing for each target", len(targets), len(targets))
    bench = benchmark(
        [fp32, *(q for _, q in made)], batch_sizes=(1,), threads=(1,), rounds=rounds, memory=False
    )
    base = bench[0].at(1, 1).p50_ms
    rows, data = [], []
    for (target, q), b in zip(made, bench[1:], strict=True):
        own, cpu = check_support(q, target), check_support(q, here)
        top1 = evaluate(q, test).top1 or 0.0
        ratio = b.at(1, 1).p50_ms / base
        rows.append(
            f"| {target.value} | {own.runtime} | {100 * top1:.2f} | "
            f"{100 * own.integer_fraction:.0f}% ({len(own.float_nodes)} float) | "
            f"{100 * cpu.integer_fraction:.0f}% ({len(cpu.float_nodes)} float) | "
            f"{q.size_bytes / 1024:.0f} | {ratio:.2f} (ORT CPU) |"
        )
        data.append(
            {"target": target.value, "top1": top1, "support": own.to_dict(),
             "cpu_integer_fraction": cpu.integer_fraction, "latency_ratio_b1_t1": ratio}
        )  # fmt: skip
    tflite_row, notes = _tflite(torch_model, calibration, test, models_dir, progress, rounds)
    if tflite_row:
        rows.append(tflite_row[0])
        data.append(tflite_row[1])
    header = (
        "| target | runtime | top-1 % | integer MACs on its runtime | integer MACs on this CPU "
        f"({here.value}) | size KB | latency b1 x FP32 |\n|---|---|---|---|---|---|---|"
    )
    notes = [
        "Integer MACs: share of the multiply-accumulates in nodes that run in integer "
        "(`edgequant check`); ONNX Runtime CPU targets are checked on ORT's own fused graph, QNN "
        "and TensorRT on QDQ node units, TFLite on its operators' tensor types.",
        "QNN and TensorRT are not installed here: their latency is ORT CPU running their model.",
        *notes,
    ]
    return Section("Deployment targets", header + "\n" + "\n".join(rows), notes, data)


def _tflite(
    torch_model: Any,
    calibration: ArrayDataset,
    test: ArrayDataset,
    models_dir: Path,
    progress: ProgressFn,
    rounds: int,
) -> tuple[tuple[str, dict[str, Any]] | None, list[str]]:
    """Full-integer TFLite in LiteRT, latency as a ratio to the FP32 .tflite."""
    if torch_model is None:
        return None, []
    if importlib.util.find_spec("litert_torch") is None:
        return None, ["TFLite: not measured; pip install 'edgequant[tflite]' adds it."]
    from edgequant.tflite import (
        TFLiteMode,
        benchmark_tflite,
        check_tflite,
        evaluate_tflite,
        to_tflite,
    )

    example = next(iter(test))[0][:1]
    progress("converting to TFLite", 0, 2)
    fp32 = to_tflite(torch_model, example, mode=TFLiteMode.FP32)
    progress("converting to TFLite", 1, 2)
    int8 = to_tflite(torch_model, example, calibration=calibration, name="edgecnn")
    progress("converting to TFLite", 2, 2)
    int8.save(models_dir / "edgecnn.int8.tflite")
    top1, fp32_top1 = evaluate_tflite(int8, test), evaluate_tflite(fp32, test)
    ratio = benchmark_tflite(int8, example[0], rounds=rounds) / benchmark_tflite(
        fp32, example[0], rounds=rounds
    )
    support = check_tflite(int8)
    row = (
        f"| tflite | litert | {100 * top1:.2f} | {100 * support.integer_fraction:.0f}% "
        f"({len(support.float_nodes)} float) | - | {int8.size_bytes / 1024:.0f} "
        f"| {ratio:.2f} (LiteRT, to FP32 .tflite) |"
    )
    note = (
        f"TFLite: full integer with int8 inputs and outputs (litert-torch), {100 * top1:.2f}% "
        f"against {100 * fp32_top1:.2f}% for the FP32 .tflite in LiteRT; models/edgecnn.int8.tflite."
    )
    data = {"target": "tflite", "top1": top1, "fp32_top1": fp32_top1,
            "support": support.to_dict(), "latency_ratio_b1_t1": ratio}  # fmt: skip
    return (row, data), [note]


def support_section(models: list[tuple[str, Model]], target: Target | None = None) -> Section:
    """Operator support of each model on `target` (default: this CPU), one row per model."""
    target = target or Target.detect()
    rows, data = [], []
    for name, model in models:
        report = check_support(model, target)
        floats = ", ".join(f"{n.name} ({n.op_type})" for n in report.float_nodes[:3])
        more = f" and {len(report.float_nodes) - 3} more" if len(report.float_nodes) > 3 else ""
        rows.append(
            f"| {name} | {len(report.nodes) - len(report.float_nodes)}/{len(report.nodes)} | "
            f"{100 * report.integer_fraction:.0f}% | {floats + more or '-'} |"
        )
        data.append({"model": name, **report.brief()})
    header = "| model | integer nodes | integer MACs | float nodes |\n|---|---|---|---|"
    note = (
        f"Checked on {target.value} ({preset(target).runtime.value}) with `edgequant check`: "
        "ONNX Runtime's own fused graph says which nodes run in integer."
    )
    return Section(
        f"Operator support on {target.value}", header + "\n" + "\n".join(rows), [note], data
    )
