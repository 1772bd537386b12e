"""`edgequant compare`: the PTQ-vs-QAT report on the real demo task (few QAT steps, for time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import edgequant as eq
from edgequant.task import TrainingTask
from edgequant.workflows.compare import Recipe, compare

pytestmark = pytest.mark.slow  # minutes in all: not in the fast lane


def demo_task(fmnist, calibration, train_samples: int) -> TrainingTask:
    """The demo CNN with `train_samples` training images and 2,000 test images."""
    from edgequant.zoo.train import demo_model

    train, test = fmnist
    return TrainingTask(
        demo_model(),
        train=eq.ArrayDataset(train.images[:train_samples], train.labels[:train_samples], 64),
        test=eq.ArrayDataset(test.images[:2000], test.labels[:2000], 1000),
        calibration=calibration,
        example_input=torch.zeros(1, 1, 28, 28),
    )


def test_compare_reports_ptq_and_qat_side_by_side(fmnist, calibration, tmp_path: Path) -> None:
    recipes = [
        Recipe("W8A8", eq.QATConfig.int8(), 3, 1e-4),
        Recipe("W4A8", eq.QATConfig.w4a8(), 3, 1e-3),
    ]
    task = demo_task(fmnist, calibration, 1024)
    result = compare(task, recipes=recipes, out_dir=tmp_path / "cmp")
    names = [r.name for r in result.rows]
    assert names == ["fp32", "PTQ W8A8", "QAT W8A8", "PTQ W4A8", "QAT W4A8"]
    by = {r.name: r for r in result.rows}
    assert by["PTQ W4A8"].size_bytes < 0.8 * by["PTQ W8A8"].size_bytes  # INT4 storage
    assert abs(by["PTQ W8A8"].top1 - result.reference_top1) <= 0.005
    assert by["QAT W8A8"].quantize_s > by["PTQ W8A8"].quantize_s
    assert "192" in by["QAT W8A8"].note  # 3 steps x 64 samples
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert [r["name"] for r in report["rows"]] == names
    assert (tmp_path / "cmp" / "tradeoff.png").stat().st_size > 0
    # operator support, from ONNX Runtime's fused graph: INT8 fuses end to end; its CPU has no
    # int4 convolution, so W4A8 Convs run as DQ -> float Conv
    title = f"Operator support on {eq.Target.detect().value}"
    support = {row["model"]: row for row in report["sections"][title]}
    # (the first conv reads the 1-channel image: float by choice, as in PTQ)
    assert support["PTQ W8A8"]["integer_fraction"] > 0.99
    [stem] = support["PTQ W8A8"]["float_nodes"]  # the QAT export names it /features.0.0/Conv
    assert stem.endswith("features.0.0/Conv")
    assert support["PTQ W4A8"]["integer_fraction"] < 0.5
    assert title in (tmp_path / "cmp" / "report.md").read_text()


def error_rate(outputs, targets) -> float:
    """A user's lower-is-better metric: the share of images classified wrongly, in %."""
    logits = next(iter(outputs.values()))
    return 100.0 * float((logits.argmax(1) != targets).mean())


error_rate.higher_is_better = False  # type: ignore[attr-defined]
error_rate.units = "%"  # type: ignore[attr-defined]


def test_compare_measures_by_a_task_metric(fmnist, calibration, tmp_path: Path) -> None:
    """`compare(metric=...)`: every row in the metric's units, its drop in the metric's
    direction (a lower-is-better error rate: the drop is the rise), the report's table headed
    by it; the error rate is 100 - top-1, which ONNX Runtime measured the same way."""
    task = demo_task(fmnist, calibration, 256)
    recipes = [Recipe("W4A8", eq.QATConfig.w4a8(), 2, 1e-3)]
    result = compare(task, recipes=recipes, out_dir=tmp_path / "cmp", metric=error_rate)
    ref = result.reference_metric
    assert ref is not None and ref.name == "error_rate" and not ref.higher_is_better
    assert result.reference_top1 is None and all(r.top1 is None for r in result.rows)
    from edgequant.torch_onnx import to_onnx

    fp32_top1 = eq.evaluate(to_onnx(task.model, task.example_input, "fp32"), task.test).top1
    assert ref.value == pytest.approx(100 * (1 - fp32_top1))
    ptq = result.rows[1]
    assert ptq.metric is not None and ptq.metric_drop(ref) == pytest.approx(ptq.metric - ref.value)
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "| variant | error_rate (%) | drop |" in md
    report = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert report["reference_metric"]["value"] == ref.value
    assert [r["metric"] for r in report["rows"]] == [r.metric for r in result.rows]
