"""ONNX Runtime sessions and input feeds checked against the model's inputs."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray

from edgequant.batching import BatchAxes, count, infer_batch_axes, take
from edgequant.errors import DataError, ModelError, user_error
from edgequant.model import Model
from edgequant.runtime.runtimes import Runtime, open_session

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
    batch_axis: int | None = 0  # where its samples lie; None: fed whole (a scalar, a constant)


def make_session(
    model: Model | bytes,
    threads: int | None = None,
    optimization: Optimization = Optimization.ALL,
    lean: bool = False,
    runtime: Runtime | None = None,
) -> Any:
    """An ONNX Runtime CPU session (or one of `runtime`: another execution provider, OpenVINO;
    `edgequant.runtime.runtimes`); `threads` intra-op threads (None: the runtime's default).

    `lean`: no memory arena and no memory pattern, for sessions that run a few batches and are
    dropped (calibration, the fidelity guard's builds). An arena keeps its largest allocation for
    the session's life and the allocator keeps it after: quantizing EfficientNet-Lite2 peaked at
    739 MB added with arenas, 342 MB without, in the same time."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # failures come back as exceptions, said in one line
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads is not None:
        opts.intra_op_num_threads = threads
    if lean:
        opts.enable_cpu_mem_arena = False
        opts.enable_mem_pattern = False
    if optimization is Optimization.NONE:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    data = model.serialize() if isinstance(model, Model) else model
    if runtime is not None and not runtime.is_default:
        shapes = (
            model if isinstance(model, Model) else Model(onnx.load_from_string(data))
        ).input_shapes
        try:
            return open_session(data, runtime, threads, opts, shapes)
        except ModelError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise ModelError(f"{runtime.label} cannot load the model: {first}") from None
    try:
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ModelError(f"ONNX Runtime cannot load the model: {first}") from None


def input_specs(session: Any, batch_axes: BatchAxes | None = None) -> list[InputSpec]:
    """The session's inputs with their batch axes (read from the symbolic dimensions,
    `batch_axes` overriding them; see `edgequant.batching`)."""
    inputs = session.get_inputs()
    names = {i.name for i in inputs}
    overrides = {k: v for k, v in (batch_axes or {}).items() if k in names}
    axes = infer_batch_axes({i.name: tuple(i.shape) for i in inputs}, overrides)
    return [
        InputSpec(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, np.float32), axes[i.name])
        for i in inputs
    ]


def axes_of_specs(specs: list[InputSpec]) -> dict[str, int | None]:
    return {s.name: s.batch_axis for s in specs}


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
        if not isinstance(want, int) or want <= 0 or got == want:
            continue
        if i == spec.batch_axis and got > 0 and got % want == 0:
            continue  # a fixed batch axis: run_feed feeds it `want` samples at a time
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


def fixed_batch(specs: list[InputSpec]) -> int | None:
    """The batch size B a model was exported with (an input fixed at B fixes all), or None."""
    sizes = {s.shape[s.batch_axis] for s in specs if s.batch_axis is not None}
    numbers = {n for n in sizes if isinstance(n, int) and n > 0}
    return numbers.pop() if len(numbers) == 1 else None


def split_for_fixed_batch(
    feed: dict[str, NDArray[Any]], specs: list[InputSpec]
) -> list[dict[str, NDArray[Any]]]:
    """A model exported with a fixed batch size B gets a batch of k*B as k feeds of B (each
    input split along its own batch axis)."""
    fixed = fixed_batch(specs)
    axes = axes_of_specs(specs)
    n = count(feed, axes)
    if fixed is None or n == fixed or n % fixed:
        return [feed]
    return [take(feed, axes, i, i + fixed) for i in range(0, n, fixed)]


def _fmt(shape: tuple[int | str | None, ...]) -> str:
    return "(" + ", ".join(str(d) if d not in (None, "") else "?" for d in shape) + ")"


def run_feed(
    session: Any,
    feed: dict[str, NDArray[Any]],
    specs: list[InputSpec],
    outputs: list[str] | None = None,
) -> list[NDArray[Any]]:
    """Run one batch; a model with a fixed batch size B runs B samples at a time, concatenated."""
    parts = split_for_fixed_batch(feed, specs)
    if len(parts) == 1:
        return run_session(session, outputs, parts[0])
    runs = [run_session(session, outputs, part) for part in parts]
    return [np.concatenate(chunk) for chunk in zip(*runs, strict=True)]


def run_session(
    session: Any, outputs: list[str] | None, feed: Mapping[str, NDArray[Any]]
) -> list[NDArray[Any]]:
    """`session.run`, with ONNX Runtime's failures said in one line: out of memory (what to do
    about it), or the node that failed on this data."""
    try:
        return list(session.run(outputs, dict(feed)))
    except Exception as exc:
        mapped = user_error(exc)
        if mapped is not None:
            raise mapped from None
        text = str(exc).strip()
        first = text.split("Status Message:")[-1].strip().splitlines()[0][:300] if text else ""
        node = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
        where = f" at node {node.group(2)!r} ({node.group(1)})" if node else ""
        engine = "OpenVINO" if type(session).__name__ == "OpenVINOSession" else "ONNX Runtime"
        raise ModelError(f"{engine} failed running the model{where}: {first}") from None
