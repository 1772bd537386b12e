"""What `prepare_qat` knows about a prepared model, kept beside it instead of patched onto it.

A prepared model is an ordinary `nn.Module` the user trains as usual; its QAT state (the config,
the layers left in float, how many samples warm-started its ranges) lives in this typed record,
found by `qat_state(model)`. The registry holds models weakly: a model that is dropped takes its
state with it.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from edgequant.errors import ConfigError
from edgequant.qat.config import QATConfig


@dataclass(frozen=True)
class QATState:
    """`config`: how the model was prepared. `float_layers`: module name -> why it stays in
    float. `calibration_samples`: samples the PTQ warm start observed (0 without one)."""

    config: QATConfig
    float_layers: Mapping[str, str] = field(default_factory=dict)
    calibration_samples: int = 0


_STATES: weakref.WeakKeyDictionary[nn.Module, QATState] = weakref.WeakKeyDictionary()


def attach(model: nn.Module, state: QATState) -> None:
    _STATES[model] = state


def qat_state(model: nn.Module) -> QATState:
    """The QAT state of a model returned by `eq.prepare_qat`."""
    state = _STATES.get(model)
    if state is None:
        raise ConfigError(
            f"this {type(model).__name__} was not prepared for QAT: call eq.prepare_qat(model, "
            "config) and train the model it returns"
        )
    return state
