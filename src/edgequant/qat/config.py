"""Quantization-aware training settings: the same `QuantSpec` vocabulary as PTQ."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from edgequant.config import ACTIVATIONS_UINT8, Calibrator
from edgequant.errors import ConfigError
from edgequant.spec import PerChannel, QType, QuantSpec, Symmetry


class RangeLearning(enum.Enum):
    LSQ = "lsq"  # activation scales are parameters trained by LSQ (Esser et al. 2019)
    FROZEN = "frozen"  # activation scales stay at their calibrated (PTQ warm-start) values


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

    def __post_init__(self) -> None:
        if (
            not isinstance(self.weights.granularity, PerChannel)
            or self.weights.symmetry is not Symmetry.SYMMETRIC
        ):
            raise ConfigError("QAT weights are symmetric per-channel")
        if self.activations.qtype.bits != 8:
            raise ConfigError("QAT activations are 8-bit in this version (W8A8 and W4A8)")
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
        }
