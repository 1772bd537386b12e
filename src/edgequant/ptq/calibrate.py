"""One streaming pass of the FP32 model over calibration data, feeding the observers.

The model runs in ONNX Runtime with the observed tensors exposed as outputs and graph optimisation
off (every tensor exists as written). Batches are read one at a time and only fixed-size
histograms are kept, so peak memory does not grow with the number of samples.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.batching import count, take
from edgequant.data import as_batches, batch_axes_of
from edgequant.errors import CalibrationWarning, DataError
from edgequant.model import Model
from edgequant.observers import ChannelMean, HistogramObserver
from edgequant.progress import ProgressFn, silent
from edgequant.runtime.session import (
    Optimization,
    axes_of_specs,
    fixed_batch,
    input_specs,
    make_feed,
    make_session,
    run_session,
    split_for_fixed_batch,
)

DEGENERATE_SHARE = 0.5  # above this share of constant tensors, the data cannot be representative
# bytes of observed tensors one run may return: a batch whose activations are larger runs in
# sub-batches (a 480x640 text detector's 64-image batch needed 6.9 GB at once)
MEMORY_BUDGET = 256 * 2**20


def warn_if_degenerate(
    observers: Mapping[str, HistogramObserver],
    non_float: set[str],
    input_ranges: Mapping[str, tuple[float, float]],
) -> None:
    """Warn when the model's float inputs held one value each over the whole calibration set
    (all-zero images, a scaling that clipped everything), or most observed tensors did: the
    ranges then say nothing about real inputs and the quantized model will not keep its
    accuracy. (One constant input beside varying ones is normal: a zero initial state, a
    sample rate; `input_ranges` holds only inputs with more than one value per sample.)"""
    constant = [(name, lo) for name, (lo, hi) in input_ranges.items() if lo == hi]
    if constant and len(constant) == len(input_ranges):
        name, value = constant[0]
        warnings.warn(
            f"calibration input {name!r} holds the single value {value:g} in every sample: "
            "the ranges will not fit real inputs; calibrate on real, varied inputs",
            CalibrationWarning,
            stacklevel=3,
        )
        return
    ranges = [o for t, o in observers.items() if t not in non_float and o.max_val >= o.min_val]
    flat = sum(o.max_val == o.min_val for o in ranges)
    if ranges and flat / len(ranges) > DEGENERATE_SHARE:
        warnings.warn(
            f"{flat} of {len(ranges)} calibrated tensors held a single value over the whole "
            "calibration set (constant or all-zero data?): their ranges are empty and accuracy "
            "will suffer; calibrate on real, varied inputs",
            CalibrationWarning,
            stacklevel=3,
        )


def _update_ranges(
    ranges: dict[str, tuple[float, float]], feed: Mapping[str, NDArray[Any]]
) -> None:
    for name, arr in feed.items():
        if arr.dtype.kind == "f" and arr.ndim > 1 and arr[0].size > 1:
            lo, hi = float(arr.min()), float(arr.max())
            old = ranges.get(name, (lo, hi))
            ranges[name] = (min(lo, old[0]), max(hi, old[1]))


@dataclass
class _Budget:
    """Samples per run so that the observed tensors stay within `limit` bytes, measured once
    on one sample (a run whose outputs are discarded, so that the statistics do not depend on
    the measurement). A model with a fixed batch size runs its parts whole."""

    limit: int
    fixed: bool
    rows: int | None = None

    def runs(
        self, parts: list[dict[str, NDArray[Any]]], axes: Mapping[str, int | None]
    ) -> Iterator[dict[str, NDArray[Any]]]:
        for part in parts:
            n = count(part, axes)
            start = 0
            while start < n:
                size = n if self.fixed or self.rows is None else self.rows
                yield take(part, axes, start, min(n, start + size))
                start += size

    def measure(self, values: list[NDArray[Any]]) -> None:
        per_sample = sum(int(v.nbytes) for v in values)
        self.rows = max(1, self.limit // max(per_sample, 1))


@dataclass
class CalibrationResult:
    observers: dict[str, HistogramObserver]
    non_float: set[str]  # observed tensors that are not float32
    samples: int
    channel_means: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    kept: dict[str, NDArray[np.float32]] = field(default_factory=dict)  # first samples of `keep`
    # model inputs of the samples the fidelity guard measures on (`hold_back`), and whether they
    # came after the calibrated samples (True) or are the first calibrated ones (False)
    held: list[dict[str, NDArray[Any]]] = field(default_factory=list)
    held_back: bool = False
    axes: dict[str, int | None] = field(default_factory=dict)  # each input's batch axis
    # the `record` tensors of each run, whole (what `If` branches read: `ptq.bodies`)
    recorded: list[dict[str, NDArray[Any]]] = field(default_factory=list)


def calibrate(
    model: Model,
    tensors: list[str],
    data: Iterable[Any],
    *,
    num_bins: int,
    max_samples: int,
    histogram: bool = True,
    channel_means: tuple[str, ...] = (),
    keep: tuple[str, ...] = (),
    keep_samples: int = 0,
    statistics: Mapping[str, Any] | None = None,
    memory_budget: int = MEMORY_BUDGET,
    hold_back: int = 0,
    record: tuple[str, ...] = (),
    progress: ProgressFn = silent,
) -> CalibrationResult:
    """Run the model over `data` (batches), observe `tensors` and average `channel_means`
    per channel (axis 1, over every other axis) for bias correction, and keep the first
    `keep_samples` values of the tensors in `keep` (inputs AdaRound reconstructs from).
    `statistics` maps a tensor to a streaming statistic (anything with `update(array)`, e.g.
    `observers.FeatureGram`) fed with every float32 batch of it. A batch runs in sub-batches
    when its observed tensors would exceed `memory_budget` bytes (measured on its first sample):
    memory is bounded by the budget, not by the batch size the data came in.

    `hold_back`: the model inputs of that many samples are returned for the fidelity guard:
    the samples that follow the first `max_samples` when the data has them (held back from
    calibration), else the first calibrated ones; their inputs are kept within `memory_budget`."""
    graph_inputs = set(model.input_names)
    stats = dict(statistics or {})
    wanted = list(dict.fromkeys([*tensors, *channel_means, *keep, *stats, *record]))
    inner = [t for t in wanted if t not in graph_inputs]
    session = make_session(model.with_outputs(inner), optimization=Optimization.NONE)
    specs = input_specs(session, batch_axes_of(data))
    axes = axes_of_specs(specs)
    out_names = [o.name for o in session.get_outputs()]
    observers = {t: HistogramObserver(num_bins, histogram) for t in tensors}
    means = {t: ChannelMean() for t in channel_means}
    kept: dict[str, list[NDArray[np.float32]]] = {t: [] for t in keep}
    kept_samples = 0
    non_float: set[str] = set()
    input_ranges: dict[str, tuple[float, float]] = {}
    recorded: list[dict[str, NDArray[Any]]] = []
    recorded_bytes = 0
    samples = 0
    fixed = fixed_batch(specs)
    budget = _Budget(memory_budget, fixed is not None)
    stash = _Stash(hold_back, memory_budget, axes, fixed or 1)
    batches = as_batches(data)
    for batch in batches:
        feed = make_feed(batch, specs)
        stash.first(feed)
        _update_ranges(input_ranges, feed)
        n = min(count(feed, axes), max_samples - samples)
        if n < count(feed, axes):
            stash.after(take(feed, axes, n, count(feed, axes)))
        feed = take(feed, axes, 0, n)
        if budget.rows is None and not budget.fixed:
            budget.measure(run_session(session, out_names, take(feed, axes, 0, 1)))
        for part in budget.runs(split_for_fixed_batch(feed, specs), axes):
            values = dict(zip(out_names, run_session(session, out_names, part), strict=True))
            values.update(
                {
                    k: v
                    for k, v in part.items()
                    if k in observers or k in means or k in kept or k in stats or k in record
                }
            )
            if record and recorded_bytes < 4 * memory_budget:
                recorded.append({k: np.array(values[k]) for k in record})
                recorded_bytes += sum(v.nbytes for v in recorded[-1].values())
            room = keep_samples - kept_samples
            if room > 0:
                for name, parts in kept.items():
                    parts.append(np.array(values[name][:room], np.float32))
                kept_samples += min(room, count(part, axes))
            for name, stat in [*means.items(), *stats.items()]:
                if values[name].dtype == np.float32:
                    stat.update(values[name])
            for name, obs in observers.items():
                arr = values.pop(name)  # release each output as soon as it is observed
                if arr.dtype != np.float32:
                    non_float.add(name)
                    continue
                obs.update(arr, name)
            values.clear()  # nothing of this batch may stay alive while the next one runs
            arr = None
        del feed, batch
        samples += n
        progress("calibrating", samples, max_samples)
        if samples >= max_samples:
            break
    if samples == 0:
        raise DataError(
            "the calibration data is empty: give at least one batch (a few hundred samples is typical)"
        )
    warn_if_degenerate(observers, non_float, input_ranges)
    if samples >= max_samples:  # the samples after the calibrated ones, up to `hold_back`
        for batch in batches:
            if not stash.after(make_feed(batch, specs)):
                break
    held, held_back = stash.result()
    return CalibrationResult(
        observers,
        non_float,
        samples,
        {t: m.mean() for t, m in means.items() if m.count},
        {t: np.concatenate(p) for t, p in kept.items() if p},
        held,
        held_back,
        dict(axes),
        recorded,
    )


@dataclass
class _Stash:
    """Model inputs of up to `limit` samples for the fidelity guard: the first calibrated ones
    and those after the calibrated ones (preferred: held back), within `budget` bytes each;
    whole batches of `unit` samples for a model with a fixed batch size."""

    limit: int
    budget: int
    axes: Mapping[str, int | None]
    unit: int = 1
    firsts: list[dict[str, NDArray[Any]]] = field(default_factory=list)
    afters: list[dict[str, NDArray[Any]]] = field(default_factory=list)

    def first(self, feed: dict[str, NDArray[Any]]) -> None:
        self._add(self.firsts, feed)

    def after(self, feed: dict[str, NDArray[Any]]) -> bool:
        """Keep `feed`'s samples; False once no more are wanted."""
        return self._add(self.afters, feed)

    def result(self) -> tuple[list[dict[str, NDArray[Any]]], bool]:
        if self.afters and self._count(self.afters) * 2 >= self._room(self.afters):
            return self.afters, True
        return self.firsts, False

    def _add(self, parts: list[dict[str, NDArray[Any]]], feed: dict[str, NDArray[Any]]) -> bool:
        room = self._room(parts or [feed]) - self._count(parts)
        if room <= 0:
            return False
        n = min(room, count(feed, self.axes)) // self.unit * self.unit
        if n == 0:
            return room > 0
        parts.append({k: np.array(v) for k, v in take(feed, self.axes, 0, n).items()})
        return True

    def _room(self, parts: list[dict[str, NDArray[Any]]]) -> int:
        """`limit` samples, fewer when one sample's inputs are large."""
        if not parts or self.limit == 0:
            return self.limit
        one = take(parts[0], self.axes, 0, 1)
        per_sample = sum(int(np.asarray(v).nbytes) for v in one.values())
        return max(self.unit, min(self.limit, self.budget // max(per_sample, 1)))

    def _count(self, parts: list[dict[str, NDArray[Any]]]) -> int:
        return sum(count(p, self.axes) for p in parts)
