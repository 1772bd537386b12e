"""Run independent quantization trials in this process or fanned out on Ray.

A trial builds the quantized model for one per-layer precision map from a shared calibration
(`ptq.static.Calibrated`) and scores it against the FP32 outputs (`runtime.scoring.Scorer`).
Building and scoring are deterministic, so a trial gives the same numbers wherever it runs: the
search asks for the same trials in the same order with either backend, only faster on Ray.
Latency is never measured here: timings of trials running side by side skew one another
(../shared/PEER-FINDINGS.md), so the tuner times candidates one at a time in the driver.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgequant.choices import Backend
from edgequant.config import Precision
from edgequant.errors import ConfigError

if TYPE_CHECKING:
    from edgequant.ptq.static import Calibrated
    from edgequant.runtime.scoring import Scorer


@dataclass(frozen=True)
class Measured:
    """What one trial measured on the model built from its precision map."""

    top1: float | None  # None with a task metric
    agreement: float | None  # None where the output holds no class scores
    sqnr_db: float
    size_bytes: int
    metric: float | None = None  # the task metric, in its units (TuneConfig.metric)


def measure(
    calibrated: Calibrated, scorer: Scorer, precisions: Mapping[str, Precision]
) -> Measured:
    """Build the model of `precisions` and score it (runs in a worker on Ray)."""
    from edgequant.ptq.static import quantize_calibrated

    model = quantize_calibrated(calibrated, precisions=precisions)
    score = scorer.score(model)
    return Measured(score.top1, score.agreement, score.sqnr_db, model.size_bytes, score.metric)


class TrialRunner:
    """Runs batches of trials in order; `map` returns results in the order of its jobs."""

    def __init__(self, calibrated: Calibrated, scorer: Scorer, backend: Backend, workers: int):
        self.calibrated, self.scorer = calibrated, scorer
        self.backend = _resolve(backend)
        self.workers = workers
        self._refs: tuple[Any, Any] | None = None
        self._started = False  # whether this runner started Ray (and so shuts it down)

    def map(self, jobs: Sequence[Mapping[str, Precision]]) -> list[Measured]:
        if self.backend is Backend.LOCAL or len(jobs) < 2:
            return [measure(self.calibrated, self.scorer, job) for job in jobs]
        import ray

        if self._refs is None:
            self._start(ray)
        remote = ray.remote(num_cpus=1)(measure)
        cal, scorer = self._refs  # type: ignore[misc]
        return list(ray.get([remote.remote(cal, scorer, dict(job)) for job in jobs]))

    def _start(self, ray: Any) -> None:
        if not ray.is_initialized():
            self._started = True
            address = os.environ.get("RAY_ADDRESS")
            ray.init(
                address=address,
                num_cpus=None if address else self.workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        self._refs = (ray.put(self.calibrated), ray.put(self.scorer))

    def close(self) -> None:
        """Shut down the local Ray this runner started (a cluster it joined keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started, self._refs = False, None


def _resolve(backend: Backend) -> Backend:
    if backend is Backend.LOCAL:
        return backend
    try:
        import ray  # noqa: F401
    except ImportError:
        if backend is Backend.RAY:
            raise ConfigError(
                "the Ray backend needs Ray: pip install 'edgequant[ray]' (or use --backend local)"
            ) from None
        return Backend.LOCAL
    return Backend.RAY
