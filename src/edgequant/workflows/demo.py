"""`edgequant demo`: the whole workflow on the built-in real default, with no input.

Fashion-MNIST (Debian package) -> the edge-style CNN trained in FP32 (or from the cache) -> ONNX
-> every PTQ variant that applies -> accuracy on the 10,000 test images and latency/size in ONNX
Runtime, side by side -> the model for every deployment target with its operator-support check
(TFLite in LiteRT) -> a report folder (Markdown, HTML with a plot, JSON) and the saved models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.config import ACTIVATIONS_INT8, Calibrator, PTQConfig
from edgequant.data import ArrayDataset
from edgequant.model import Model
from edgequant.outputs import check_report_dir, resolve_output_dir
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import Provenance
from edgequant.ptq import quantize
from edgequant.report import Row, Section, write_report
from edgequant.report.table import timing
from edgequant.report.targets import target_section
from edgequant.runtime.benchmark import benchmark
from edgequant.runtime.scoring import Scorer
from edgequant.workflows.detection_demo import DetectionDemo, run_detection
from edgequant.workflows.targets import quantize_for_targets

CALIBRATION_SAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class Variant:
    name: str
    config: PTQConfig
    note: str = ""


def variants() -> list[Variant]:
    """Every PTQ variant the demo compares; the first is edgequant's default."""
    return [
        Variant(
            "int8",
            PTQConfig.int8(),
            "default: static, per-channel s8 weights, u8 activations, min-max",
        ),
        Variant("int8-percentile", PTQConfig.int8(calibrator=Calibrator.PERCENTILE)),
        Variant("int8-entropy", PTQConfig.int8(calibrator=Calibrator.ENTROPY)),
        Variant("int8-mse", PTQConfig.int8(calibrator=Calibrator.MSE)),
        Variant("int8-per-tensor", PTQConfig.int8(per_channel=False)),
        Variant(
            "int8-s8-activations",
            PTQConfig.int8(activations=ACTIVATIONS_INT8),
            "shows why u8 activations are the x86 default",
        ),
        Variant(
            "dynamic", PTQConfig.dynamic(), "only the classifier Gemm: dynamic Conv is slow in ORT"
        ),
        Variant("fp16", PTQConfig.fp16()),
        Variant(
            "int4-weights",
            PTQConfig.int4(block_size=32),
            "only the classifier: INT4 applies to MatMul/Gemm",
        ),
    ]


@dataclass(frozen=True)
class Built:
    """One model the demo made, and how."""

    name: str
    method: str
    model: Model
    seconds: float
    note: str = ""


# A short QAT schedule that fits the demo's time budget; measured on 2 cores: ~35 s, W4A8
# 88.38% after PTQ -> 89.63% (FP32 90.01%). benchmarks/bench_qat.py runs the full schedules.
QAT_STEPS, QAT_BATCH, QAT_LR = 100, 64, 2e-3


def _ptq_vs_qat(
    module: Any, calibration: ArrayDataset, train: Any, progress: ProgressFn
) -> list[Built]:
    """W4A8 by PTQ (the QAT model right after its calibration warm start) and by a short QAT:
    4-bit weights are where PTQ loses accuracy and QAT earns its training time."""
    import torch

    from edgequant.qat import QATConfig, export, finetune, prepare_qat

    example = torch.zeros(1, *train.images.shape[1:])
    t0 = time.perf_counter()
    model = prepare_qat(module, QATConfig.w4a8(), calibration=calibration)
    ptq = export(model, example, "edgecnn.ptq-w4a8")
    ptq_s = time.perf_counter() - t0
    finetune(
        model,
        ArrayDataset(train.images, train.labels, QAT_BATCH),
        lr=QAT_LR,
        max_steps=QAT_STEPS,
        seed=SEED,
        progress=lambda _s, done, total: progress("QAT W4A8 fine-tuning", done, total),
    )
    qat = export(model, example, "edgecnn.qat-w4a8")
    seen = f"{QAT_STEPS * QAT_BATCH:,} labelled images"
    return [
        Built("ptq-w4a8", "ptq", ptq, ptq_s, "4-bit weights by PTQ (calibration only)"),
        Built("qat-w4a8", "qat", qat, time.perf_counter() - t0, f"{QAT_STEPS} QAT steps, {seen}"),
    ]


def _qat_sentence(top1: dict[str, float], reference: float) -> str:
    lost = reference - top1["ptq-w4a8"]
    gained = top1["qat-w4a8"] - top1["ptq-w4a8"]
    share = f", {100 * gained / lost:.0f}% of what PTQ lost" if lost > 0.001 else ""
    return (
        f"PTQ vs QAT at 4-bit weights (W4A8): PTQ {100 * top1['ptq-w4a8']:.2f}%, QAT "
        f"{100 * top1['qat-w4a8']:.2f}% after {QAT_STEPS} steps ({100 * gained:+.2f} points{share}); "
        "`edgequant compare` runs the full schedules at W8A8 and W4A8."
    )


@dataclass
class DemoResult:
    rows: list[Row]
    reference_top1: float
    report: dict[str, Path]
    targets: Section
    detection: DetectionDemo | None = None


def run_demo(
    out_dir: Path, *, progress: ProgressFn = silent, bench_rounds: int = 3, detection: bool = True
) -> DemoResult:
    """Run the whole demo into `out_dir` (created if its parent exists); `detection`: with the
    detection task as a section of the report (`workflows.detection_demo`)."""
    import torch

    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo import fashion_mnist
    from edgequant.zoo.train import demo_model

    out_dir = Path(out_dir)
    check_report_dir(out_dir)
    models_dir = out_dir / "models"
    resolve_output_dir(out_dir)
    resolve_output_dir(models_dir)
    train, test = fashion_mnist.load("train"), fashion_mnist.load("test")
    module = demo_model(progress=lambda done, total: progress("training FP32 model", done, total))
    fp32 = to_onnx(module, torch.zeros(1, 1, 28, 28), "edgecnn.fp32")
    fp32.provenance = Provenance(
        method="fp32", description="EdgeCNN (zoo.models) trained on Fashion-MNIST"
    )
    fp32.save(models_dir / "edgecnn.fp32.onnx")

    pick = np.random.default_rng(SEED).permutation(len(train))[:CALIBRATION_SAMPLES]
    calibration = ArrayDataset(train.images[pick], None, batch_size=100)
    test_data = ArrayDataset(test.images, test.labels, batch_size=500)

    built: list[Built] = []
    for i, v in enumerate(variants()):
        progress(f"quantizing {v.name}", i, len(variants()))
        t0 = time.perf_counter()
        # each method as configured (no fidelity guard): the table measures them on the test set
        q = quantize(fp32, v.config, calibration=calibration, guard=None)
        q.name = f"edgecnn.{v.name}"
        built.append(Built(v.name, v.config.method.value, q, time.perf_counter() - t0, v.note))
    built += _ptq_vs_qat(module, calibration, train, progress)
    for b in built:
        b.model.save(models_dir / f"{b.model.name}.onnx")

    progress("evaluating", 0, len(built) + 1)
    scorer = Scorer(fp32, test_data)  # FP32 outputs once, every variant scored against them
    results = []
    for i, b in enumerate(built):
        results.append((b, scorer.score(b.model)))
        progress("evaluating", i + 2, len(built) + 1)
    targets = target_section(
        quantize_for_targets(
            fp32, calibration, test_data, models_dir, torch_model=module, progress=progress,
            rounds=bench_rounds,
        )
    )  # fmt: skip
    bench = benchmark(
        [fp32, *(b.model for b in built)],
        batch_sizes=(1, 32),
        threads=(1, 2),
        rounds=bench_rounds,
        progress=progress,
    )
    found = (
        run_detection(out_dir, progress=progress, bench_rounds=bench_rounds) if detection else None
    )
    base = bench[0]
    reference_top1 = scorer.reference_top1
    assert reference_top1 is not None

    rows = [
        Row("fp32", "fp32", reference_top1, None, None, fp32.size_bytes, 1.0, quantize_s=None,
            note="reference", **timing(base, base)),
    ]  # fmt: skip
    for (made, ev), b in zip(results, bench[1:], strict=True):
        q = made.model
        rows.append(
            Row(made.name, made.method, ev.top1, ev.agreement, ev.sqnr_db, q.size_bytes,
                q.size_bytes / fp32.size_bytes, quantize_s=made.seconds, note=made.note,
                **timing(b, base))
        )  # fmt: skip
    notes = [
        f"Fashion-MNIST test set ({len(test)} images); calibration: {CALIBRATION_SAMPLES} training images.",
        "Latency × is p50 latency / FP32 p50 in the same run (b = batch, t = threads); below 1 is faster.",
        "Peak session memory (MiB): "
        + ", ".join(f"{b.name.split('.', 1)[1]} {b.peak_memory_mb:.1f}" for b in bench),
        "Models are in models/, each with a .quant.json saying how it was made.",
        _weakest_layers(built[0].model, fp32, test_data),
        _qat_sentence({r.name: r.top1 for r in rows}, reference_top1),
    ]
    report = write_report(
        out_dir,
        "edgequant demo: EdgeCNN on Fashion-MNIST",
        rows,
        reference_top1,
        notes,
        {"benchmark": [b.to_dict() for b in bench]},
        sections=[targets, *([found.section] if found is not None else [])],
    )
    return DemoResult(rows, reference_top1, report, targets, found)


def _weakest_layers(quantized: Model, fp32: Model, data: ArrayDataset) -> str:
    """One sentence naming the nodes that add the most quantization error (per-layer SQNR)."""
    from edgequant.graph.preprocess import optimize
    from edgequant.runtime.evaluate import layer_sqnr

    rows = sorted(
        layer_sqnr(quantized, optimize(fp32), data, max_batches=2), key=lambda r: r.own_sqnr_db
    )
    named = ", ".join(f"{r.node} ({r.own_sqnr_db:.1f} dB)" for r in rows[:3])
    return f"Default INT8: the nodes adding the most error (lowest own SQNR) are {named}."
