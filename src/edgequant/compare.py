"""PTQ against QAT on one model, at W8A8 and W4A8, measured in ONNX Runtime; report with plots.

PTQ is the fake-quant model right after its calibration warm start (no training), exported
through the same path as QAT, so the two differ only by the training. Accuracy comes from the
exported models on the test data; latency ratios are to FP32 in one interleaved run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.data import ArrayDataset
from edgequant.model import Model, check_writable_dir
from edgequant.progress import ProgressFn, silent
from edgequant.qat import QATConfig, export, finetune, prepare_qat
from edgequant.report import Row, write_report
from edgequant.runtime.benchmark import benchmark
from edgequant.runtime.evaluate import evaluate
from edgequant.torch_onnx import to_onnx


@dataclass(frozen=True)
class Recipe:
    """How long and how fast QAT trains at one precision."""

    label: str
    config: QATConfig
    steps: int
    lr: float


def default_recipes(steps8: int = 400, steps4: int = 800) -> list[Recipe]:
    """The measured defaults of benchmarks/bench_qat.py."""
    return [
        Recipe("W8A8", QATConfig.int8(), steps8, 5e-4),
        Recipe("W4A8", QATConfig.w4a8(), steps4, 2e-3),
    ]


@dataclass
class Comparison:
    rows: list[Row]
    reference_top1: float
    report: dict[str, Path]


def compare(
    make_model: Any,
    example_input: Any,
    *,
    calibration: ArrayDataset,
    train: ArrayDataset,
    test: ArrayDataset,
    recipes: list[Recipe] | None = None,
    out_dir: Path | None = None,
    progress: ProgressFn = silent,
) -> Comparison:
    """`make_model()` returns a fresh trained FP32 nn.Module each call (QAT changes weights)."""
    if out_dir is not None:
        check_writable_dir(out_dir.parent if not out_dir.exists() else out_dir)
    fp32 = to_onnx(make_model(), example_input, "fp32")
    reference = evaluate(fp32, test).top1
    assert reference is not None
    built: list[tuple[str, str, Model, float, str]] = []
    for recipe in recipes or default_recipes():
        t0 = time.perf_counter()
        model = prepare_qat(make_model(), recipe.config, calibration=calibration)
        ptq = export(model, example_input, f"ptq-{recipe.label}")
        ptq_s = time.perf_counter() - t0
        built.append((f"PTQ {recipe.label}", "ptq", ptq, ptq_s, f"{len(calibration)} unlabelled"))
        finetune(
            model,
            train,
            lr=recipe.lr,
            max_steps=recipe.steps,
            progress=lambda _s, d, t, r=recipe: progress(f"QAT {r.label}", d, t),
        )
        qat = export(model, example_input, f"qat-{recipe.label}")
        seen = recipe.steps * train.batch_size
        built.append(
            (
                f"QAT {recipe.label}",
                "qat",
                qat,
                time.perf_counter() - t0,
                f"{len(calibration)} + {seen:,} labelled",
            )
        )
    bench = benchmark(
        [fp32, *(b[2] for b in built)],
        batch_sizes=(1, 32),
        threads=(2,),
        rounds=3,
        memory=False,
        progress=progress,
    )
    base = bench[0]
    rows = [
        Row(
            "fp32",
            "fp32",
            reference,
            None,
            None,
            fp32.size_bytes,
            1.0,
            {f"b{b}/t2": 1.0 for b in (1, 32)},
            {},
            None,
            "reference",
        )
    ]
    for (name, method, model, seconds, data), b in zip(built, bench[1:], strict=True):
        res = evaluate(model, test, reference=fp32)
        ratios = {f"b{x.batch}/t2": x.p50_ms / base.at(x.batch, 2).p50_ms for x in b.latency}
        rows.append(
            Row(
                name,
                method,
                res.top1,
                res.agreement,
                res.output_sqnr_db,
                model.size_bytes,
                model.size_bytes / fp32.size_bytes,
                ratios,
                {},
                seconds,
                f"data: {data}",
            )
        )
    report: dict[str, Path] = {}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        notes = [f"{r.name}: {r.note}, {r.quantize_s:.0f} s to quantize" for r in rows[1:]]
        report = write_report(out_dir, "edgequant compare: PTQ vs QAT", rows, reference, notes)
    return Comparison(rows, reference, report)
