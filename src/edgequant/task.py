"""A training task: a trained FP32 torch model with its data, as `edgequant qat` and
`edgequant compare` take it from a user's code (`--task module:function`).

The function returns a `TrainingTask`, or a tuple `(model, train)` / `(model, train, test)`;
data are any iterables of (inputs, labels) batches: `eq.ArrayDataset`, a torch `DataLoader`, a
list of pairs. The built-in Fashion-MNIST task (`edgequant.zoo.tasks:fashion_mnist`) is written
the same way.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgequant.data import ArrayDataset, split_item
from edgequant.errors import ConfigError, DataError, TaskError
from edgequant.user_code import import_own_dependencies, import_user_module, user_folder_importable

BUILTIN = "edgequant.zoo.tasks:fashion_mnist"
CALIBRATION_SAMPLES = 500


@dataclass(frozen=True)
class TrainingTask:
    """`model`: trained FP32 nn.Module (not changed: QAT works on a copy). `train`: labelled
    batches for QAT. `test`: labelled batches for accuracy (optional). `calibration`: batches for
    the PTQ warm start (default: the first 500 training samples). `example_input`: one input
    batch for the ONNX export (default: the first training sample). `loss`: loss(outputs,
    labels) -> batch-mean loss for QAT; the default, cross-entropy, is for a model with one
    output of class scores (a model with several outputs needs its own)."""

    model: Any
    train: Iterable[Any]
    test: Iterable[Any] | None = None
    calibration: Iterable[Any] | None = None
    example_input: Any = None
    loss: Any = None

    def __post_init__(self) -> None:
        import torch

        if not isinstance(self.model, torch.nn.Module):
            raise ConfigError(
                f"the task's model is a {type(self.model).__name__}, not a torch.nn.Module"
            )
        if self.calibration is None or self.example_input is None:
            # A shuffling DataLoader draws its order from torch's global generator: seed it (in
            # a forked state, the user's own is left as it was) so that the default calibration
            # set, and with it the QAT model, is the same in every run.
            with torch.random.fork_rng():
                torch.manual_seed(0)
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
    """Call `module:function` and return its task.

    This runs the user's code (that is what `--task` is for). Only the module named is imported
    from the current folder, and only after edgequant's own dependencies are imported, so a file
    there named like one of them (onnxruntime.py, torch.py) is never run in their place. The
    folder is importable while the module loads and its function runs (for its own sibling
    imports), then no more."""
    result = call_user_function(entry, "--task", example="mytrain:make_task")
    if isinstance(result, TrainingTask):
        task = result
    elif isinstance(result, tuple) and len(result) in (2, 3):
        task = TrainingTask(*result)
    else:
        raise ConfigError(
            f"{entry} returned a {type(result).__name__}: return an edgequant.TrainingTask or a "
            "tuple (model, train_batches[, test_batches])"
        )
    _check_runs(task, entry)
    return task


def call_user_function(entry: str, option: str, example: str = "mymodels:build") -> Any:
    """Import `module:function` (from the current folder first, only after edgequant's own
    dependencies, so that a file there named like one of them is never run in their place) and
    call it with no arguments; its failure is the user's traceback and one line naming
    `option`. The folder is importable while the module loads and its function runs (for its
    own sibling imports), then no more."""
    module_name, sep, func_name = entry.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"{option} wants module:function (e.g. {example}), got {entry!r}")
    import_own_dependencies(("numpy", "onnx", "onnxruntime", "torch"))
    with user_folder_importable():
        try:
            module = import_user_module(module_name, option)
        except ConfigError:
            raise
        except Exception as exc:
            raise _task_failure(module_name, exc, option) from None
        func = getattr(module, func_name, None)
        if not callable(func):
            raise ConfigError(f"{module_name!r} has no function {func_name!r}")
        try:
            return func()
        except Exception as exc:
            raise _task_failure(entry, exc, option) from None


def _task_failure(entry: str, exc: Exception, option: str = "--task") -> TaskError:
    """The user's traceback (their frames only) as details, and one summary line."""
    frames = [
        f for f in traceback.extract_tb(exc.__traceback__)
        if "/edgequant/" not in f.filename.replace("\\", "/")
    ]  # fmt: skip
    details = "".join(
        [
            f"Traceback of your {option} code (most recent call last):\n",
            *traceback.format_list(frames),
            *traceback.format_exception_only(type(exc), exc),
        ]
    )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return TaskError(
        f"{option} {entry} failed: {type(exc).__name__}: {first} (your code's traceback is above)",
        details,
    )


def _check_runs(task: TrainingTask, entry: str) -> None:
    """Run the task's model once on its example input: a model that does not fit its own data
    is the user's mistake, said in one line, not a traceback from deep inside training."""
    import torch

    was_training = task.model.training
    task.model.eval()
    try:
        with torch.no_grad():
            task.model(task.example_input)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shape = tuple(getattr(task.example_input, "shape", ()))
        raise TaskError(
            f"--task {entry}: the model does not run on its own data (input shape {shape}): "
            f"{type(exc).__name__}: {first}"
        ) from None
    finally:
        task.model.train(was_training)
