"""The intermediate result every method hands to the one writer (`exporter.write`).

Float weights stay in the graph; the plan says, per tensor, which `QuantSpec` and which
scale/zero-point to use, and which nodes run in float16. Static PTQ fills it from calibration,
QAT from learned ranges, dynamic and weight-only INT4 from the weights alone, FP16 with no numbers
at all (see `exporter.planner`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edgequant.spec import QuantSpec


@dataclass(frozen=True)
class TensorQuant:
    """Quantization of one tensor. Shapes of scale/zero_point follow `spec.granularity`."""

    spec: QuantSpec
    scale: NDArray[np.float32]
    zero_point: NDArray[np.int32]

    def to_dict(self) -> dict[str, object]:
        return {
            "spec": self.spec.to_dict(),
            "scale": np.asarray(self.scale).ravel()[:8].tolist(),
            "zero_point": np.asarray(self.zero_point).ravel()[:8].tolist(),
        }


@dataclass
class QuantPlan:
    """What to quantize and how.

    activations: activation tensor name -> its quantization (a Q/DQ pair goes after it).
    weights: initializer name -> its quantization (stored as integers behind a DequantizeLinear).
    biases: bias initializer name -> (input activation name, weight initializer name); the
        integer kernel adds it as int32 at scale = input scale x weight scale. The exporter stores
        Gemm/MatMul biases that way and leaves Conv biases float (ONNX Runtime quantizes them
        identically at load; see `qdq._needs_int32`).
    folded: activation nodes (Relu/Clip) whose clipping the following quantizer already does;
        the exporter removes them and lets their producer write their output.
    float_readers: nodes that read the original float activations, not their Q/DQ.
    """

    activations: dict[str, TensorQuant] = field(default_factory=dict)
    weights: dict[str, TensorQuant] = field(default_factory=dict)
    biases: dict[str, tuple[str, str]] = field(default_factory=dict)
    folded: list[str] = field(default_factory=list)
    min_opset: int = 13
    # nodes that keep reading the float tensors even where a Q/DQ pair exists for a quantized
    # reader (Coverage.WEIGHTED: a residual Add must not see the MatMul's quantized input)
    float_readers: frozenset[str] = frozenset()
    # ... except for these tensors, which float readers read dequantized too (a Conv's output)
    read_quantized: frozenset[str] = frozenset()
    # every bias as int32 behind a DequantizeLinear, Conv too (full-integer targets: an NPU
    # takes no float constant; ONNX Runtime's CPU would quantize a float Conv bias itself)
    int32_biases: bool = False
    # weight name -> its integer codes when an algorithm chose the rounding (GPTQ); otherwise
    # the writer rounds the float weight to nearest with the weight's `TensorQuant`
    weight_codes: dict[str, NDArray[np.integer]] = field(default_factory=dict)
    # MatMul node -> the quantization of its constant (K, N) weight; its input is quantized at
    # run time (DynamicQuantizeLinear -> MatMulInteger, fused by ORT to DynamicQuantizeMatMul)
    dynamic: dict[str, TensorQuant] = field(default_factory=dict)
    # Gather table -> its per-row int8 quantization (only looked-up rows are dequantized)
    embeddings: dict[str, TensorQuant] = field(default_factory=dict)
    # nodes computed in float16 between Casts (mixed precision)
    half_nodes: tuple[str, ...] = ()
    # the whole model in float16 by ONNX Runtime's converter, except the nodes in `keep_float`
    half_model: bool = False
    keep_float: tuple[str, ...] = ()
