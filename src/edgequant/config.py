"""Typed, frozen configuration for post-training quantization.

Every exported model gets this config written beside it (``*.quant.json``), so each artifact says
exactly how it was made. Unknown keys are errors; enums replace strings and booleans.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from edgequant.choices import (
    BiasCorrection,
    Calibrator,
    Coverage,
    Embeddings,
    Equalization,
    Method,
    Precision,
    Rounding,
    Smoothing,
    Target,
)
from edgequant.errors import ConfigError
from edgequant.spec import PerChannel, PerGroup, PerTensor, QType, QuantSpec, Symmetry
from edgequant.targets import preset

CONFIG_VERSION = 2  # 2: the target's preset resolved into the config (coverage, full_integer, ...)
READABLE_VERSIONS = (1, 2)  # a version-1 file takes the fields it lacks from its target's preset


WEIGHTS_INT8_PER_CHANNEL = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerChannel(0))
WEIGHTS_INT8_PER_TENSOR = QuantSpec(QType.INT8, Symmetry.SYMMETRIC, PerTensor())
ACTIVATIONS_UINT8 = QuantSpec(QType.UINT8, Symmetry.AFFINE, PerTensor())
ACTIVATIONS_INT8 = QuantSpec(QType.INT8, Symmetry.AFFINE, PerTensor())


class _FromTarget:
    """Default of the fields a target's preset decides: replaced by the preset's value when the
    config is built, so every config states all of them (the target name is only a label)."""

    def __repr__(self) -> str:
        return "FROM_TARGET"


FROM_TARGET: Any = _FromTarget()
_PRESET_FIELDS = ("weights", "activations", "coverage", "full_integer", "per_tensor_weight_ops")


@dataclass(frozen=True)
class PTQConfig:
    """Post-training quantization settings. Build with the named constructors.

    `weights.granularity` is a template: PerChannel(axis) is re-aimed at each operator's
    output-channel axis (0 for Conv and Gemm with transB, 1 for MatMul) by the exporter.

    The fields a deployment target decides (`weights`, `activations`, `coverage`,
    `full_integer`, `per_tensor_weight_ops`) default to `target`'s preset
    (`edgequant.targets.PRESETS`) and are resolved once, here: from then on the config says
    everything and nothing downstream looks the preset up again.
    """

    method: Method = Method.STATIC
    weights: QuantSpec = FROM_TARGET
    activations: QuantSpec = FROM_TARGET
    target: Target = field(default_factory=Target.detect)
    calibrator: Calibrator = Calibrator.MINMAX
    percentile: float = 99.99
    num_bins: int = 8192  # zero-aligned: a one-sided tensor gets at least 2048 bins over its data
    max_calibration_samples: int = 1000
    exclude_nodes: tuple[str, ...] = ()
    equalization: Equalization = Equalization.NONE
    coverage: Coverage = FROM_TARGET
    # every operator integer, graph outputs quantized, every bias int32 (NPUs, TFLite)
    full_integer: bool = FROM_TARGET
    # operators whose integer kernels take one weight scale (QNN's MatMul)
    per_tensor_weight_ops: tuple[str, ...] = FROM_TARGET
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
        if not isinstance(self.target, Target):
            raise ConfigError(f"target must be a Target, got {self.target!r}")
        p = preset(self.target)
        for name in _PRESET_FIELDS:  # None: the preset's too (activations=None was the old way)
            if getattr(self, name) is FROM_TARGET or getattr(self, name) is None:
                object.__setattr__(self, name, getattr(p, name))
        object.__setattr__(self, "per_tensor_weight_ops", tuple(sorted(self.per_tensor_weight_ops)))
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
        """The activation spec (kept for callers of the time it could be None)."""
        return self.activations

    @property
    def raw_signal_float(self) -> bool:
        """Whether convs over the raw signal stay float by default (`select.few_channel_conv`):
        on ONNX Runtime's CPU kernels (they are no faster there in integer), never for
        full-integer targets nor for NPUs and TensorRT, whose node units need every input
        quantized."""
        from edgequant.targets import Runtime

        return not self.full_integer and preset(self.target).runtime is Runtime.ORT_CPU

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
        """Static INT8: everything as the target's preset says (`edgequant.targets.PRESETS`; the
        CPU we run on by default), weights per-channel unless `per_channel=False`."""
        target = kwargs.pop("target", None) or Target.detect()
        weights = kwargs.pop("weights", None) or preset(target).weights
        if not per_channel:
            weights = replace(weights, granularity=PerTensor())
        return cls(
            method=Method.STATIC, target=target, weights=weights, calibrator=calibrator, **kwargs
        )

    @classmethod
    def for_target(cls, target: Target | str, **kwargs: Any) -> PTQConfig:
        """Static quantization exactly as `target`'s preset says; other fields from `kwargs`.
        The same config as `int8(target=target)`."""
        return cls.int8(target=preset(target).target, **kwargs)

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
            "activations": self.activations.to_dict(),
            "target": self.target.value,
            "calibrator": self.calibrator.value,
            "percentile": self.percentile,
            "num_bins": self.num_bins,
            "max_calibration_samples": self.max_calibration_samples,
            "exclude_nodes": list(self.exclude_nodes),
            "equalization": self.equalization.value,
            "coverage": self.coverage.value,
            "full_integer": self.full_integer,
            "per_tensor_weight_ops": list(self.per_tensor_weight_ops),
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
        if version not in READABLE_VERSIONS:
            raise ConfigError(
                f"config version {version} is not supported (this edgequant reads "
                f"{', '.join(map(str, READABLE_VERSIONS))})"
            )
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown PTQConfig keys {sorted(unknown)}; known keys: {sorted(known)}"
            )
        _check_json_types(data)
        try:
            target = Target(data.pop("target", Target.detect().value))
            kwargs: dict[str, Any] = {
                "method": Method(data.pop("method", "static")),
                "target": target,
                "calibrator": Calibrator(data.pop("calibrator", "minmax")),
                "equalization": Equalization(data.pop("equalization", "none")),
                "smoothing": Smoothing(data.pop("smoothing", "none")),
                "coverage": Coverage(data.pop("coverage", preset(target).coverage.value)),
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
        if "per_tensor_weight_ops" in data:
            kwargs["per_tensor_weight_ops"] = tuple(data.pop("per_tensor_weight_ops"))
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
    "activations": (dict, type(None)), "layer_precisions": (dict,), "full_integer": (bool,),
    "per_tensor_weight_ops": (list,),
}  # fmt: skip
_JSON_NAMES = {str: "a string", int: "a whole number", float: "a number", list: "a list",
               dict: "an object", type(None): "null", bool: "true or false"}  # fmt: skip


def _check_json_types(data: dict[str, Any]) -> None:
    """One line naming the first key whose JSON value has the wrong type (a quoted number, a
    string where an object belongs), before any value is used."""
    for key, value in data.items():
        kinds = _JSON_TYPES.get(key)
        if kinds is None or (
            isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
        ):
            continue
        want = " or ".join(_JSON_NAMES[k] for k in kinds if not (k is int and float in kinds))
        hint = f", e.g. {_SPEC_EXAMPLE}" if key in ("weights", "activations") else ""
        raise ConfigError(f"config key {key!r} must be {want}{hint}, got {json.dumps(value)}")
    for key in ("exclude_nodes", "per_tensor_weight_ops"):
        if not all(isinstance(v, str) for v in data.get(key, [])):
            raise ConfigError(f"config key {key!r} must be a list of node names (strings)")
    if not all(isinstance(v, str) for v in data.get("layer_precisions", {}).values()):
        raise ConfigError("config key 'layer_precisions' must map node names to precision names")
