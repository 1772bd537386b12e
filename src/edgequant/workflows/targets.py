"""Every deployment preset on one model: quantized for it, evaluated, its operator support on
the preset's runtime and on this CPU, latency where the runtime is here (ONNX Runtime CPU;
LiteRT for TFLite). `edgequant.report.targets` renders the result; the demo runs it."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.analysis.support import SupportReport, check_support
from edgequant.config import PTQConfig, Target
from edgequant.data import ArrayDataset
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent
from edgequant.ptq import quantize
from edgequant.runtime.benchmark import benchmark
from edgequant.runtime.evaluate import evaluate
from edgequant.targets import preset


@dataclass(frozen=True)
class TargetRun:
    """One preset's model: top-1, support on its own runtime (and on this CPU for ONNX
    targets), size, and latency as a ratio to FP32 (`latency_baseline` says to which FP32)."""

    target: str
    top1: float
    support: SupportReport
    size_bytes: int
    latency_ratio: float
    latency_baseline: str
    cpu_support: SupportReport | None = None
    fp32_top1: float | None = None  # TFLite: the FP32 .tflite in LiteRT
    openvino_ratio: float | None = None  # x86 presets: latency / FP32's in OpenVINO, if installed


@dataclass(frozen=True)
class TargetsRun:
    runs: list[TargetRun]
    here: Target
    notes: list[str]  # what could not be measured here, and why


def quantize_for_targets(
    fp32: Model,
    calibration: ArrayDataset,
    test: ArrayDataset,
    models_dir: Path,
    *,
    torch_model: Any = None,
    progress: ProgressFn = silent,
    rounds: int = 3,
) -> TargetsRun:
    """Quantize `fp32` for every ONNX preset (and convert `torch_model` to full-integer TFLite
    when litert-torch is installed), save each model into `models_dir`, evaluate, check
    operator support, and time what runs here."""
    here = Target.detect()
    targets = [t for t in Target if preset(t).format == "onnx"]
    made: list[tuple[Target, Model]] = []
    for i, target in enumerate(targets):
        progress("quantizing for each target", i, len(targets))
        # each preset as it is (no fidelity guard): the table measures fidelity on `test`
        q = quantize(fp32, PTQConfig.for_target(target), calibration=calibration, guard=None)
        q.name = f"{fp32.name.split('.')[0]}.{target.value}"
        q.save(models_dir / f"{q.name}.onnx")
        made.append((target, q))
    progress("quantizing for each target", len(targets), len(targets))
    bench = benchmark(
        [fp32, *(q for _, q in made)], batch_sizes=(1,), threads=(1,), rounds=rounds, memory=False
    )
    base = bench[0].at(1, 1).p50_ms
    openvino = _openvino_ratios(fp32, made, rounds)
    runs = [
        TargetRun(
            target.value,
            evaluate(q, test).top1 or 0.0,
            check_support(q, target),
            q.size_bytes,
            b.at(1, 1).p50_ms / base,
            "ORT CPU",
            cpu_support=check_support(q, here),
            openvino_ratio=openvino.get(target),
        )
        for (target, q), b in zip(made, bench[1:], strict=True)
    ]
    tflite, notes = _tflite(torch_model, calibration, test, models_dir, progress, rounds)
    return TargetsRun(runs + ([tflite] if tflite else []), here, notes)


def _openvino_ratios(
    fp32: Model, made: list[tuple[Target, Model]], rounds: int
) -> dict[Target, float]:
    """Batch-1 latency / FP32's of the x86 presets' models in OpenVINO, a second runtime for
    this CPU that reads the same QDQ files; empty when the openvino extra is not installed."""
    if importlib.util.find_spec("openvino") is None:
        return {}
    from edgequant.runtime.runtimes import Runtime

    x86 = [(t, q) for t, q in made if t in (Target.X86, Target.X86_VNNI)]
    bench = benchmark([fp32, *(q for _, q in x86)], batch_sizes=(1,), threads=(1,), rounds=rounds,
                      memory=False, runtime=Runtime.parse("openvino"))  # fmt: skip
    base = bench[0].at(1, 1).p50_ms
    return {t: b.at(1, 1).p50_ms / base for (t, _), b in zip(x86, bench[1:], strict=True)}


def _tflite(
    torch_model: Any,
    calibration: ArrayDataset,
    test: ArrayDataset,
    models_dir: Path,
    progress: ProgressFn,
    rounds: int,
) -> tuple[TargetRun | None, list[str]]:
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
    run = TargetRun("tflite", top1, check_tflite(int8), int8.size_bytes, ratio,
                    "LiteRT, to FP32 .tflite", fp32_top1=fp32_top1)  # fmt: skip
    note = (
        f"TFLite: full integer with int8 inputs and outputs (litert-torch), {100 * top1:.2f}% "
        f"against {100 * fp32_top1:.2f}% for the FP32 .tflite in LiteRT; models/edgecnn.int8.tflite."
    )
    return run, [note]
