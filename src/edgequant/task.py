"""A training task: a trained FP32 torch model with its data, as `edgequant qat` and
`edgequant compare` take it from a user's code (`--task module:function`).

The function returns a `TrainingTask`, or a tuple `(model, train)` / `(model, train, test)`;
data are any iterables of (inputs, labels) batches: `eq.ArrayDataset`, a torch `DataLoader`, a
list of pairs. The built-in Fashion-MNIST task (`edgequant.zoo.tasks:fashion_mnist`) is written
the same way.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.data import ArrayDataset, split_item
from edgequant.errors import ConfigError, DataError

BUILTIN = "edgequant.zoo.tasks:fashion_mnist"
CALIBRATION_SAMPLES = 500


@dataclass(frozen=True)
class TrainingTask:
    """`model`: trained FP32 nn.Module (not changed: QAT works on a copy). `train`: labelled
    batches for QAT. `test`: labelled batches for accuracy (optional). `calibration`: batches for
    the PTQ warm start (default: the first 500 training samples). `example_input`: one input
    batch for the ONNX export (default: the first training sample)."""

    model: Any
    train: Iterable[Any]
    test: Iterable[Any] | None = None
    calibration: Iterable[Any] | None = None
    example_input: Any = None

    def __post_init__(self) -> None:
        import torch

        if not isinstance(self.model, torch.nn.Module):
            raise ConfigError(
                f"the task's model is a {type(self.model).__name__}, not a torch.nn.Module"
            )
        if self.calibration is None or self.example_input is None:
            first = _first_samples(self.train, CALIBRATION_SAMPLES)
            if self.calibration is None:
                object.__setattr__(self, "calibration", ArrayDataset(first, None, 100))
            if self.example_input is None:
                object.__setattr__(self, "example_input", torch.from_numpy(first[:1].copy()))


def _first_samples(batches: Iterable[Any], count: int) -> np.ndarray:
    taken: list[np.ndarray] = []
    seen = 0
    for item in batches:
        x, _ = split_item(item)
        arr = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
        taken.append(arr[: count - seen])
        seen += len(taken[-1])
        if seen >= count:
            break
    if not taken:
        raise DataError("the task's training data is empty")
    return np.concatenate(taken).astype(np.float32, copy=False)


def load_task(entry: str = BUILTIN) -> TrainingTask:
    """Call `module:function` (the current directory is importable) and return its task."""
    module_name, sep, func_name = entry.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"--task wants module:function (e.g. mytrain:make_task), got {entry!r}")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {module_name!r} for --task ({exc}); run from the folder that holds it "
            "or install it"
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ConfigError(f"{module_name!r} has no function {func_name!r}")
    result = func()
    if isinstance(result, TrainingTask):
        return result
    if isinstance(result, tuple) and len(result) in (2, 3):
        return TrainingTask(*result)
    raise ConfigError(
        f"{entry} returned a {type(result).__name__}: return an edgequant.TrainingTask or a "
        "tuple (model, train_batches[, test_batches])"
    )
