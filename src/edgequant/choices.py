"""The choices a quantization config is made of: one enum per decision, no strings or booleans.

A base module with no edgequant imports, so that `config` (which resolves a target's preset) and
`targets` (the preset table) both build on it without importing each other.
"""

from __future__ import annotations

import enum
import platform
from pathlib import Path


class Method(enum.Enum):
    """How the model is made smaller."""

    STATIC = "static"  # int8 weights and activations, ranges from calibration data
    DYNAMIC = "dynamic"  # int8 weights, activations quantized at run time (MatMul/Gemm only)
    FP16 = "fp16"  # half-precision weights and compute
    INT4 = "int4"  # 4-bit weight-only, group-wise, for MatMul/Gemm


class Calibrator(enum.Enum):
    """How activation ranges are estimated from calibration data."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"  # KL divergence between float and quantized histograms (TensorRT)
    MSE = "mse"  # clipping range that minimises expected quantization error


class Equalization(enum.Enum):
    """Weight rescaling between layers before quantization."""

    NONE = "none"
    CROSS_LAYER = "cross-layer"  # Nagel et al. 2019: equal per-channel ranges in Conv pairs


class Coverage(enum.Enum):
    """Which operators static quantization puts in integer.

    ALL quantizes every operator ONNX Runtime has an integer kernel for, outputs included, so
    integers flow from layer to layer (CNNs: Conv, Add, pooling fuse into QLinear* kernels).
    WEIGHTED quantizes only the inputs and weights of layers with weights (MatMul, Gemm, Conv);
    their outputs stay float unless another quantized layer reads them, and ORT runs them as
    integer matmuls with float output. Transformers need it: residual Adds carry outlier
    channels 100x the rest into LayerNorm, and attention probabilities crowd near 0, so 8-bit
    per-tensor Q/DQ there destroys the model (measured on MiniLM). AUTO picks WEIGHTED for graphs
    with attention (a MatMul of two activations) or LayerNormalization, ALL otherwise.
    """

    AUTO = "auto"
    ALL = "all"
    WEIGHTED = "weighted"


class Embeddings(enum.Enum):
    """How embedding tables (Gather on a constant 2-D table) are stored."""

    FLOAT = "float"
    INT8 = "int8"  # per-row symmetric int8, dequantized row by row after the lookup


class Smoothing(enum.Enum):
    """Moving activation outliers into weights before static quantization."""

    NONE = "none"
    SMOOTHQUANT = "smoothquant"  # Xiao et al. 2022: per-feature scales on MatMul inputs


class BiasCorrection(enum.Enum):
    """Removing the mean output error that rounding weights adds."""

    NONE = "none"
    EMPIRICAL = "empirical"  # Nagel et al. 2019, with input means from the calibration pass


class Rounding(enum.Enum):
    """How weights are rounded to their grid."""

    NEAREST = "nearest"
    ADAROUND = "adaround"  # Nagel et al. 2020: learned up/down per weight (needs torch)
    GPTQ = "gptq"  # Frantar et al. 2022: error feedback through the inverse Hessian (INT4)


class Scheme(enum.Enum):
    """A whole model's precision, as the field names it: weight bits, activation bits. Every
    command that quantizes a whole model takes one (`--precision`); one layer's precision in a
    mixed model is a `Precision` (`--layer NODE=int16`, `tune --precisions`)."""

    W8A8 = "w8a8"  # int8 weights (per channel), 8-bit activations: the default
    W4A8 = "w4a8"  # int4 weights, 8-bit activations: smaller, needs a runtime with int4 kernels
    W4A4 = "w4a4"  # 4-bit activations too: QAT only (PTQ loses too much there)


PTQ_SCHEMES = (Scheme.W8A8, Scheme.W4A8)


class Precision(enum.Enum):
    """What one layer computes in: per-layer (mixed) precision for static PTQ.

    Ordered from smallest to most accurate. INT4 and INT16 need opset 21 Q/DQ. ONNX Runtime's CPU
    has fused kernels only for 8-bit: INT4 weights and INT16 activations run as DQ -> float op
    here (smaller or more accurate, not faster); NPUs and other runtimes have kernels for them.
    """

    INT4 = "int4"  # 4-bit symmetric weights (the config's granularity), 8-bit activations
    INT8 = "int8"  # 8-bit weights and activations
    INT16 = "int16"  # 8-bit weights, 16-bit activations in and out of the layer
    FP16 = "fp16"  # half-precision weights and compute, cast at its borders
    FP32 = "fp32"  # left in float

    @property
    def quantized(self) -> bool:
        return self in (Precision.INT4, Precision.INT8, Precision.INT16)


class Target(enum.Enum):
    """The hardware (and runtime) a model is quantized for. Each one is a preset in
    `edgequant.targets.PRESETS`, which says what it changes and why; `Target.detect()` picks the
    CPU we run on."""

    X86_VNNI = "x86-vnni"
    X86 = "x86"
    ARM64 = "arm64"
    NPU = "npu"
    NPU_A16 = "npu-a16"
    TENSORRT = "tensorrt"
    TFLITE = "tflite"

    @staticmethod
    def detect() -> Target:
        """The target of the machine we run on."""
        machine = platform.machine().lower()
        if machine in {"arm64", "aarch64"}:
            return Target.ARM64
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        return Target.X86_VNNI if ("avx512_vnni" in flags or "avx_vnni" in flags) else Target.X86


class RangeLearning(enum.Enum):
    LSQ = "lsq"  # activation scales are parameters trained by LSQ (Esser et al. 2019)
    FROZEN = "frozen"  # activation scales stay at their calibrated (PTQ warm-start) values
    # ranges track an exponential moving average of each batch's min and max, as in Jacob et al.
    # 2018 and torch.ao's MovingAverageMinMaxObserver (starting from the calibrated range)
    MOVING_MINMAX = "moving-minmax"


class Backend(enum.Enum):
    """Where trials run."""

    AUTO = "auto"  # Ray when it is installed, else in this process
    LOCAL = "local"  # in this process, one after another
    RAY = "ray"  # on Ray: the cluster at RAY_ADDRESS, or a local Ray started for the run
