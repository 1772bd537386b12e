"""The metric contract: what `evaluate` (and the reports built on it) measure a model by.

A metric sees every batch's outputs by name and the batch's targets (class ids, boxes, masks,
sequences: whatever the data carries) and gives one number at the end, in its own units and
direction, so that a budget can be said in them ("at most 0.5 mAP points"). Any object with
this shape is a metric (`Metric` is a Protocol); a plain function `f(outputs, targets) -> float`
over the whole set is one too, through `FunctionMetric`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import ConfigError, DataError

Outputs = Mapping[str, NDArray[Any]]


@runtime_checkable
class Metric(Protocol):
    """A streaming task metric: `reset()`, then `update(outputs, targets)` per batch (outputs
    by output name; targets as the data gives them, None for unlabelled data), then
    `result()`. `name`, `units` ("%", "mAP points", "dB", ...) and `higher_is_better` say how
    to read and compare the number."""

    @property
    def name(self) -> str: ...

    @property
    def units(self) -> str: ...

    @property
    def higher_is_better(self) -> bool: ...

    def reset(self) -> None: ...

    def update(self, outputs: Outputs, targets: Any) -> None: ...

    def result(self) -> float: ...


@dataclass(frozen=True)
class MetricValue:
    """A metric's result as reports show it."""

    name: str
    value: float
    units: str
    higher_is_better: bool


def measured(metric: Metric) -> MetricValue:
    return MetricValue(metric.name, float(metric.result()), metric.units, metric.higher_is_better)


@dataclass
class FunctionMetric:
    """A user's function `fn(outputs, targets) -> float`, called once on the whole set: the
    batches' outputs concatenated along axis 0 by name, and the targets concatenated (or a
    list of them when they cannot be). Holds every output in memory; write a `Metric` with
    `update`/`result` to stream a large set."""

    fn: Callable[[Outputs, Any], float]
    name: str = ""
    units: str = ""
    higher_is_better: bool = True
    _outputs: dict[str, list[NDArray[Any]]] = field(default_factory=dict, repr=False)
    _targets: list[Any] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.name = self.name or getattr(self.fn, "__name__", "metric")
        self.units = self.units or str(getattr(self.fn, "units", ""))
        self.higher_is_better = bool(getattr(self.fn, "higher_is_better", self.higher_is_better))

    def reset(self) -> None:
        self._outputs, self._targets = {}, []

    def update(self, outputs: Outputs, targets: Any) -> None:
        for name, value in outputs.items():
            self._outputs.setdefault(name, []).append(np.asarray(value))
        self._targets.append(targets)

    def result(self) -> float:
        outputs = {k: np.concatenate(v) for k, v in self._outputs.items()}
        targets: Any = None
        if any(t is not None for t in self._targets):
            try:
                targets = np.concatenate([np.asarray(t) for t in self._targets])
            except ValueError:
                targets = self._targets
        return float(self.fn(outputs, targets))


def pick_output(outputs: Outputs, name: str | None) -> NDArray[Any]:
    """Output `name`, or the model's first output."""
    if name is None:
        return np.asarray(next(iter(outputs.values())))
    if name not in outputs:
        raise DataError(f"the model has no output {name!r} (outputs: {', '.join(outputs)})")
    return np.asarray(outputs[name])


def need_targets(targets: Any, metric: str) -> NDArray[Any]:
    """The targets as an array; a clear error when the data carries none."""
    if targets is None:
        raise DataError(f"{metric} needs targets: give data that carries them (.npz 'targets')")
    return np.asarray(targets)


def as_metric(metric: Metric | Callable[[Outputs, Any], float]) -> Metric:
    """A `Metric` as is; a function wrapped in `FunctionMetric`."""
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return FunctionMetric(metric)
    raise ConfigError(f"not a metric: {metric!r} (give a Metric or a function(outputs, targets))")


def load_metric(spec: str) -> Metric:
    """A metric by name (`edgequant.metrics.BUILT_IN`) or `module:attribute` (a Metric, a
    Metric class or factory taking no argument, or a function(outputs, targets) -> float);
    the module is looked up in the working directory first (`edgequant.user_code`)."""
    from edgequant.metrics.registry import BUILT_IN

    if spec in BUILT_IN:
        return BUILT_IN[spec]()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        names = ", ".join(sorted(BUILT_IN))
        raise ConfigError(f"unknown metric {spec!r}: give one of {names}, or module:function")
    from edgequant.user_code import (
        import_own_dependencies,
        import_user_module,
        user_folder_importable,
    )

    import_own_dependencies(("numpy", "onnx", "onnxruntime"))
    with user_folder_importable():
        try:
            found = getattr(import_user_module(module_name, "--metric"), attr)
            if isinstance(found, type):
                found = found()
        except ConfigError:
            raise
        except Exception as exc:  # the user's module or class failed: say so in one line
            raise ConfigError(f"cannot load metric {spec!r}: {exc}") from None
    return as_metric(found)
