"""The one quantization vocabulary: how a single tensor is quantized.

A `QuantSpec` is shared by post-training quantization, quantization-aware training and the
exporter. Granularities are types (`PerTensor`, `PerChannel`, `PerGroup`), not flags.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgequant.errors import ConfigError


class QType(enum.Enum):
    """Integer storage type of a quantized tensor."""

    INT4 = "int4"
    UINT4 = "uint4"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"
    UINT16 = "uint16"

    @property
    def bits(self) -> int:
        return int(self.value.lstrip("uint"))

    @property
    def signed(self) -> bool:
        return not self.value.startswith("u")

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return int(2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1)

    @property
    def onnx_type(self) -> int:
        """The `onnx.TensorProto` element type (INT4/UINT4 need opset 21)."""
        from onnx import TensorProto

        return int(getattr(TensorProto, self.name))

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """A numpy dtype that holds the values (4-bit types use ml_dtypes)."""
        if self.bits == 4:
            import ml_dtypes

            four_bit: np.dtype[Any] = np.dtype(ml_dtypes.int4 if self.signed else ml_dtypes.uint4)
            return four_bit
        return np.dtype(self.value)


class Symmetry(enum.Enum):
    """Symmetric ranges put zero at the centre of the grid; affine ranges fit [min, max]."""

    SYMMETRIC = "symmetric"
    AFFINE = "affine"


class FloatType(enum.Enum):
    """Precisions that leave a tensor in floating point."""

    FP32 = "fp32"
    FP16 = "fp16"


@dataclass(frozen=True)
class PerTensor:
    """One scale and zero-point for the whole tensor."""


@dataclass(frozen=True)
class PerChannel:
    """One scale and zero-point per slice along `axis` (e.g. output channels of a Conv weight)."""

    axis: int = 0


@dataclass(frozen=True)
class PerGroup:
    """One scale and zero-point per block of `size` consecutive elements along `axis`."""

    size: int = 32
    axis: int = 0

    def __post_init__(self) -> None:
        if self.size < 2 or self.size & (self.size - 1):
            raise ConfigError(f"group size must be a power of two >= 2, got {self.size}")


Granularity = PerTensor | PerChannel | PerGroup


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized.

    narrow_range drops the most negative code of signed types ([-127, 127] for int8), which keeps
    symmetric grids exactly symmetric, as TensorRT and most NPUs expect for weights.
    reduce_range stores an 8-bit type on 7 bits ([-64, 63] for int8): x86 CPUs without VNNI
    multiply u8 x s8 with VPMADDUBSW, whose int16 pair sums saturate at 2 x 255 x 127 but not at
    2 x 255 x 63 (ONNX Runtime's `reduce_range`).
    """

    qtype: QType = QType.INT8
    symmetry: Symmetry = Symmetry.SYMMETRIC
    granularity: Granularity = PerTensor()
    narrow_range: bool = False
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.qtype, QType):
            raise ConfigError(f"qtype must be a QType, got {self.qtype!r}")
        if not isinstance(self.symmetry, Symmetry):
            raise ConfigError(f"symmetry must be a Symmetry, got {self.symmetry!r}")
        if not isinstance(self.granularity, PerTensor | PerChannel | PerGroup):
            raise ConfigError(
                f"granularity must be PerTensor/PerChannel/PerGroup, got {self.granularity!r}"
            )
        if self.narrow_range and not self.qtype.signed:
            raise ConfigError("narrow_range applies to signed types only")
        if self.reduce_range and self.qtype.bits != 8:
            raise ConfigError("reduce_range applies to 8-bit types only")

    @property
    def qmin(self) -> int:
        low = self.qtype.qmin // 2 if self.reduce_range else self.qtype.qmin
        return low + (1 if self.narrow_range else 0)

    @property
    def qmax(self) -> int:
        return (self.qtype.qmax + 1) // 2 - 1 if self.reduce_range else self.qtype.qmax

    def to_dict(self) -> dict[str, Any]:
        gran: dict[str, Any] = {"kind": type(self.granularity).__name__}
        gran.update(vars(self.granularity))
        return {
            "qtype": self.qtype.value,
            "symmetry": self.symmetry.value,
            "granularity": gran,
            "narrow_range": self.narrow_range,
            "reduce_range": self.reduce_range,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantSpec:
        known = {"qtype", "symmetry", "granularity", "narrow_range", "reduce_range"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"unknown QuantSpec keys {sorted(unknown)}; known keys: {sorted(known)}"
            )
        gran = dict(data.get("granularity", {"kind": "PerTensor"}))
        kinds = {"PerTensor": PerTensor, "PerChannel": PerChannel, "PerGroup": PerGroup}
        kind = gran.pop("kind", "PerTensor")
        if kind not in kinds:
            raise ConfigError(f"unknown granularity {kind!r}; use one of {sorted(kinds)}")
        try:
            return cls(
                qtype=QType(data.get("qtype", "int8")),
                symmetry=Symmetry(data.get("symmetry", "symmetric")),
                granularity=kinds[kind](**gran),
                narrow_range=bool(data.get("narrow_range", False)),
                reduce_range=bool(data.get("reduce_range", False)),
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"invalid QuantSpec {data}: {exc}") from None
