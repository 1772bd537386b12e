"""Reports worth sharing: a recommendation at the top, the machine and date, latency in ms with
its run-to-run range, plots on a log latency axis and per batch size; the HTML page looked at
in a real headless browser (Chromium), its screenshot checked for content.

Built from real measurements: ccexam's pretrained MNIST net, FP32 / INT8 / FP16, on real digits.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgequant as eq
from edgequant.report import Row, write_report
from edgequant.report.table import recommend, timing

BROWSERS = ("chromium-headless-shell", "chromium", "google-chrome")


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[Path, list[Row], float]:
    from tests.test_second_model import load_mnistnet

    fp32, x, y = load_mnistnet()
    calibration = eq.ArrayDataset(x[:256], None, 64)
    test = eq.ArrayDataset(x[256:2256], y[256:2256], 500)
    made = [
        ("int8", "static", eq.quantize(fp32, eq.PTQConfig.int8(), calibration=calibration, guard=None)),
        ("fp16", "fp16", eq.quantize(fp32, eq.PTQConfig.fp16())),
    ]  # fmt: skip
    bench = eq.benchmark([fp32, *(m for _, _, m in made)], batch_sizes=(1, 32), threads=(1,),
                         rounds=3, memory=False)  # fmt: skip
    reference = eq.evaluate(fp32, test).top1
    assert reference is not None
    rows = [
        Row(
            "fp32",
            "fp32",
            reference,
            None,
            None,
            fp32.size_bytes,
            1.0,
            **timing(bench[0], bench[0]),
        )
    ]
    for (name, method, model), b in zip(made, bench[1:], strict=True):
        res = eq.evaluate(model, test, reference=fp32)
        rows.append(
            Row(name, method, res.top1, res.agreement, res.output_sqnr_db, model.size_bytes,
                model.size_bytes / fp32.size_bytes, **timing(b, bench[0]))
        )  # fmt: skip
    folder = tmp_path_factory.mktemp("report")
    return folder, rows, reference


def test_the_report_recommends_and_says_where_it_was_measured(measured) -> None:
    folder, rows, reference = measured
    files = write_report(folder, "MNIST net: FP32, INT8, FP16", rows, reference, ["2,000 digits."])
    md = files["markdown"].read_text()
    first = md.splitlines()[2]
    assert first.startswith("**Recommendation: int8: ") and "of FP32's size" in first
    assert "Measured on " in md and "onnxruntime" in md and " UTC." in md
    assert "## Latency (ms, ONNX Runtime CPU)" in md and " ms [" in md  # p50 with its range
    data = json.loads(files["json"].read_text())
    assert data["recommendation"].startswith("Recommendation: int8")
    assert files["latency_plot"].is_file()
    # the noise flag: a row against itself is within its own range; FP32 itself is never flagged
    int8 = rows[1]
    assert int8.within_noise(dataclasses.replace(int8, name="copy"), "b1/t1")
    assert not rows[0].within_noise(rows[0], "b1/t1")


def test_recommendation_keeps_fp32_when_nothing_qualifies(measured) -> None:
    _folder, rows, reference = measured
    slow = [Row(r.name, r.method, r.top1, r.agreement, r.sqnr_db, r.size_bytes, r.size_ratio,
                {k: 3.0 for k in r.latency_ratio}) if r.method != "fp32" else r for r in rows]  # fmt: skip
    assert recommend(slow, reference).startswith("Recommendation: keep FP32 here")


def test_the_html_report_renders_in_a_headless_browser(measured, tmp_path) -> None:
    from PIL import Image

    folder, rows, reference = measured
    files = write_report(folder, "MNIST net: FP32, INT8, FP16", rows, reference, ["2,000 digits."])
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    assert browser is not None, "no headless Chromium: ./run installs chromium-headless-shell"
    shot = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
         "--window-size=1280,1800", files["html"].resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.shape == (1800, 1280)
    ink = pixels < 200  # anything not near-white: text, table borders, plots
    assert ink.mean() > 0.01, "the page rendered (nearly) blank"  # a blank page: 0
    rows_with_ink = ink.any(axis=1)
    assert rows_with_ink[:300].mean() > 0.2  # the title, recommendation and table at the top
    assert rows_with_ink[600:1500].mean() > 0.3  # the plots further down
