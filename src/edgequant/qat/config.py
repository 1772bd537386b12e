"""Quantization-aware training settings: the same `QuantSpec` vocabulary as PTQ."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from edgequant.choices import RangeLearning
from edgequant.config import ACTIVATIONS_UINT8, Calibrator
from edgequant.errors import ConfigError
from edgequant.spec import PerChannel, PerTensor, QType, QuantSpec, Symmetry

ACTIVATIONS_UINT4 = QuantSpec(QType.UINT4, Symmetry.AFFINE, PerTensor())


def weight_spec(bits: int) -> QuantSpec:
    qtype = {8: QType.INT8, 4: QType.INT4}.get(bits)
    if qtype is None:
        raise ConfigError(f"QAT weights must be 4 or 8 bits, got {bits}")
    return QuantSpec(qtype, Symmetry.SYMMETRIC, PerChannel(0))


@dataclass(frozen=True)
class QATConfig:
    """Per-channel symmetric weights, affine activations; `overrides` maps module names (as in
    `model.named_modules()`) to weight bits, e.g. keep the first and last layers at 8."""

    weights: QuantSpec = field(default_factory=lambda: weight_spec(8))
    activations: QuantSpec = ACTIVATIONS_UINT8
    ranges: RangeLearning = RangeLearning.LSQ
    calibrator: Calibrator = Calibrator.MINMAX
    bn_freeze_steps: int = 200  # BatchNorm statistics update for this many steps, then freeze
    overrides: tuple[tuple[str, int], ...] = ()
    range_momentum: float = 0.01  # MOVING_MINMAX: weight of each new batch's min and max

    def __post_init__(self) -> None:
        if (
            not isinstance(self.weights.granularity, PerChannel)
            or self.weights.symmetry is not Symmetry.SYMMETRIC
        ):
            raise ConfigError("QAT weights are symmetric per-channel")
        if self.activations.qtype.bits not in (4, 8) or self.activations.granularity != PerTensor():
            raise ConfigError("QAT activations are 8- or 4-bit, one scale per tensor")
        if not 0 < self.range_momentum <= 1:
            raise ConfigError("range_momentum must be in (0, 1]")
        if self.bn_freeze_steps < 0:
            raise ConfigError("bn_freeze_steps must be >= 0")
        object.__setattr__(self, "overrides", tuple((str(k), int(v)) for k, v in self.overrides))

    @classmethod
    def int8(cls, **kwargs: Any) -> QATConfig:
        """W8A8."""
        return cls(weights=weight_spec(8), **kwargs)

    @classmethod
    def w4a8(cls, **kwargs: Any) -> QATConfig:
        """4-bit per-channel weights, 8-bit activations."""
        return cls(weights=weight_spec(4), **kwargs)

    @classmethod
    def w4a4(cls, **kwargs: Any) -> QATConfig:
        """4-bit per-channel weights and 4-bit affine activations (uint4), for accelerators with
        4-bit activation kernels; ONNX Runtime's CPU runs them through float."""
        return cls(weights=weight_spec(4), activations=ACTIVATIONS_UINT4, **kwargs)

    def weight_spec_for(self, module_name: str) -> QuantSpec:
        bits = dict(self.overrides).get(module_name)
        return self.weights if bits is None else weight_spec(bits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights.to_dict(),
            "activations": self.activations.to_dict(),
            "ranges": self.ranges.value,
            "calibrator": self.calibrator.value,
            "bn_freeze_steps": self.bn_freeze_steps,
            "overrides": [list(o) for o in self.overrides],
            "range_momentum": self.range_momentum,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QATConfig:
        """A config from its JSON form (`to_dict`); unknown keys and wrong values are errors."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown QATConfig keys {sorted(unknown)}; known keys: {sorted(known)}"
            )
        try:
            kwargs: dict[str, Any] = {}
            for key, value in data.items():
                if key in ("weights", "activations"):
                    kwargs[key] = QuantSpec.from_dict(value)
                elif key == "ranges":
                    kwargs[key] = RangeLearning(value)
                elif key == "calibrator":
                    kwargs[key] = Calibrator(value)
                elif key == "overrides":
                    kwargs[key] = tuple((str(k), int(v)) for k, v in value)
                elif key == "bn_freeze_steps" and not isinstance(value, int):
                    raise TypeError(f"bn_freeze_steps must be an integer, not {value!r}")
                elif key == "range_momentum" and not isinstance(value, int | float):
                    raise TypeError(f"range_momentum must be a number, not {value!r}")
                else:
                    kwargs[key] = value
            return cls(**kwargs)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"invalid QATConfig: {exc}") from None
