"""Latency, throughput, peak memory and size in ONNX Runtime, models side by side.

Method (see ../shared/PEER-FINDINGS.md on why): only one session is alive at a time, variants are
interleaved round by round so that drifting machine load hits all of them alike, each round
warms up before timing, and we quote medians. Peak memory is measured in a fresh process per
model, so that one model's allocations never count against another.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgequant.errors import ModelError
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent
from edgequant.runtime.runtimes import Runtime
from edgequant.runtime.session import InputSpec, input_specs, make_session, run_session


@dataclass(frozen=True)
class Latency:
    batch: int
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    runs: int
    round_p50_ms: tuple[float, ...] = ()  # each interleaved round's median: the run-to-run noise

    def spread(self) -> tuple[float, float]:
        """p10 and p90 of the rounds' medians (ms): how much the median moved between rounds."""
        values = self.round_p50_ms or (self.p50_ms,)
        low, high = np.percentile(np.asarray(values), [10, 90]).tolist()
        return low, high

    @property
    def throughput(self) -> float:
        """Samples per second at the median latency."""
        return self.batch / (self.p50_ms / 1000.0)


@dataclass
class BenchResult:
    name: str
    size_bytes: int
    latency: list[Latency] = field(default_factory=list)
    peak_memory_mb: float | None = None

    def at(self, batch: int, threads: int) -> Latency:
        return next(x for x in self.latency if x.batch == batch and x.threads == threads)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for row, lat in zip(d["latency"], self.latency, strict=True):
            row["throughput"] = lat.throughput
        return d


def benchmark(
    models: Sequence[Model] | Model,
    *,
    batch_sizes: Sequence[int] = (1, 32),
    threads: Sequence[int] = (1, 2),
    rounds: int = 5,
    seconds_per_round: float = 0.25,
    warmup: int = 5,
    memory: bool = True,
    progress: ProgressFn = silent,
    runtime: Runtime | None = None,
) -> list[BenchResult]:
    """Measure every model at every (batch, threads) setting, interleaved; see module docstring.
    `runtime`: another ONNX Runtime execution provider or OpenVINO (`runtime.runtimes`); peak
    memory is probed on ONNX Runtime's CPU only."""
    memory = memory and (runtime is None or runtime.is_default)
    models = [models] if isinstance(models, Model) else list(models)
    results = [BenchResult(m.name, m.size_bytes) for m in models]
    settings = [(b, t) for t in threads for b in batch_sizes]
    total, done = len(settings) * rounds * len(models), 0
    for batch, n_threads in settings:
        times: list[list[float]] = [[] for _ in models]
        medians: list[list[float]] = [[] for _ in models]
        for _ in range(rounds):
            for i, model in enumerate(models):
                run = _time_session(model, batch, n_threads, seconds_per_round, warmup, runtime)
                times[i].extend(run)
                medians[i].append(float(np.median(run)) * 1000.0)
                done += 1
                progress("benchmarking", done, total)
        for res, ts, meds in zip(results, times, medians, strict=True):
            ms = np.asarray(ts) * 1000.0
            res.latency.append(
                Latency(batch, n_threads, *_percentiles(ms), runs=len(ms), round_p50_ms=tuple(meds))
            )
    if memory:
        for res, model in zip(results, models, strict=True):
            res.peak_memory_mb = session_peak_memory_mb(model, max(batch_sizes))
    return results


def _percentiles(ms: np.ndarray) -> tuple[float, float, float]:
    """p50, p90, p99 of the timings (ms)."""
    p50, p90, p99 = np.percentile(ms, [50, 90, 99]).tolist()
    return p50, p90, p99


def _time_session(
    model: Model,
    batch: int,
    threads: int,
    seconds: float,
    warmup: int,
    runtime: Runtime | None = None,
) -> list[float]:
    sess = make_session(model, threads, runtime=runtime)
    feed = random_feed(input_specs(sess), batch)
    for _ in range(warmup):
        run_session(sess, None, feed)  # a failure is said in one line before timing starts
    out = _timed_runs(sess, feed, seconds, 10)
    del sess
    return out


def _timed_runs(sess: Any, feed: dict[str, np.ndarray], seconds: float, least: int) -> list[float]:
    """Seconds of each run of `feed` for `seconds` (at least `least` runs)."""
    out: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(out) < least:
        t0 = time.perf_counter()
        sess.run(None, feed)
        out.append(time.perf_counter() - t0)
    return out


def latency_ratio(
    reference: Model,
    model: Model,
    feed: dict[str, np.ndarray],
    *,
    rounds: int = 3,
    seconds_per_round: float = 0.05,
) -> float:
    """p50 latency of `model` / p50 of `reference` on `feed` (one thread, interleaved rounds,
    one session each): a quick check, not a benchmark, that a quantized model is not slower
    than its FP32 one."""
    sessions = [make_session(m, 1) for m in (reference, model)]
    for sess in sessions:
        for _ in range(3):
            run_session(sess, None, feed)  # warm up; a failure is one line
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for sess, out in zip(sessions, times, strict=True):
            out.extend(_timed_runs(sess, feed, seconds_per_round, 5))
    return float(np.median(times[1]) / np.median(times[0]))


def random_feed(specs: list[InputSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the model's shapes (dynamic first dim = batch) with fixed-seed values."""
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = []
        for i, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim > 0:
                if i == 0 and dim != batch:
                    raise ModelError(
                        f"input {spec.name!r} has a fixed batch size of {dim}: benchmark it at batch {dim}"
                    )
                shape.append(dim)
            elif i == 0:
                shape.append(batch)
            else:
                raise ModelError(
                    f"input {spec.name!r} has a dynamic dimension {i}: give a model with fixed shapes beyond the batch"
                )
        if np.issubdtype(spec.dtype, np.floating):
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feed[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
    return feed


_PROBE = r"""
import json, sys
from pathlib import Path
from edgequant.runtime.session import make_session, input_specs
from edgequant.runtime.benchmark import random_feed

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0

data = open(sys.argv[1], "rb").read()
base = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak from here on is the session's
sess = make_session(data)
feed = random_feed(input_specs(sess), int(sys.argv[2]))
for _ in range(3):
    sess.run(None, feed)
print(json.dumps({"peak_mb": status("VmHWM") - base}))
"""


def session_peak_memory_mb(model: Model, batch: int) -> float:
    """Peak resident memory (MiB) added by creating a session and running a batch, in a fresh
    process (Linux: read from /proc; the import of onnxruntime is not counted)."""
    with tempfile.TemporaryDirectory(prefix="edgequant-") as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(model.serialize())
        out = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path), str(batch)],
            capture_output=True,
            text=True,
            check=False,
        )
    if out.returncode != 0:
        raise ModelError(
            f"memory probe failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
        )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"])
