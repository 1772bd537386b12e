"""TFLite / LiteRT export of the real demo model, run in the LiteRT interpreter on Fashion-MNIST.

Oracles: accuracy on the 10,000 test images against the FP32 .tflite (full integer within half a
point), tensor types of the converted graph (int8 inputs/outputs, narrow-range symmetric
weights), agreement with the FP32 torch model, byte-for-byte determinism, and clear errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import edgequant as eq
from tests.test_cli import assert_user_error, edgequant

pytestmark = pytest.mark.slow  # minutes in all: not in the fast lane


@pytest.fixture(scope="module")
def torch_model():
    from edgequant.zoo.train import demo_model

    return demo_model()


@pytest.fixture(scope="module")
def example():
    """What the built-in task (`edgequant.zoo.tasks:fashion_mnist`) gives as example input;
    its calibration set is the `calibration` fixture (500 random training images, seed 0)."""
    return np.zeros((1, 1, 28, 28), np.float32)


@pytest.fixture(scope="module")
def fp32_tflite(torch_model, example):
    return eq.to_tflite(torch_model, example, mode=eq.TFLiteMode.FP32)


@pytest.fixture(scope="module")
def int8_tflite(torch_model, example, calibration):
    return eq.to_tflite(torch_model, example, calibration=calibration, max_samples=200)


@pytest.fixture(scope="module")
def fp32_top1(fp32_tflite, test_data):
    return eq.evaluate_tflite(fp32_tflite, test_data)


def test_full_integer_tflite_is_within_half_a_point_of_fp32(
    int8_tflite, fp32_tflite, fp32_top1, test_data
) -> None:
    top1 = eq.evaluate_tflite(int8_tflite, test_data)
    assert top1 >= fp32_top1 - 0.005, (top1, fp32_top1)
    assert int8_tflite.size_bytes < 0.32 * fp32_tflite.size_bytes


def test_full_integer_tflite_is_integer_end_to_end(int8_tflite) -> None:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=int8_tflite.content)
    assert it.get_input_details()[0]["dtype"] == np.int8
    assert it.get_output_details()[0]["dtype"] == np.int8
    report = eq.check_tflite(int8_tflite)
    assert report.fully_integer and report.integer_fraction == 1.0, report.summary()
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD"} <= {
        n.op_type for n in report.nodes
    }
    weights = [
        t
        for t in it.get_tensor_details()
        if t["dtype"] == np.int8 and len(t["quantization_parameters"]["scales"]) > 1
    ]
    assert weights  # per-channel int8 weights
    for t in weights:  # TFLite's spec: symmetric, zero-point 0, [-127, 127]
        assert not t["quantization_parameters"]["zero_points"].any()
        assert int(it.get_tensor(t["index"]).min()) >= -127


def test_tflite_agrees_with_the_torch_model(int8_tflite, torch_model, fmnist) -> None:
    """Differential: LiteRT's integer kernels against the FP32 torch model on real images."""
    import torch

    _, test = fmnist
    x = test.images[:500]
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy().argmax(1)
    got = eq.predict_tflite(int8_tflite, x).argmax(1)
    assert (got == ref).mean() >= 0.97


def test_dynamic_range_and_fp16_tflite(fp32_tflite, fp32_top1, test_data) -> None:
    dyn = eq.quantize_tflite(fp32_tflite, eq.TFLiteMode.DYNAMIC_RANGE)
    half = eq.quantize_tflite(fp32_tflite, eq.TFLiteMode.FP16)
    assert dyn.size_bytes < 0.32 * fp32_tflite.size_bytes
    assert 0.45 < half.size_bytes / fp32_tflite.size_bytes < 0.55
    for model in (dyn, half):
        assert eq.evaluate_tflite(model, test_data) >= fp32_top1 - 0.005
    reasons = {n.reason for n in eq.check_tflite(dyn).float_nodes}
    assert any("dynamic range" in r for r in reasons)
    assert not eq.check_tflite(half).fully_integer


def test_litert_latency_is_measured(int8_tflite, fp32_tflite, fmnist) -> None:
    sample = fmnist[1].images[0]
    ms = [eq.benchmark_tflite(m, sample, rounds=3, iters=50) for m in (fp32_tflite, int8_tflite)]
    assert all(v > 0 for v in ms)


def test_bad_input_gives_clear_errors(torch_model, example, tmp_path) -> None:
    with pytest.raises(eq.EdgeQuantError, match="calibration data"):
        eq.to_tflite(torch_model, example)
    with pytest.raises(eq.EdgeQuantError, match="empty"):
        eq.to_tflite(torch_model, example, calibration=[])
    bad = np.full((4, 1, 28, 28), np.nan, np.float32)
    with pytest.raises(eq.EdgeQuantError, match="NaN"):
        eq.to_tflite(torch_model, example, calibration=[bad])
    with pytest.raises(eq.EdgeQuantError, match="shape"):
        eq.to_tflite(torch_model, example, calibration=[np.zeros((4, 3, 28, 28), np.float32)])
    with pytest.raises(eq.EdgeQuantError, match="one sample"):
        eq.to_tflite(torch_model, np.zeros((2, 1, 28, 28), np.float32))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(eq.EdgeQuantError, match="not a TFLite model"):
        eq.load_tflite(junk)


def test_quantize_target_tflite_cli_is_deterministic(tmp_path, model_path, int8_tflite) -> None:
    """The CLI, in another process, converts the same model with the same 200 calibration
    images: the bytes must equal the API's conversion here."""
    out = tmp_path / "demo.tflite"
    proc = edgequant(
        "quantize", "--task", "edgequant.zoo.tasks:fashion_mnist", "--target", "tflite",
        "--strict", "--samples", "200", "-o", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["support"]["integer_fraction"] == 1.0
    model = eq.load_tflite(out)
    assert model.mode is eq.TFLiteMode.FULL_INTEGER
    assert model.content == int8_tflite.content
    sidecar = json.loads(out.with_name("demo.tflite.quant.json").read_text())
    assert sidecar["calibration_samples"] == 200
    proc = edgequant("check", str(out), "--strict")
    assert proc.returncode == 0, proc.stderr
    proc = edgequant("eval", str(out), "--data", "fashion-mnist", "--limit", "1000", "--json")
    assert proc.returncode == 0, proc.stderr
    ev = json.loads(proc.stdout)
    assert ev["samples"] == 1000 and ev["runtime"] == "litert" and ev["top1"] > 0.85
    proc = edgequant("quantize", str(model_path), "--target", "tflite", "-o", str(out))
    assert_user_error(proc, "--task")
