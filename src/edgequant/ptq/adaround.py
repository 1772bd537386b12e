"""Run AdaRound (`algorithms.adaround`) on the Conv/Gemm nodes of an ONNX graph.

Each layer is reconstructed on its FP32 inputs, kept from the calibration pass (a bounded number
of samples), with the same scale round-to-nearest would use; the result is the layer's integer
codes, handed to the exporter in place of rounding to nearest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from edgequant.algorithms.adaround import AdaRoundConfig, adaround
from edgequant.exporter import TensorQuant
from edgequant.graph.index import GraphIndex, attribute
from edgequant.primitives import dequantize
from edgequant.spec import PerChannel, PerTensor, Symmetry

Layer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def layer_function(node: onnx.NodeProto) -> Layer | None:
    """The node as a torch function of (input, weight) without bias, or None if unsupported."""
    if node.op_type == "Conv":
        if attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            return None
        pads = list(attribute(node, "pads", []) or [])
        half = len(pads) // 2
        if len(pads) not in (0, 4) or pads[:half] != pads[half:]:
            return None  # 2-D convolutions with symmetric padding only
        kwargs: dict[str, Any] = {
            "stride": tuple(attribute(node, "strides", []) or ()) or 1,
            "padding": tuple(pads[:half]) or 0,
            "dilation": tuple(attribute(node, "dilations", []) or ()) or 1,
            "groups": int(attribute(node, "group", 1)),
        }
        return lambda x, w: F.conv2d(x, w, None, **kwargs)
    if node.op_type == "Gemm":
        if attribute(node, "transB", 0):
            return lambda x, w: x @ w.T  # w (N, K)
        return lambda x, w: x @ w
    return None


def adaround_node(
    node: onnx.NodeProto,
    index: GraphIndex,
    tq: TensorQuant,
    inputs: np.ndarray,
    config: AdaRoundConfig,
) -> np.ndarray | None:
    """The node's weight after AdaRound, dequantized (float32), or None where it does not apply
    (asymmetric or group-wise weights, unsupported operator)."""
    layer = layer_function(node)
    weight = index.array(node.input[1]).astype(np.float32)
    if layer is None or tq.spec.symmetry is not Symmetry.SYMMETRIC:
        return None
    if node.op_type == "Conv" and weight.ndim != 4:
        return None  # 1-D/3-D convolutions: only conv2d is reconstructed here
    granularity = tq.spec.granularity
    if isinstance(granularity, PerChannel):
        shape = [1] * weight.ndim
        shape[granularity.axis] = -1
        scale = np.asarray(tq.scale, np.float32).reshape(shape)
    elif isinstance(granularity, PerTensor):
        scale = np.asarray(tq.scale, np.float32).reshape([1] * weight.ndim)
    else:
        return None
    torch.manual_seed(config.seed)
    codes = adaround(
        torch.from_numpy(weight),
        torch.from_numpy(scale),
        tq.spec.qmin,
        tq.spec.qmax,
        torch.from_numpy(np.ascontiguousarray(inputs, np.float32)),
        layer,
        config,
    )
    zero = np.zeros_like(tq.zero_point)
    return dequantize(codes.numpy().astype(np.int32), tq.scale, zero, tq.spec)
