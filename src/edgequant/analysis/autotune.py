"""Accuracy-driven mixed precision: the smallest model within an accuracy budget.

Given a ladder of precisions (smallest first, e.g. INT4 < INT8 < FP32) and a maximum top-1 drop
(optionally a size and a latency budget), choose a precision per weighted layer:

1. Uniform: every layer at one rung, from the smallest up, until one meets the accuracy budget
   (rung u). If that is the smallest rung, it is the answer.
2. Sensitivity: for each layer, the model with only that layer lowered to rung u-1 (the rest at
   u); layers are ranked by its output SQNR against FP32, lowest (most sensitive) first. These
   trials are independent: they fan out on Ray when it is there (`trials.Backend`).
3. Search: binary search for the fewest most-sensitive layers kept at rung u (the others at u-1)
   that meet the budget; accuracy falls as layers are lowered, so this takes log2(layers) trials.
4. Refine: try lowering each kept layer, least sensitive first, keeping every change that stays
   within budget.

This is the accuracy-aware fallback of NNCF and Intel Neural Compressor, guided by the same
per-layer sensitivity `edgequant analyze` reports, with two differences users asked for: every
trial that meets all budgets and is smaller than the best so far is written to disk at once
(model and report), so a time or trial budget or Ctrl-C always leaves the best model found; and
every trial is recorded in the report with what it measured.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgequant.analysis.trials import Backend, Measured, TrialRunner
from edgequant.config import Method, Precision, PTQConfig
from edgequant.errors import ConfigError, DataError
from edgequant.metrics.base import MetricValue
from edgequant.model import Model
from edgequant.outputs import resolve_output_dir
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import SupportBrief, TuneTrial

LADDER = tuple(Precision)  # smallest to most accurate


@dataclass(frozen=True)
class TuneConfig:
    """Budgets and search space of `tune`.

    max_accuracy_drop: how far below FP32 the task metric may fall, in its units: top-1 points
        by default (0.5 = half a point), mAP points with metric "map", dB with "psnr"; for a
        metric where lower is better (MSE, an error rate), how far above.
    metric: the task metric (`edgequant.metrics`): a built-in name ("map", "miou", ...) or
        "module:function"; None: top-1 of a classifier (the first output, class-id labels).
    max_size_bytes / max_latency_ratio: optional; latency is quantized / FP32 median at
        `latency_batch`, timed one model at a time in this process.
    time_budget_s / max_trials: the search stops before a trial that would start past either.
    precisions: the ladder, a subset of INT4 < INT8 < INT16 < FP16 < FP32.
    ptq: the base static config (granularity, calibrator, algorithms such as AdaRound).
    """

    max_accuracy_drop: float = 0.5
    metric: str | None = None
    max_size_bytes: int | None = None
    max_latency_ratio: float | None = None
    latency_batch: int = 1
    time_budget_s: float = 600.0
    max_trials: int = 100
    precisions: tuple[Precision, ...] = (Precision.INT4, Precision.INT8, Precision.FP32)
    ptq: PTQConfig = field(default_factory=PTQConfig.int8)
    backend: Backend = Backend.AUTO
    workers: int = 2

    def __post_init__(self) -> None:
        ladder = tuple(Precision(p) for p in self.precisions)
        if len(ladder) < 2 or len(set(ladder)) != len(ladder):
            raise ConfigError("precisions needs at least two different precisions")
        object.__setattr__(self, "precisions", tuple(sorted(ladder, key=LADDER.index)))
        if self.max_accuracy_drop < 0:
            raise ConfigError("max_accuracy_drop must be >= 0 (in the metric's units)")
        if self.time_budget_s <= 0 or self.max_trials < 1:
            raise ConfigError("the time budget and max_trials must be positive")
        if self.max_latency_ratio is not None and self.max_latency_ratio <= 0:
            raise ConfigError("max_latency_ratio must be positive")
        if self.max_size_bytes is not None and self.max_size_bytes <= 0:
            raise ConfigError("max_size_bytes must be positive")
        if self.ptq.method is not Method.STATIC:
            raise ConfigError("tuning builds on static quantization: give a static PTQConfig")
        if not isinstance(self.backend, Backend) or self.workers < 1:
            raise ConfigError("backend must be a Backend and workers at least 1")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            precisions=[p.value for p in self.precisions],
            ptq=self.ptq.to_dict(),
            backend=self.backend.value,
        )
        return data


@dataclass(frozen=True)
class Trial:
    """One candidate: its per-layer precisions and what it measured."""

    index: int
    stage: str
    precisions: dict[str, str]  # layer -> precision value
    top1: float | None  # None with a task metric (`metric`)
    drop_points: float
    agreement: float | None  # None where the output holds no class scores
    sqnr_db: float
    size_bytes: int
    latency_ratio: float | None
    accurate: bool  # within the accuracy budget
    within: bool  # within every budget
    elapsed_s: float  # since the start of the run
    metric: float | None = None  # the task metric (TuneConfig.metric), in its units

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.precisions.values():
            out[p] = out.get(p, 0) + 1
        return out


@dataclass
class TuneResult:
    """Every trial, the best (smallest within all budgets) and why the search stopped."""

    config: TuneConfig
    reference_top1: float | None  # None with a task metric
    fp32_size_bytes: int
    samples: int
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    stop_reason: str = "running"
    seconds: float = 0.0
    best_path: Path | None = None
    best_support: SupportBrief | None = None  # operator support of the best model
    reference_metric: MetricValue | None = None  # FP32's task metric (TuneConfig.metric)

    def sentence(self) -> str:
        if self.best is None:
            return (
                f"No candidate met every budget in {len(self.trials)} trials ({self.stop_reason})."
            )
        b = self.best
        mix = ", ".join(f"{n} {p}" for p, n in sorted(b.counts().items()))
        if self.reference_metric is not None and b.metric is not None:
            m = self.reference_metric
            worse = "below" if m.higher_is_better else "above"
            better = "above" if m.higher_is_better else "below"
            task = (
                f"{m.name} {b.metric:.4g} {m.units} ({abs(b.drop_points):.4g} "
                f"{worse if b.drop_points >= 0 else better} FP32 {m.value:.4g})"
            )
        else:
            assert self.reference_top1 is not None and b.top1 is not None
            task = (
                f"top-1 {100 * b.top1:.2f}% ({abs(b.drop_points):.2f} points "
                f"{'below' if b.drop_points >= 0 else 'above'} FP32 "
                f"{100 * self.reference_top1:.2f}%)"
            )
        return (
            f"Best: {mix} layers; {100 * b.size_bytes / self.fp32_size_bytes:.1f}% of FP32 size, "
            f"{task}, found in trial {b.index} of {len(self.trials)}; stopped: "
            f"{self.stop_reason}."
        )

    def task_label(self) -> str:
        """What the drop is measured in, for reports: "top-1 points", "mAP50-95 (mAP points)"."""
        m = self.reference_metric
        if m is None:
            return "top-1 points"
        return f"{m.name} ({m.units})" if m.units else m.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "reference_top1": self.reference_top1,
            "reference_metric": None
            if self.reference_metric is None
            else asdict(self.reference_metric),
            "fp32_size_bytes": self.fp32_size_bytes,
            "samples": self.samples,
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
            "best": asdict(self.best) if self.best else None,
            "best_path": str(self.best_path) if self.best_path else None,
            "best_support": None if self.best_support is None else self.best_support.to_dict(),
            "sentence": self.sentence(),
            "trials": [asdict(t) for t in self.trials],
        }


class _Stop(Exception):
    """A budget ran out before the next trial."""


def tune(
    model: Model,
    config: TuneConfig | None = None,
    *,
    calibration: Iterable[Any],
    data: Iterable[Any],
    out_dir: str | Path,
    progress: ProgressFn = silent,
) -> TuneResult:
    """Search per-layer precisions of `model` for the smallest model within `config`'s budgets.

    `data` is (inputs, targets) batches: class ids for top-1, or what `config.metric` reads
    (boxes for mAP, ...); a validation set of a few thousand samples (kept in memory with the
    FP32 outputs). The best model so far is always in
    `out_dir/model.tuned.onnx` with `tune.md`/`tune.json`/`tune.png` beside it; a Ctrl-C ends
    the search and returns the result with stop_reason "interrupted".
    """
    from edgequant.ptq.static import calibrate_static
    from edgequant.report.tune import write_tune_report
    from edgequant.runtime.scoring import Scorer

    config = config or TuneConfig()
    folder = Path(out_dir)
    resolve_output_dir(folder)
    start = time.perf_counter()
    calibrated = calibrate_static(model, config.ptq, calibration, progress)
    scorer = Scorer(calibrated.fp32, data, metric=config.metric)
    if scorer.reference_top1 is None and scorer.reference_metric is None:
        raise DataError(
            "tuning needs labelled data (inputs and labels) to measure the accuracy drop"
        )
    layers = [n.name for n in calibrated.weighted_nodes()]
    result = TuneResult(config, scorer.reference_top1, calibrated.fp32.size_bytes, scorer.samples)
    result.reference_metric = scorer.reference_metric
    search = _Search(config, calibrated, scorer, layers, result, folder, start, progress, model)
    try:
        search.prepare_rounding()
        search.run()
        result.stop_reason = "search finished"
    except _Stop as stop:
        result.stop_reason = str(stop)
    except KeyboardInterrupt:
        result.stop_reason = "interrupted"
    finally:
        search.runner.close()
    result.seconds = time.perf_counter() - start
    with deferred_interrupt():
        write_tune_report(result, folder)
    return result


@contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C until the block is done (then raise it): writing the best model and its
    report must not stop half-way, nor leave a half-imported plotting library behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


class _Search:
    def __init__(
        self,
        config: TuneConfig,
        calibrated: Any,
        scorer: Any,
        layers: list[str],
        result: TuneResult,
        folder: Path,
        start: float,
        progress: ProgressFn,
        source: Model,
    ) -> None:
        self.config, self.calibrated, self.layers = config, calibrated, layers
        self.result, self.folder, self.start, self.progress = result, folder, start, progress
        self.runner = TrialRunner(calibrated, scorer, config.backend, config.workers)
        self.seen: dict[tuple[str, ...], Trial] = {}
        self.source_sha256 = hashlib.sha256(source.serialize()).hexdigest()

    # The search ----------------------------------------------------------------------------
    def run(self) -> None:
        ladder = self.config.precisions
        upper = None
        for rung, precision in enumerate(ladder):
            if self.trials([self.uniform(precision)], f"uniform {precision.value}")[0].accurate:
                upper = rung
                break
        if upper is None or upper == 0:
            return
        low, high = ladder[upper - 1], ladder[upper]
        jobs = [{**self.uniform(high), name: low} for name in self.layers]
        scored = self.trials(jobs, f"sensitivity {low.value}")
        ranked = [n for _, n in sorted(zip((t.sqnr_db for t in scored), self.layers, strict=True))]
        lo, hi = 0, len(ranked)  # lo kept layers fail (uniform low), hi pass (uniform high)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.trials([self.keep(ranked[:mid], low, high)], "search")[0].accurate:
                hi = mid
            else:
                lo = mid
        kept = list(ranked[:hi])
        for name in reversed(ranked[:hi]):  # least sensitive first
            trial = self.trials([self.keep([k for k in kept if k != name], low, high)], "refine")
            if trial[0].accurate:
                kept.remove(name)

    def uniform(self, precision: Precision) -> dict[str, Precision]:
        return dict.fromkeys(self.layers, precision)

    def keep(self, kept: list[str], low: Precision, high: Precision) -> dict[str, Precision]:
        return {name: (high if name in kept else low) for name in self.layers}

    def prepare_rounding(self) -> None:
        """AdaRound every layer at every integer rung now, so trials (and Ray workers) reuse it."""
        from edgequant.config import Rounding
        from edgequant.exporter.precision import weight_template
        from edgequant.ptq.static import aim_for_target

        if self.config.ptq.rounding is not Rounding.ADAROUND:
            return
        nodes = self.calibrated.weighted_nodes()
        rungs = [p for p in self.config.precisions if p.quantized]
        for i, node in enumerate(nodes):
            for p in rungs:
                self.calibrated.round_weight(
                    node, aim_for_target(weight_template(self.config.ptq, p), node, self.config.ptq)
                )
            self.progress("adaptive rounding", i + 1, len(nodes))

    # Trials ----------------------------------------------------------------------------------
    def trials(self, jobs: list[dict[str, Precision]], stage: str) -> list[Trial]:
        """Measure `jobs` (cached: a precision map is measured once), record and save."""
        keys = [self._key(job) for job in jobs]
        todo = list(
            {key: job for job, key in zip(jobs, keys, strict=True) if key not in self.seen}.values()
        )
        if len(self.result.trials) + len(todo) > self.config.max_trials:
            raise _Stop(f"trial budget ({self.config.max_trials}) reached")
        local = self.runner.backend is Backend.LOCAL
        for chunk in [[job] for job in todo] if local else [todo]:
            if time.perf_counter() - self.start > self.config.time_budget_s:
                raise _Stop(f"time budget ({self.config.time_budget_s:.0f} s) reached")
            for job, m in zip(chunk, self.runner.map(chunk), strict=True):
                self._record(job, m, stage)
        return [self.seen[key] for key in keys]

    def _key(self, job: dict[str, Precision]) -> tuple[str, ...]:
        return tuple(job[n].value for n in self.layers)

    def _record(self, job: dict[str, Precision], m: Measured, stage: str) -> None:
        config, result = self.config, self.result
        task = result.reference_metric
        if task is not None and m.metric is not None:  # in the metric's units, worse is positive
            drop = (task.value - m.metric) * (1 if task.higher_is_better else -1)
        else:
            assert result.reference_top1 is not None and m.top1 is not None
            drop = 100 * (result.reference_top1 - m.top1)
        accurate = drop <= config.max_accuracy_drop + 1e-9
        fits = config.max_size_bytes is None or m.size_bytes <= config.max_size_bytes
        best = result.best
        smaller = best is None or m.size_bytes < best.size_bytes
        latency = None
        if config.max_latency_ratio is not None and accurate and fits and smaller:
            latency = self._latency_ratio(job)
        fast = config.max_latency_ratio is None or (
            latency is not None and latency <= config.max_latency_ratio
        )
        trial = Trial(
            len(result.trials) + 1, stage, {n: job[n].value for n in self.layers},
            m.top1, drop, m.agreement, m.sqnr_db, m.size_bytes, latency,
            accurate, accurate and fits and fast, time.perf_counter() - self.start, m.metric,
        )  # fmt: skip
        result.trials.append(trial)
        self.seen[self._key(job)] = trial
        self.progress("tuning trials", len(result.trials), None)
        if trial.within and smaller:
            self._save_best(trial, job)

    def _save_best(self, trial: Trial, job: dict[str, Precision]) -> None:
        """Rebuild the model (deterministic) and write it and the report, atomically."""
        from edgequant.analysis.support import check_support
        from edgequant.ptq.static import quantize_calibrated
        from edgequant.report.tune import write_tune_report

        model = quantize_calibrated(self.calibrated, precisions=job)
        assert model.provenance is not None
        model.provenance.source_sha256 = self.source_sha256
        model.provenance.tune = TuneTrial(trial.index, trial.drop_points)
        model.provenance.support = check_support(model, self.config.ptq.target).brief()
        path = self.folder / "model.tuned.onnx"
        with deferred_interrupt():
            model.save(path)
            self.result.best, self.result.best_path = trial, path
            self.result.best_support = model.provenance.support
            self.result.seconds = time.perf_counter() - self.start
            write_tune_report(self.result, self.folder)

    def _latency_ratio(self, job: dict[str, Precision]) -> float:
        from edgequant.ptq.static import quantize_calibrated
        from edgequant.runtime.benchmark import benchmark

        model = quantize_calibrated(self.calibrated, precisions=job)
        batch = self.config.latency_batch
        fp32, cand = benchmark(
            [self.calibrated.fp32, model], batch_sizes=(batch,), threads=(2,), rounds=3,
            memory=False,
        )  # fmt: skip
        return cand.at(batch, 2).p50_ms / fp32.at(batch, 2).p50_ms
