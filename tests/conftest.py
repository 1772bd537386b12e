"""Shared fixtures: the real demo task (Fashion-MNIST + the trained EdgeCNN), built once per run.

The model is trained on first use (about 2.5 minutes on 2 cores) and cached in $EDGEQUANT_CACHE
(default ~/.cache/edgequant), the same cache `edgequant demo` uses.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgequant as eq


@pytest.fixture(scope="session")
def fmnist():
    from edgequant.zoo import fashion_mnist

    return fashion_mnist.load("train"), fashion_mnist.load("test")


@pytest.fixture(scope="session")
def fp32_model():
    import torch

    from edgequant.torch_onnx import to_onnx
    from edgequant.zoo.train import demo_model

    return to_onnx(demo_model(), torch.zeros(1, 1, 28, 28), "edgecnn")


@pytest.fixture(scope="session")
def calibration(fmnist):
    train, _ = fmnist
    pick = np.random.default_rng(0).permutation(len(train))[:500]
    return eq.ArrayDataset(train.images[pick], None, batch_size=100)


@pytest.fixture(scope="session")
def test_data(fmnist):
    _, test = fmnist
    return eq.ArrayDataset(test.images, test.labels, batch_size=1000)


@pytest.fixture(scope="session")
def int8_model(fp32_model, calibration):
    return eq.quantize(fp32_model, eq.PTQConfig.int8(), calibration=calibration)


@pytest.fixture(scope="session")
def fp32_eval(fp32_model, test_data):
    return eq.evaluate(fp32_model, test_data)


@pytest.fixture(scope="session")
def model_path(fp32_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "edgecnn.onnx"
    fp32_model.save(path)
    return path


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """`edgequant.cli.main` installs its SIGINT/SIGTERM handlers for the process it runs in; a
    test that calls it in-process gets pytest's own back afterwards."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
