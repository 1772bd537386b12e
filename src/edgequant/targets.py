"""Deployment targets: one table of presets, each rule with the reason it exists.

A preset fixes what the hardware's integer kernels accept (weight and activation types,
symmetry, granularity), which operators may stay float, whether the model's own inputs and
outputs are integer, and the runtime that runs it. `PTQConfig.for_target(target)` builds the
quantization config; `edgequant.analysis.support` checks a model against the preset's runtime.
Presets are named after Optimum's `arm64()`, `avx512_vnni()`, `tensorrt()` (see STYLE.md); the
table below is the only place their rules live.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edgequant.choices import Coverage, Precision, Target
from edgequant.errors import ConfigError
from edgequant.spec import PerChannel, PerTensor, QType, QuantSpec, Symmetry


class Runtime(enum.Enum):
    """Where a target's model runs (ONNX Runtime CPU and LiteRT run here; QNN and TensorRT do not)."""

    ORT_CPU = "onnxruntime-cpu"
    ORT_QNN = "onnxruntime-qnn"  # Qualcomm HTP through ONNX Runtime's QNN execution provider
    TENSORRT = "tensorrt"
    LITERT = "litert"  # the TFLite interpreter (pip install 'edgequant[tflite]')


@dataclass(frozen=True)
class TargetPreset:
    """What one target's integer kernels need. `rules` explain each choice in one line."""

    target: Target
    runtime: Runtime
    weights: QuantSpec  # per-channel templates are aimed at each layer's output axis
    activations: QuantSpec
    coverage: Coverage = Coverage.AUTO
    full_integer: bool = False  # every operator integer, graph outputs quantized too
    integer_io: bool = False  # the model's own inputs and outputs are integer tensors
    per_tensor_weight_ops: frozenset[str] = frozenset()  # ops whose kernels take one scale
    format: str = "onnx"  # "onnx" (QDQ) or "tflite"
    # what the fidelity guard promotes a layer that loses accuracy to: INT16 where the runtime
    # has 16-bit activation kernels, else FP32 (on ORT's CPU a 16-bit Q/DQ pair runs as float
    # between extra nodes: slower than float and no more accurate)
    promote_to: Precision = Precision.FP32
    rules: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.target.value


_S8_PER_CHANNEL = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0))
_S8_NARROW_PER_CHANNEL = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0), narrow_range=True)
_U8 = QuantSpec(QType.UINT8, Symmetry.AFFINE, PerTensor())
_U16 = QuantSpec(QType.UINT16, Symmetry.AFFINE, PerTensor())
_S8 = QuantSpec(QType.INT8, Symmetry.AFFINE, PerTensor())
_S8_SYMMETRIC = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerTensor())

_U8_REASON = (
    "u8 activations: ORT's integer CPU kernels multiply u8 x s8; with s8 activations depthwise "
    "Convs and residual Adds stay unfused float islands (measured: `edgequant check`)"
)

PRESETS: dict[Target, TargetPreset] = {
    p.target: p
    for p in (
        TargetPreset(
            Target.X86_VNNI,
            Runtime.ORT_CPU,
            _S8_PER_CHANNEL,
            _U8,
            rules=(
                _U8_REASON,
                "s8 per-channel weights on 8 bits: VNNI's VPDPBUSD sums u8 x s8 in int32, "
                "no saturation",
                "outputs may stay float: ORT's QGemm/MatMulIntegerToFloat write float directly",
            ),
        ),
        TargetPreset(
            Target.X86,
            Runtime.ORT_CPU,
            QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0), reduce_range=True),
            _U8,
            rules=(
                _U8_REASON,
                "7-bit weights (reduce_range): without VNNI, AVX2's VPMADDUBSW adds u8 x s8 pairs "
                "in int16, which saturates at 2 x 255 x 127 but not at 2 x 255 x 63",
            ),
        ),
        TargetPreset(
            Target.ARM64,
            Runtime.ORT_CPU,
            _S8_PER_CHANNEL,
            _U8,
            rules=(
                "u8 activations: ORT's ARM64 QLinearConv/QGemm kernels (UDOT/SDOT) fuse u8 "
                "activations with s8 weights; s8 activations leave depthwise Convs unfused",
                "s8 per-channel weights on 8 bits: the dot-product instructions sum in int32",
            ),
        ),
        TargetPreset(
            Target.NPU,
            Runtime.ORT_QNN,
            _S8_PER_CHANNEL,
            _U8,
            coverage=Coverage.ALL,
            full_integer=True,
            per_tensor_weight_ops=frozenset({"MatMul"}),
            promote_to=Precision.INT16,
            rules=(
                "full integer: an NPU runs a graph partition only if every operator in it is "
                "quantized; a float operator splits the graph and round-trips through the CPU",
                "u8 asymmetric activations: the QNN HTP default (ORT's get_qnn_qdq_config)",
                "per-channel weights only as signed symmetric int8; MatMul weights per-tensor "
                "(QNN has no per-channel MatMul)",
                "graph outputs quantized too, so the last layer runs on the NPU",
            ),
        ),
        TargetPreset(
            Target.NPU_A16,
            Runtime.ORT_QNN,
            _S8_PER_CHANNEL,
            _U16,
            coverage=Coverage.ALL,
            full_integer=True,
            per_tensor_weight_ops=frozenset({"MatMul"}),
            promote_to=Precision.FP32,
            rules=(
                "as npu, with u16 activations (QNN's A16W8): 256x finer activation steps for "
                "models that lose accuracy at u8, at twice the activation memory",
                "16-bit Q/DQ needs opset 21",
            ),
        ),
        TargetPreset(
            Target.TENSORRT,
            Runtime.TENSORRT,
            _S8_NARROW_PER_CHANNEL,
            _S8_SYMMETRIC,
            rules=(
                "symmetric everywhere: TensorRT's INT8 Q/DQ takes zero-point 0 only",
                "s8 activations per tensor, weights per output channel in [-127, 127]",
                "Q/DQ at layer inputs is enough: TensorRT fuses DQ -> Conv/MatMul -> Q itself",
            ),
        ),
        TargetPreset(
            Target.TFLITE,
            Runtime.LITERT,
            _S8_NARROW_PER_CHANNEL,
            _S8,
            coverage=Coverage.ALL,
            full_integer=True,
            integer_io=True,
            format="tflite",
            rules=(
                "TFLite's int8 spec: s8 asymmetric activations, s8 symmetric per-channel weights "
                "in [-127, 127], int32 biases",
                "full integer with int8 inputs and outputs: Edge TPUs and microcontrollers "
                "(TFLite Micro) have no float kernels at all",
                "converted from the PyTorch model by litert-torch (PT2E), run in LiteRT",
            ),
        ),
    )
}


def preset(target: Target | str) -> TargetPreset:
    """The preset of `target` (a `Target` or its name, e.g. "tensorrt")."""
    if isinstance(target, str):
        try:
            target = Target(target)
        except ValueError:
            names = ", ".join(t.value for t in Target)
            raise ConfigError(f"unknown target {target!r}; choose one of {names}") from None
    return PRESETS[target]
