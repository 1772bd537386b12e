"""Score many candidate models against one FP32 reference whose outputs are computed once.

`evaluate(model, data, reference=fp32)` runs both models per call; a search that builds dozens
of candidates (tuning) would run FP32 dozens of times. A `Scorer` keeps the FP32 outputs and the
labels of a small labelled set (a few thousand samples: outputs are held in memory) and is
picklable, so Ray workers can score with it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgequant.batching import count, take
from edgequant.data import split_item
from edgequant.errors import DataError
from edgequant.metrics.base import MetricValue, load_metric, measured
from edgequant.metrics.fidelity import compare, scores_output
from edgequant.model import Model
from edgequant.runtime.session import fixed_batch, input_specs, make_feed, make_session, run_feed

# input values per ONNX Runtime run when scoring: activations grow with the input, so a run of
# 224x224 images takes 5 of them at a time and 28x28 digits 1,337
RUN_ELEMENTS = 2**20


@dataclass(frozen=True)
class Score:
    """top1 in [0, 1] (None without labels, or with a task metric); agreement of top-1 with
    FP32; output SQNR against FP32 in dB; `metric`: the task metric's value in its own units
    (None without one)."""

    top1: float | None
    agreement: float | None  # None where the first output holds no class scores
    sqnr_db: float
    metric: float | None = None


class Scorer:
    """FP32 outputs (and targets, when the data has them) of `data`, for scoring candidates
    with one run each. `metric` (a built-in name or module:function, `edgequant.metrics`)
    scores the task; without it the first output is read as class scores (top-1)."""

    def __init__(
        self,
        reference: Model,
        data: Iterable[Any],
        threads: int | None = None,
        metric: str | None = None,
    ) -> None:
        self.threads = threads
        self.metric = metric
        self.batches: list[Any] = []
        self.labels: list[Any] = []
        labelled = True
        for item in data:
            batch, labels = split_item(item)
            self.batches.append(batch)
            labelled = labelled and labels is not None
            if labels is not None:
                self.labels.append(np.asarray(labels))
        if not self.batches:
            raise DataError("the evaluation data is empty")
        self.labelled = labelled
        outputs = self._outputs(reference)
        self.reference = [next(iter(o.values())) for o in outputs]
        # top-1 agreement only where the first output holds class scores (`metrics.fidelity`)
        self.scores = scores_output(reference, next(iter(outputs[0])))
        self.samples = sum(len(o) for o in self.reference)
        self.reference_metric: MetricValue | None = None
        self.reference_top1: float | None = None
        if metric is not None:
            self.reference_metric = self._task(outputs)
        elif labelled:
            self.reference_top1 = self._hits(self.reference) / self.samples

    def score(self, model: Model) -> Score:
        outputs = self._outputs(model)
        first = [next(iter(o.values())) for o in outputs]
        fidelity = compare("first", first, self.reference, self.scores)
        if self.metric is not None:
            task = self._task(outputs).value
            return Score(None, fidelity.agreement, fidelity.sqnr_db, task)
        top1 = self._hits(first) / self.samples if self.labelled else None
        return Score(top1, fidelity.agreement, fidelity.sqnr_db)

    def _task(self, outputs: list[dict[str, np.ndarray]]) -> MetricValue:
        assert self.metric is not None
        metric = load_metric(self.metric)
        metric.reset()
        for i, out in enumerate(outputs):
            metric.update(out, self.labels[i] if self.labelled else None)
        return measured(metric)

    def _outputs(self, model: Model) -> list[dict[str, np.ndarray]]:
        """Every output per batch, by name (only the first unless a task metric reads them).
        A lean session (no arena), and batches run a few samples at a time where a sample is
        large: `analyze` on EfficientNet-Lite2 held 5.4 GB running 128 images at once in every
        candidate's session."""
        sess = make_session(model, self.threads, lean=True)
        specs = input_specs(sess)
        names = [o.name for o in sess.get_outputs()]
        names = names if self.metric is not None else names[:1]
        axes = {s.name: s.batch_axis for s in specs}
        fixed = fixed_batch(specs) is not None
        out = []
        for b in self.batches:
            feed = make_feed(b, specs)
            total = count(feed, axes)
            per_sample = sum(
                a.size // max(total, 1) if axes[n] is not None else 0 for n, a in feed.items()
            )
            rows = total if fixed else max(1, RUN_ELEMENTS // max(per_sample, 1))
            parts = [
                run_feed(sess, take(feed, axes, i, i + rows), specs, names)
                for i in range(0, total, rows)
            ]
            out.append(
                {
                    name: np.concatenate([np.asarray(p[k]) for p in parts])
                    if len(parts) > 1
                    else np.asarray(parts[0][k])
                    for k, name in enumerate(names)
                }
            )
        return out

    def _hits(self, outputs: list[np.ndarray]) -> int:
        return sum(
            int((o.argmax(-1) == y).sum()) for o, y in zip(outputs, self.labels, strict=True)
        )
