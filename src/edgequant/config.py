"""Typed, frozen configuration for post-training quantization.

Every exported model gets this config written beside it (``*.quant.json``), so each artifact says
exactly how it was made. Unknown keys are errors; enums replace strings and booleans.
"""

from __future__ import annotations

import enum
import json
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgequant.errors import ConfigError
from edgequant.spec import PerChannel, PerGroup, PerTensor, QType, QuantSpec, Symmetry

CONFIG_VERSION = 1


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


WEIGHTS_INT8_PER_CHANNEL = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0))
WEIGHTS_INT8_PER_TENSOR = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerTensor())
ACTIVATIONS_UINT8 = QuantSpec(QType.UINT8, Symmetry.AFFINE, PerTensor())
ACTIVATIONS_INT8 = QuantSpec(QType.INT8, Symmetry.AFFINE, PerTensor())


def default_activations(target: Target) -> QuantSpec:
    """The activation spec of `target`'s preset (see `edgequant.targets.PRESETS`)."""
    from edgequant.targets import preset

    return preset(target).activations


@dataclass(frozen=True)
class PTQConfig:
    """Post-training quantization settings. Build with the named constructors.

    `weights.granularity` is a template: PerChannel(axis) is re-aimed at each operator's
    output-channel axis (0 for Conv and Gemm with transB, 1 for MatMul) by the exporter.
    """

    method: Method = Method.STATIC
    weights: QuantSpec = WEIGHTS_INT8_PER_CHANNEL
    activations: QuantSpec | None = None  # None: chosen for `target` by default_activations
    target: Target = field(default_factory=Target.detect)
    calibrator: Calibrator = Calibrator.MINMAX
    percentile: float = 99.99
    num_bins: int = 8192  # zero-aligned: a one-sided tensor gets at least 2048 bins over its data
    max_calibration_samples: int = 1000
    exclude_nodes: tuple[str, ...] = ()
    equalization: Equalization = Equalization.NONE
    coverage: Coverage = Coverage.AUTO
    embeddings: Embeddings = Embeddings.FLOAT  # INT8: per-row int8 tables (static, dynamic, INT4)
    smoothing: Smoothing = Smoothing.NONE
    smoothing_alpha: float = 0.5  # SmoothQuant's migration strength (0: none, 1: all to weights)
    bias_correction: BiasCorrection = BiasCorrection.NONE
    rounding: Rounding = Rounding.NEAREST
    rounding_samples: int = 256  # calibration samples kept per layer for AdaRound
    # node name -> Precision; a dict is accepted and stored as sorted pairs. Unlisted nodes
    # follow `weights` and `activations`.
    layer_precisions: tuple[tuple[str, Precision], ...] = ()

    def __post_init__(self) -> None:
        for name, kind in (
            ("method", Method),
            ("target", Target),
            ("calibrator", Calibrator),
            ("equalization", Equalization),
            ("coverage", Coverage),
            ("embeddings", Embeddings),
            ("smoothing", Smoothing),
            ("bias_correction", BiasCorrection),
            ("rounding", Rounding),
        ):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile}")
        if self.num_bins < 128 or self.num_bins % 2:
            raise ConfigError(f"num_bins must be an even number >= 128, got {self.num_bins}")
        if not 0.0 <= self.smoothing_alpha <= 1.0:
            raise ConfigError(f"smoothing_alpha must be in [0, 1], got {self.smoothing_alpha}")
        if self.smoothing is not Smoothing.NONE and self.method is not Method.STATIC:
            raise ConfigError("SmoothQuant is for static quantization (method=static)")
        if self.rounding_samples < 1:
            raise ConfigError("rounding_samples must be at least 1")
        if self.max_calibration_samples < 1:
            raise ConfigError("max_calibration_samples must be at least 1")
        if self.method is Method.INT4 and not isinstance(self.weights.granularity, PerGroup):
            raise ConfigError("INT4 weight-only quantization needs PerGroup weights")
        if self.rounding is Rounding.GPTQ and self.method is not Method.INT4:
            raise ConfigError("GPTQ rounding is for INT4 weight-only quantization (method=int4)")
        if self.rounding is Rounding.ADAROUND and self.method is not Method.STATIC:
            raise ConfigError("AdaRound is for static quantization (method=static)")
        object.__setattr__(self, "exclude_nodes", tuple(self.exclude_nodes))
        pairs = self.layer_precisions
        items = pairs.items() if isinstance(pairs, Mapping) else pairs
        try:
            pairs = tuple(sorted((str(k), Precision(v)) for k, v in items))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"layer_precisions must map node names to Precision: {exc}") from None
        if len({k for k, _ in pairs}) != len(pairs):
            raise ConfigError("layer_precisions names a node twice")
        if pairs and self.method is not Method.STATIC:
            raise ConfigError("per-layer precisions need static quantization (method=static)")
        object.__setattr__(self, "layer_precisions", pairs)

    @property
    def activation_spec(self) -> QuantSpec:
        return self.activations or default_activations(self.target)

    @property
    def precisions(self) -> dict[str, Precision]:
        """Per-layer precisions, with `exclude_nodes` as FP32."""
        out = dict(self.layer_precisions)
        out.update({name: Precision.FP32 for name in self.exclude_nodes})
        return out

    # Named constructors -------------------------------------------------------------------
    @classmethod
    def int8(
        cls, *, per_channel: bool = True, calibrator: Calibrator = Calibrator.MINMAX, **kwargs: Any
    ) -> PTQConfig:
        """Static INT8: s8 weights (per-channel by default) and activations as the target's
        preset wants them (`edgequant.targets.PRESETS`; the CPU we run on by default)."""
        from edgequant.targets import preset

        weights = preset(kwargs.get("target") or Target.detect()).weights
        if not per_channel:
            weights = replace(weights, granularity=PerTensor())
        return cls(method=Method.STATIC, weights=weights, calibrator=calibrator, **kwargs)

    @classmethod
    def for_target(cls, target: Target | str, **kwargs: Any) -> PTQConfig:
        """Static quantization exactly as `target`'s preset says (weights, activations,
        coverage); other fields from `kwargs`."""
        from edgequant.targets import preset

        p = preset(target)
        fields_ = {"weights": p.weights, "activations": p.activations, "coverage": p.coverage}
        return cls(method=Method.STATIC, target=p.target, **{**fields_, **kwargs})

    @classmethod
    def w4a8(
        cls, *, per_channel: bool = True, calibrator: Calibrator = Calibrator.MINMAX, **kwargs: Any
    ) -> PTQConfig:
        """Static W4A8: symmetric int4 Conv/Gemm weights, 8-bit activations (opset 21 Q/DQ).

        ONNX Runtime's CPU has no int4 convolution kernel: this is for size and for runtimes
        with 4-bit kernels, and for measuring what 4-bit weights cost in accuracy."""
        granularity = PerChannel(0) if per_channel else PerTensor()
        weights = QuantSpec(QType.INT4, Symmetry.SYMMETRIC, granularity)
        return cls(method=Method.STATIC, weights=weights, calibrator=calibrator, **kwargs)

    @classmethod
    def dynamic(cls, *, per_channel: bool = True, **kwargs: Any) -> PTQConfig:
        """Dynamic INT8 for MatMul/Gemm: weights quantized offline, activations at run time."""
        weights = WEIGHTS_INT8_PER_CHANNEL if per_channel else WEIGHTS_INT8_PER_TENSOR
        return cls(method=Method.DYNAMIC, weights=weights, **kwargs)

    @classmethod
    def fp16(cls, **kwargs: Any) -> PTQConfig:
        """Half-precision weights and compute; inputs and outputs stay float32."""
        return cls(method=Method.FP16, **kwargs)

    @classmethod
    def int4(cls, *, block_size: int = 32, symmetric: bool = True, **kwargs: Any) -> PTQConfig:
        """4-bit weight-only, one scale per `block_size` weights along the reduction axis."""
        weights = QuantSpec(
            QType.INT4 if symmetric else QType.UINT4,
            Symmetry.SYMMETRIC if symmetric else Symmetry.AFFINE,
            PerGroup(block_size, 0),
        )
        return cls(method=Method.INT4, weights=weights, **kwargs)

    # Serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CONFIG_VERSION,
            "method": self.method.value,
            "weights": self.weights.to_dict(),
            "activations": self.activation_spec.to_dict(),
            "target": self.target.value,
            "calibrator": self.calibrator.value,
            "percentile": self.percentile,
            "num_bins": self.num_bins,
            "max_calibration_samples": self.max_calibration_samples,
            "exclude_nodes": list(self.exclude_nodes),
            "equalization": self.equalization.value,
            "coverage": self.coverage.value,
            "embeddings": self.embeddings.value,
            "smoothing": self.smoothing.value,
            "smoothing_alpha": self.smoothing_alpha,
            "bias_correction": self.bias_correction.value,
            "rounding": self.rounding.value,
            "rounding_samples": self.rounding_samples,
            "layer_precisions": {k: v.value for k, v in self.layer_precisions},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PTQConfig:
        """A config from its JSON form; every value's type is checked (one line names it)."""
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(
                f"config version {version} is not supported (expected {CONFIG_VERSION})"
            )
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown PTQConfig keys {sorted(unknown)}; known keys: {sorted(known)}"
            )
        _check_json_types(data)
        try:
            kwargs: dict[str, Any] = {
                "method": Method(data.pop("method", "static")),
                "target": Target(data.pop("target", Target.detect().value)),
                "calibrator": Calibrator(data.pop("calibrator", "minmax")),
                "equalization": Equalization(data.pop("equalization", "none")),
                "smoothing": Smoothing(data.pop("smoothing", "none")),
                "coverage": Coverage(data.pop("coverage", "auto")),
                "embeddings": Embeddings(data.pop("embeddings", "float")),
                "bias_correction": BiasCorrection(data.pop("bias_correction", "none")),
                "rounding": Rounding(data.pop("rounding", "nearest")),
            }
        except ValueError as exc:
            raise ConfigError(f"invalid PTQConfig value: {exc}") from None
        if "weights" in data:
            kwargs["weights"] = QuantSpec.from_dict(data.pop("weights"))
        if data.get("activations") is not None:
            kwargs["activations"] = QuantSpec.from_dict(data.pop("activations"))
        data.pop("activations", None)
        if "exclude_nodes" in data:
            kwargs["exclude_nodes"] = tuple(data.pop("exclude_nodes"))
        if "layer_precisions" in data:
            kwargs["layer_precisions"] = data.pop("layer_precisions")
        return cls(**kwargs, **data)

    def with_(self, **changes: Any) -> PTQConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


_SPEC_EXAMPLE = (
    '{"qtype": "int8", "symmetry": "symmetric", "granularity": {"kind": "PerChannel", "axis": 0}}'
)
# JSON type of every PTQConfig key (enums are strings; `activations` may be null)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "method": (str,), "target": (str,), "calibrator": (str,), "equalization": (str,),
    "smoothing": (str,), "coverage": (str,), "embeddings": (str,), "bias_correction": (str,),
    "rounding": (str,), "percentile": (int, float), "num_bins": (int,),
    "max_calibration_samples": (int,), "smoothing_alpha": (int, float),
    "rounding_samples": (int,), "exclude_nodes": (list,), "weights": (dict,),
    "activations": (dict, type(None)), "layer_precisions": (dict,),
}  # fmt: skip
_JSON_NAMES = {str: "a string", int: "a whole number", float: "a number", list: "a list",
               dict: "an object", type(None): "null"}  # fmt: skip


def _check_json_types(data: dict[str, Any]) -> None:
    """One line naming the first key whose JSON value has the wrong type (a quoted number, a
    string where an object belongs), before any value is used."""
    for key, value in data.items():
        kinds = _JSON_TYPES.get(key)
        if kinds is None or (isinstance(value, kinds) and not isinstance(value, bool)):
            continue
        want = " or ".join(_JSON_NAMES[k] for k in kinds if not (k is int and float in kinds))
        hint = f", e.g. {_SPEC_EXAMPLE}" if key in ("weights", "activations") else ""
        raise ConfigError(f"config key {key!r} must be {want}{hint}, got {json.dumps(value)}")
    for key in ("exclude_nodes",):
        if not all(isinstance(v, str) for v in data.get(key, [])):
            raise ConfigError(f"config key {key!r} must be a list of node names (strings)")
    if not all(isinstance(v, str) for v in data.get("layer_precisions", {}).values()):
        raise ConfigError("config key 'layer_precisions' must map node names to precision names")
