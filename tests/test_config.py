"""Configuration: validation on construction, JSON round trip, unknown keys rejected."""

from __future__ import annotations

import json

import pytest

import edgequant as eq
from edgequant.config import ACTIVATIONS_UINT8, Target, default_activations
from edgequant.errors import ConfigError


@pytest.mark.parametrize(
    "config",
    [
        eq.PTQConfig.int8(),
        eq.PTQConfig.int8(per_channel=False, calibrator=eq.Calibrator.ENTROPY),
        eq.PTQConfig.dynamic(),
        eq.PTQConfig.fp16(),
        eq.PTQConfig.int4(block_size=64, symmetric=False),
    ],
)
def test_config_round_trips_through_json(config: eq.PTQConfig) -> None:
    again = eq.PTQConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.to_dict() == config.to_dict()


def test_unknown_keys_are_errors() -> None:
    data = eq.PTQConfig.int8().to_dict() | {"per_chanel": True}
    with pytest.raises(ConfigError, match="per_chanel"):
        eq.PTQConfig.from_dict(data)


@pytest.mark.parametrize(
    "kwargs", [{"percentile": 20.0}, {"num_bins": 3}, {"max_calibration_samples": 0}]
)
def test_invalid_values_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        eq.PTQConfig.int8(**kwargs)


def test_group_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ConfigError, match="power of two"):
        eq.PTQConfig.int4(block_size=48)


def test_x86_and_arm_default_to_uint8_activations() -> None:
    """ORT's integer CPU kernels are u8 x s8; s8 activations ran 1.7-2x slower (see the demo)."""
    for target in (Target.X86_VNNI, Target.X86, Target.ARM64):
        assert default_activations(target) == ACTIVATIONS_UINT8
    assert eq.PTQConfig.int8().activation_spec == ACTIVATIONS_UINT8
