"""`edgequant demo` end to end on the real task (uses the cached FP32 model when present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgequant as eq
from edgequant.workflows.demo import run_demo, variants

pytestmark = pytest.mark.slow  # minutes in all: not in the fast lane


def test_demo_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_demo(out, bench_rounds=1)
    names = [r.name for r in result.rows]
    assert names == ["fp32", *(v.name for v in variants()), "ptq-w4a8", "qat-w4a8"]
    default = result.rows[1]
    assert result.reference_top1 - default.top1 <= 0.003  # the bar for the default
    assert default.latency_ratio["b32/t1"] < 1.0
    for name in ("report.md", "report.html", "report.json", "tradeoff.png"):
        assert (out / name).stat().st_size > 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["rows"]) == len(names) and report["benchmark"]
    md = (out / "report.md").read_text()
    assert "| int8 |" in md and "nodes adding the most error" in md
    top1 = {r.name: r.top1 for r in result.rows}
    assert top1["qat-w4a8"] > top1["ptq-w4a8"]  # the short QAT recovers some of PTQ's 4-bit loss
    assert "PTQ vs QAT at 4-bit weights" in md
    targets = [t.value for t in eq.Target]
    assert (out / "report.html").read_text().count("<tr>") == len(names) + 1 + len(targets) + 1
    assert "## Deployment targets" in md
    section = {row["target"]: row for row in report["sections"]["Deployment targets"]}
    assert list(section) == targets
    for name, row in section.items():  # every preset's model runs integer on its own runtime
        assert row["support"]["fully_integer"], name
        assert row["top1"] >= result.reference_top1 - 0.01, name
    assert section["tflite"]["top1"] >= section["tflite"]["fp32_top1"] - 0.005
    assert (out / "models" / "edgecnn.int8.tflite").is_file()
    onnx_sidecar = json.loads((out / "models" / "edgecnn.int8.quant.json").read_text())
    assert onnx_sidecar["config"]["method"] == "static"  # not overwritten by the .tflite's
    assert (out / "models" / "edgecnn.npu.onnx").is_file()
    for v in variants():
        model = out / "models" / f"edgecnn.{v.name}.onnx"
        assert model.is_file() and model.with_name(f"edgecnn.{v.name}.quant.json").is_file()
