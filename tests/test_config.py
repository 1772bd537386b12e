"""Configuration: validation on construction, JSON round trip, unknown keys rejected."""

from __future__ import annotations

import json

import pytest

import edgequant as eq
from edgequant.config import ACTIVATIONS_UINT8, Coverage, Target
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
        assert eq.PTQConfig.int8(target=target).activations == ACTIVATIONS_UINT8
    assert eq.PTQConfig.int8().activations == ACTIVATIONS_UINT8


@pytest.mark.parametrize("target", list(Target))
def test_a_preset_resolves_once_into_the_configs_own_fields(target: Target) -> None:
    """`int8(target=X)` and `for_target(X)` are the same config, and it states every fact of the
    preset itself: the sidecar means what it says whatever the table says later."""
    from edgequant.targets import preset

    config = eq.PTQConfig.int8(target=target)
    assert config == eq.PTQConfig.for_target(target) == eq.PTQConfig.for_target(target.value)
    p = preset(target)
    assert (config.weights, config.activations, config.coverage) == (
        p.weights, p.activations, p.coverage,
    )  # fmt: skip
    assert config.full_integer == p.full_integer
    assert config.per_tensor_weight_ops == tuple(sorted(p.per_tensor_weight_ops))
    data = config.to_dict()
    assert data["coverage"] == p.coverage.value and data["full_integer"] == p.full_integer
    assert eq.PTQConfig.from_dict(json.loads(json.dumps(data))) == config


def test_explicit_fields_win_over_the_preset() -> None:
    config = eq.PTQConfig.int8(target=Target.NPU, coverage=Coverage.WEIGHTED, full_integer=False)
    assert (config.coverage, config.full_integer) == (Coverage.WEIGHTED, False)
    assert eq.PTQConfig.from_dict(config.to_dict()) == config


def test_version_1_files_take_missing_fields_from_their_targets_preset() -> None:
    """Sidecars written before the preset was resolved into the config still load."""
    data = eq.PTQConfig.for_target(Target.NPU).to_dict()
    for key in ("full_integer", "per_tensor_weight_ops", "coverage"):
        del data[key]
    data["version"] = 1
    assert eq.PTQConfig.from_dict(data) == eq.PTQConfig.for_target(Target.NPU)


def test_every_module_imports_on_its_own() -> None:
    """No import cycle: each module of the package imports first, on its own. One interpreter
    (a subprocess, so the test's own imports do not count) forgets every edgequant module
    before each import; third-party packages stay loaded, which cannot hide a cycle of ours."""
    import pkgutil
    import subprocess
    import sys

    names = [m.name for m in pkgutil.walk_packages(eq.__path__, "edgequant.")]
    names = [n for n in names if not n.endswith("__main__")]
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'edgequant']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(name, type(exc).__name__, exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr[-500:]
