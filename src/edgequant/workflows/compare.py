"""PTQ against QAT on one model, at W8A8 and W4A8, measured in ONNX Runtime; report with plots.

PTQ is the fake-quant model right after its calibration warm start (no training), exported
through the same path as QAT, so the two differ only by the training. Accuracy comes from the
exported models on the test data; latency ratios are to FP32 in one interleaved run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.errors import ConfigError
from edgequant.metrics.base import Metric, MetricValue, Outputs, load_metric
from edgequant.model import Model
from edgequant.outputs import check_report_dir, resolve_output_dir
from edgequant.progress import ProgressFn, silent
from edgequant.qat import QATConfig, export, finetune, prepare_qat
from edgequant.qat.state import qat_state
from edgequant.report import Row, write_report
from edgequant.report.table import timing
from edgequant.runtime.benchmark import benchmark
from edgequant.runtime.evaluate import evaluate
from edgequant.task import TrainingTask
from edgequant.torch_onnx import to_onnx


@dataclass(frozen=True)
class Recipe:
    """How long and how fast QAT trains at one precision."""

    label: str
    config: QATConfig
    steps: int
    lr: float


PRESETS = {"W8A8": QATConfig.int8, "W4A8": QATConfig.w4a8, "W4A4": QATConfig.w4a4}
# (steps, learning rate) at batch 128, measured on the demo task by benchmarks/bench_qat.py
DEFAULT_SCHEDULE = {8: (400, 5e-4), 4: (800, 2e-3)}


def default_recipe(label: str, steps: int | None = None, lr: float | None = None) -> Recipe:
    """The preset `label` (W8A8, W4A8, W4A4) with the measured default schedule for its
    weight bits, or the given steps / learning rate."""
    key = label.upper()
    if key not in PRESETS:
        raise ConfigError(f"unknown QAT precision {label!r}: choose one of {', '.join(PRESETS)}")
    config = PRESETS[key]()
    default_steps, default_lr = DEFAULT_SCHEDULE[config.weights.qtype.bits]
    return Recipe(key, config, steps or default_steps, lr or default_lr)


def default_recipes(steps8: int = 400, steps4: int = 800) -> list[Recipe]:
    """The measured defaults of benchmarks/bench_qat.py."""
    return [default_recipe("W8A8", steps8), default_recipe("W4A8", steps4)]


@dataclass
class Comparison:
    """The rows of a comparison; `reference_top1` (a classifier) or `reference_metric` (the
    task metric's value on FP32) is what the rows are measured against."""

    rows: list[Row]
    reference_top1: float | None
    report: dict[str, Path]
    reference_metric: MetricValue | None = None


def compare(
    task: TrainingTask,
    *,
    recipes: list[Recipe] | None = None,
    out_dir: Path | None = None,
    metric: Metric | Callable[[Outputs, Any], float] | str | None = None,
    progress: ProgressFn = silent,
) -> Comparison:
    """PTQ and QAT of `task.model` for each recipe, measured on `task.test` (required): by
    top-1 on class-id labels, or by the task `metric` (`edgequant.metrics`: mAP, CER, a
    user's function) on whatever targets the test data carries."""
    if task.test is None:
        raise ConfigError("compare needs labelled test data: give the task a `test` iterable")
    if out_dir is not None:
        check_report_dir(out_dir)
    if isinstance(metric, str):
        metric = load_metric(metric)  # a typo is said before any training
    fp32 = to_onnx(task.model, task.example_input, "fp32")
    measured = evaluate(fp32, task.test, metric=metric)
    reference, reference_metric = measured.top1, measured.metric
    if reference is None and reference_metric is None:
        raise ConfigError(
            "compare measures top-1 on class-id labels: the test data has none, so give a task "
            "metric (--metric map, cer, module:function, ...) that reads its targets"
        )
    batch = getattr(task.train, "batch_size", None)
    built: list[tuple[str, str, Model, float, str]] = []
    for recipe in recipes or default_recipes():
        t0 = time.perf_counter()
        model = prepare_qat(task.model, recipe.config, calibration=task.calibration)
        calibrated = f"{qat_state(model).calibration_samples} unlabelled"
        ptq = export(model, task.example_input, f"ptq-{recipe.label}")
        built.append((f"PTQ {recipe.label}", "ptq", ptq, time.perf_counter() - t0, calibrated))
        finetune(
            model,
            task.train,
            epochs=recipe.steps,  # an upper bound: training stops after `steps`
            lr=recipe.lr,
            max_steps=recipe.steps,
            loss=task.loss,
            progress=lambda _s, d, t, r=recipe: progress(f"QAT {r.label}", d, t),
        )
        qat = export(model, task.example_input, f"qat-{recipe.label}")
        seen = f"{recipe.steps * batch:,} labelled" if batch else f"{recipe.steps} labelled batches"
        built.append(
            (f"QAT {recipe.label}", "qat", qat, time.perf_counter() - t0, f"{calibrated} + {seen}")
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
            quantize_s=None,
            note="reference",
            metric=None if reference_metric is None else reference_metric.value,
            **timing(base, base),
        )
    ]
    for (name, method, model, seconds, data), b in zip(built, bench[1:], strict=True):
        res = evaluate(model, task.test, reference=fp32, metric=metric)
        rows.append(
            Row(
                name,
                method,
                res.top1,
                res.agreement,
                res.output_sqnr_db,
                model.size_bytes,
                model.size_bytes / fp32.size_bytes,
                quantize_s=seconds,
                note=f"data: {data}",
                metric=None if res.metric is None else res.metric.value,
                **timing(b, base),
            )
        )
    report: dict[str, Path] = {}
    if out_dir is not None:
        resolve_output_dir(out_dir)
        notes = [f"{r.name}: {r.note}, {r.quantize_s:.0f} s to quantize" for r in rows[1:]]
        from edgequant.report.targets import support_section

        support = support_section([(name, model) for name, _, model, _, _ in built])
        report = write_report(
            out_dir, "edgequant compare: PTQ vs QAT", rows, reference, notes, sections=[support],
            metric=reference_metric,
        )  # fmt: skip
    return Comparison(rows, reference, report, reference_metric)
