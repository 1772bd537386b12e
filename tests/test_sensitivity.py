"""Sensitivity analysis on the real demo model: the culprit it names is the one an exhaustive,
independently calibrated one-layer-at-a-time check finds, and its report is complete."""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgequant as eq
from edgequant.errors import ConfigError
from tests.test_cli import edgequant

pytestmark = pytest.mark.slow  # minutes in all: not in the fast lane


@pytest.fixture(scope="module")
def small(fmnist):
    train, test = fmnist
    calib = eq.ArrayDataset(train.images[:200], None, 100)
    data = eq.ArrayDataset(test.images[:500], test.labels[:500], 250)
    return calib, data


@pytest.fixture(scope="module")
def report(fp32_model, small):
    calib, data = small
    return eq.analyze(fp32_model, eq.PTQConfig.w4a8(), calibration=calib, data=data)


def test_culprit_matches_an_exhaustive_one_layer_check(report, fp32_model, small) -> None:
    """Each layer quantized alone through the public API, calibrated afresh every time: the
    same models, so the same SQNRs (to rounding) and the same culprit."""
    calib, data = small
    names = [layer.node for layer in sorted(report.layers, key=lambda r: r.position)]
    exhaustive = {}
    for name in names:
        others = tuple(n for n in names if n != name)
        config = eq.PTQConfig.w4a8(exclude_nodes=others)  # this layer alone, no guard
        q = eq.quantize(fp32_model, config, calibration=calib, guard=None)
        exhaustive[name] = eq.evaluate(q, data, reference=fp32_model).output_sqnr_db
    worst = min(exhaustive, key=exhaustive.__getitem__)
    assert report.layers[0].node == worst
    for layer in report.layers:
        assert layer.alone_sqnr_db == pytest.approx(exhaustive[layer.node], abs=1e-6)


def test_report_ranks_every_weighted_layer(report) -> None:
    # 28 Conv + the classifier Gemm of the demo EdgeCNN (its first conv, over the 1-channel
    # image, stays float by default and is not ranked)
    assert len(report.layers) == 29
    sqnr = [r.alone_sqnr_db for r in report.layers]
    assert sqnr == sorted(sqnr)
    assert report.quantized_sqnr_db < min(sqnr)  # all layers together add more noise than one
    # (no claim that leaving the culprit in float raises the output SQNR: at W4A8 on this model
    # it does not, 15.0 vs 15.5 dB, errors of layers partly cancel; `without_*` reports it)
    assert report.samples == 500 and 0.85 < report.reference_top1 < 0.95
    assert report.layers[0].node in report.sentence()
    # ORT's CPU has no int4 convolution: at W4A8 the check names the Convs it runs in float
    assert report.support is not None and report.support.integer_fraction < 0.5


def test_report_files(report, tmp_path) -> None:
    from edgequant.report.sensitivity import write_sensitivity_report

    files = write_sensitivity_report(report, tmp_path)
    md = files["markdown"].read_text()
    assert report.sentence() in md and md.count("\n| ") >= 30
    assert "Operator support of the fully quantized model" in md
    data = json.loads(files["json"].read_text())
    assert data["culprit"] == report.layers[0].node and len(data["layers"]) == 29
    assert files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_needs_a_static_config(fp32_model, small) -> None:
    calib, data = small
    with pytest.raises(ConfigError, match="static"):
        eq.analyze(fp32_model, eq.PTQConfig.dynamic(), calibration=calib, data=data)


def test_cli_analyze(model_path, tmp_path, fmnist) -> None:
    train, test = fmnist
    np.savez(tmp_path / "calib.npz", input=train.images[:100])
    np.savez(tmp_path / "test.npz", input=test.images[:300], labels=test.labels[:300])
    proc = edgequant(
        "analyze", str(model_path), "--calib", str(tmp_path / "calib.npz"),
        "--data", str(tmp_path / "test.npz"), "-o", str(tmp_path / "out"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["culprit"] == out["layers"][0]["node"] and out["samples"] == 300
    assert (tmp_path / "out" / "sensitivity.png").is_file()
    bad = edgequant("analyze", str(tmp_path / "missing.onnx"), "--calib", "x", "--data", "y")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
