"""ONNX Runtime sessions and input feeds checked against the model's inputs."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import DataError, ModelError
from edgequant.model import Model

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class Optimization(enum.Enum):
    """ALL is what a deployment runs (fused integer kernels); NONE runs every node as written,
    which exposes intermediate tensors exactly (calibration, per-layer error analysis)."""

    ALL = "all"
    NONE = "none"


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: type[np.generic]


def make_session(
    model: Model | bytes, threads: int | None = None, optimization: Optimization = Optimization.ALL
) -> Any:
    """An ONNX Runtime CPU session; `threads` intra-op threads (None: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        opts.intra_op_num_threads = threads
    if optimization is Optimization.NONE:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.serialize() if isinstance(model, Model) else model
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ModelError(f"ONNX Runtime cannot load the model: {first}") from None


def input_specs(session: Any) -> list[InputSpec]:
    return [
        InputSpec(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, np.float32))
        for i in session.get_inputs()
    ]


def make_feed(
    batch: NDArray[Any] | Mapping[str, NDArray[Any]], specs: list[InputSpec]
) -> dict[str, NDArray[Any]]:
    """Check a batch (an array for single-input models, or a dict by input name) against the
    model's inputs and return the feed. Raises DataError naming the first mismatch."""
    if not isinstance(batch, Mapping):
        if len(specs) != 1:
            names = ", ".join(s.name for s in specs)
            raise DataError(
                f"the model has {len(specs)} inputs ({names}): give each batch as a dict by input name"
            )
        batch = {specs[0].name: batch}
    expected = {s.name for s in specs}
    if set(batch) != expected:
        raise DataError(
            f"data inputs {sorted(batch)} do not match the model's inputs {sorted(expected)}"
        )
    feed: dict[str, NDArray[Any]] = {}
    for spec in specs:
        feed[spec.name] = _check_array(np.asarray(batch[spec.name]), spec)
    return feed


def _check_array(arr: NDArray[Any], spec: InputSpec) -> NDArray[Any]:
    if arr.ndim != len(spec.shape):
        raise DataError(
            f"input {spec.name!r}: data has shape {arr.shape}, the model expects {len(spec.shape)} "
            f"dimensions {_fmt(spec.shape)}"
        )
    for i, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
        if isinstance(want, int) and want > 0 and got != want and not (i == 0 and want == 1):
            raise DataError(
                f"input {spec.name!r}: data has shape {arr.shape}, the model expects {_fmt(spec.shape)}"
            )
    if arr.dtype != spec.dtype:
        same_kind = np.issubdtype(arr.dtype, np.floating) == np.issubdtype(spec.dtype, np.floating)
        if not same_kind:
            raise DataError(
                f"input {spec.name!r}: data has dtype {arr.dtype}, the model expects {np.dtype(spec.dtype)}"
            )
        arr = arr.astype(spec.dtype)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise DataError(f"input {spec.name!r} holds NaN or Inf values: clean the data first")
    return arr


def split_for_fixed_batch(
    feed: dict[str, NDArray[Any]], specs: list[InputSpec]
) -> list[dict[str, NDArray[Any]]]:
    """A model exported with batch size 1 gets a batch of N as N single-sample feeds."""
    fixed_one = all(isinstance(s.shape[0], int) and s.shape[0] == 1 for s in specs if s.shape)
    n = len(next(iter(feed.values())))
    if not fixed_one or n == 1:
        return [feed]
    return [{k: v[i : i + 1] for k, v in feed.items()} for i in range(n)]


def _fmt(shape: tuple[int | str | None, ...]) -> str:
    return "(" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + ")"


def run_feed(
    session: Any,
    feed: dict[str, NDArray[Any]],
    specs: list[InputSpec],
    outputs: list[str] | None = None,
) -> list[NDArray[Any]]:
    """Run one batch; a model with a fixed batch size of 1 runs sample by sample, concatenated."""
    parts = split_for_fixed_batch(feed, specs)
    if len(parts) == 1:
        return session.run(outputs, parts[0])
    runs = [session.run(outputs, part) for part in parts]
    return [np.concatenate(chunk) for chunk in zip(*runs, strict=True)]
