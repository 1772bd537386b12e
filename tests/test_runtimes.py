"""More than one runtime: any installed ONNX Runtime execution provider, and OpenVINO as a
second real runtime for this x86 CPU, through `eval` and `bench` as a user runs them, on the
pretrained MNIST net and real digits; the runtime is named in every output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgequant as eq
from edgequant.errors import ConfigError
from edgequant.runtime.runtimes import Engine, Runtime
from tests.test_cli import assert_user_error, edgequant


@pytest.fixture(scope="module")
def mnist_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    from tests.test_second_model import load_mnistnet

    fp32, x, y = load_mnistnet()
    folder = tmp_path_factory.mktemp("runtimes")
    fp32.save(folder / "fp32.onnx")
    q = eq.quantize(fp32, calibration=eq.ArrayDataset(x[:256], None, 64), guard=None)
    q.save(folder / "int8.onnx")
    np.savez(folder / "test.npz", input=x[256:1256], labels=y[256:1256])
    return folder / "fp32.onnx", folder / "int8.onnx", folder / "test.npz"


def test_runtimes_are_parsed_and_checked_against_what_is_installed() -> None:
    assert Runtime.parse("ort") == Runtime() and Runtime.parse("ort").label == "ONNX Runtime CPU"
    assert Runtime.parse("openvino") == Runtime(Engine.OPENVINO, "CPU")
    assert Runtime.parse("openvino").label == "OpenVINO CPU"
    with pytest.raises(ConfigError, match="no CUDAExecutionProvider here"):
        Runtime.parse("ort:cuda")  # no GPU build here: said, not silently run on the CPU
    with pytest.raises(ConfigError, match="give ort"):
        Runtime.parse("tvm")


def test_openvino_runs_the_qdq_model_as_onnx_runtime_does(mnist_files) -> None:
    """Differential: the INT8 model in OpenVINO against the same file in ONNX Runtime (their
    integer kernels round differently: decisions agree, scores stay close)."""
    fp32, int8, test = mnist_files
    proc = edgequant("eval", str(int8), "--data", str(test), "--reference", str(fp32),
                     "--runtime", "openvino", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runtime"] == "OpenVINO CPU"
    assert result["top1"] >= 0.98 and result["agreement"] >= 0.99 and result["output_sqnr_db"] > 25
    from edgequant.runtime.session import make_session

    x = np.load(test)["input"][:200]
    ort_scores = make_session(eq.load(int8)).run(None, {"input": x})[0]
    ov_scores = make_session(eq.load(int8), runtime=Runtime.parse("openvino")).run(
        None, {"input": x}
    )[0]
    assert (ort_scores.argmax(1) == ov_scores.argmax(1)).mean() >= 0.99
    noise = np.mean((ort_scores - ov_scores) ** 2) / np.mean(ort_scores**2)
    assert 10 * np.log10(1 / noise) > 25


def test_bench_names_its_runtime(mnist_files) -> None:
    fp32, int8, _test = mnist_files
    proc = edgequant("bench", str(fp32), str(int8), "--runtime", "openvino", "--batch", "1",
                     "--threads", "1", "--rounds", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "OpenVINO CPU, p50 latency" in proc.stdout
    assert_user_error(
        edgequant("bench", str(fp32), "--runtime", "ort:cuda"), "CUDAExecutionProvider"
    )
