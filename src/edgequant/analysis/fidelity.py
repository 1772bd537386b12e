"""The fidelity guard: no quantized model collapses silently.

After quantizing, samples held back from calibration run through the FP32 and the quantized model
in ONNX Runtime and every output is measured: SQNR and cosine against FP32, and top-1 agreement
where the output holds class scores ((batch, classes)). When an output falls below the
thresholds, the layers behind it are found and promoted (16-bit activations where the target has
kernels for them, else float) until the thresholds hold or a time budget is spent; what was
promoted and the fidelity reached go into the model's provenance.

Culprits are found by group testing over the quantized nodes in graph order: for each half of a
group, the model with only that half quantized is measured, and the search descends into the
noisier half, 2 log2(nodes) builds per culprit where ranking every node on its own (`edgequant
analyze`) costs two builds per node. Noise from independent quantizers adds in power (Nagel et
al. 2021, "A White Paper on Neural Network Quantization", sec. 3.1), so the noisier half holds
the largest contributor; the whole model is measured again after each promotion.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

from edgequant.choices import Precision
from edgequant.errors import ConfigError, NothingToQuantizeError
from edgequant.metrics.fidelity import OutputFidelity, compare, scores_output
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import FidelityBrief

if TYPE_CHECKING:
    from edgequant.model import Model

REPORT_LIMIT_DB = 999.0  # SQNR of identical outputs (infinite) as recorded in JSON
QUICK = 16  # samples the culprit search ranks candidates on (the thresholds use them all)
# samples per ONNX Runtime run: 8 EfficientNet-Lite2 images at a time made the guard the peak
# of its quantize (475 MB added), 4 keep it under calibration's (400 MB) in the same time
RUN = 4


@dataclass(frozen=True)
class FidelityGuard:
    """Thresholds and budget of the guard (`quantize(..., guard=FidelityGuard(...))`).

    min_sqnr_db: every float output's SQNR against FP32 must reach this (15 dB: the output's
        noise is 3% of its power; default INT8 CNNs and encoders measure 20-35 dB).
    min_agreement: top-1 agreement with FP32 of every class-score output.
    samples: samples measured (held back from calibration when the data has more than the
        calibration uses, else its first ones).
    time_budget_s: the search for culprits stops when it is spent.
    max_promoted_share: at most this share of the quantized nodes is promoted.
    """

    min_sqnr_db: float = 15.0
    min_agreement: float = 0.95
    samples: int = 64
    time_budget_s: float = 60.0
    max_promoted_share: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ConfigError("min_agreement must be in [0, 1] (a share of samples)")
        if self.samples < 1 or self.time_budget_s < 0:
            raise ConfigError("the guard needs at least one sample and a time budget >= 0")
        if not 0.0 <= self.max_promoted_share <= 1.0:
            raise ConfigError("max_promoted_share must be in [0, 1]")


def passes(m: OutputFidelity, guard: FidelityGuard) -> bool:
    """Whether one output meets the guard's thresholds."""
    return m.sqnr_db >= guard.min_sqnr_db and (
        m.agreement is None or m.agreement >= guard.min_agreement
    )


class Probe:
    """The FP32 outputs of the guard's samples, computed once; `measure` runs a candidate."""

    def __init__(
        self,
        reference: Model,
        feeds: list[dict[str, NDArray[Any]]],
        axes: dict[str, int | None],
    ) -> None:
        from edgequant.batching import count, take
        from edgequant.runtime.session import fixed_batch, input_specs, make_session

        if not feeds:
            raise ConfigError("the fidelity guard needs samples to measure on")
        sess = make_session(reference, lean=True)
        self.specs = input_specs(sess, axes)
        self.names = [o.name for o in sess.get_outputs()]
        self.classes = {name: scores_output(reference, name) for name in self.names}
        self.samples = sum(count(f, axes) for f in feeds)
        fixed = fixed_batch(self.specs) is not None
        # runs of RUN samples (a model exported at a fixed batch runs its batches): ONNX Runtime's
        # memory for 64 images at once was 1.2 GB on EfficientNet-Lite2
        self.feeds = feeds if fixed else [
            take(f, axes, i, i + RUN) for f in feeds for i in range(0, count(f, axes), RUN)
        ]  # fmt: skip
        # the culprit search ranks candidates on the first QUICK samples (a whole fixed batch)
        self.quick = [feeds[0]] if fixed else self.feeds[: QUICK // RUN]
        self.reference = self._run(sess, self.feeds)
        self.quick_reference = (
            self._run(sess, self.quick) if fixed else self.reference[: len(self.quick)]
        )

    def measure(self, model: Model, quick: bool = False) -> tuple[OutputFidelity, ...]:
        """Every output of `model` against FP32; `quick`: on the first samples only."""
        feeds, refs = (self.quick, self.quick_reference) if quick else (self.feeds, self.reference)
        outs = self._run(model, feeds)
        return tuple(
            compare(name, [o[i] for o in outs], [r[i] for r in refs], self.classes[name])
            for i, name in enumerate(self.names)
        )

    def _run(
        self, model: Model | Any, feeds: list[dict[str, NDArray[Any]]]
    ) -> list[list[NDArray[Any]]]:
        """`model`'s outputs on `feeds` (a Model, or a session already made)."""
        from edgequant.model import Model
        from edgequant.runtime.session import make_session, run_feed

        sess = make_session(model, lean=True) if isinstance(model, Model) else model
        return [run_feed(sess, feed, self.specs, self.names) for feed in feeds]


@dataclass
class Search:
    """What the guard did: measured before and after, and the nodes promoted."""

    before: tuple[OutputFidelity, ...]
    after: tuple[OutputFidelity, ...]
    promoted: dict[str, Precision] = field(default_factory=dict)
    stopped: str = ""  # why the search ended before the thresholds held


def promote_culprits(
    guard: FidelityGuard,
    probe: Probe,
    nodes: Sequence[str],
    build: Callable[[frozenset[str], dict[str, Precision]], Model],
    fallback: Precision,
    first: Model,
    progress: ProgressFn = silent,
) -> tuple[Model, Search]:
    """Promote culprit nodes of `nodes` (quantized, in graph order) to `fallback` until every
    output passes `guard`. `build(exclude, promoted)` makes the model with `exclude` in float
    and `promoted` at their precision; `first` is the model with nothing promoted."""
    start = time.monotonic()
    before = probe.measure(first)
    search = Search(before, before)
    current = first
    cap = max(1, math.ceil(guard.max_promoted_share * len(nodes))) if nodes else 0
    failing = [i for i, m in enumerate(before) if not passes(m, guard)]

    def left() -> bool:
        return time.monotonic() - start < guard.time_budget_s

    def badness(exclude: frozenset[str]) -> float:
        try:
            model = build(exclude, search.promoted)
        except NothingToQuantizeError:
            return 0.0
        measured = probe.measure(model, quick=True)
        return max(measured[i].noise_ratio for i in failing)

    def worst(measured: Sequence[OutputFidelity]) -> float:
        return max(measured[i].noise_ratio for i in failing)

    tried: set[str] = set()  # promoted once without lowering the noise: kept quantized
    while any(not passes(m, guard) for m in search.after):
        if len(search.promoted) >= cap:
            search.stopped = f"{len(search.promoted)} node(s) promoted, the most allowed"
            break
        group = [n for n in nodes if n not in search.promoted and n not in tried]
        if not group:
            search.stopped = "no node left whose promotion lowers the noise"
            break
        while len(group) > 1 and left():
            halves = (group[: len(group) // 2], group[len(group) // 2 :])
            noisy = [badness(frozenset(nodes) - set(h)) for h in halves]
            group = halves[0] if noisy[0] >= noisy[1] else halves[1]
            progress("finding the layers that lose fidelity", len(search.promoted), cap)
        if len(group) != 1 or not left():
            search.stopped = f"the time budget ({guard.time_budget_s:g} s) was spent"
            break
        # a culprit by the bisection may still gain nothing once promoted (a residual Add
        # whose output the next layer quantizes again): then it stays quantized
        candidate = {**search.promoted, group[0]: fallback}
        model = build(frozenset(), candidate)
        measured = probe.measure(model)
        if worst(measured) >= worst(search.after):
            tried.add(group[0])
            continue
        search.promoted, current, search.after = candidate, model, measured
    return current, search


def brief(
    guard: FidelityGuard, probe_samples: int, held_back: bool, search: Search
) -> FidelityBrief:
    """The provenance record of a guarded quantization (no timings: sidecars are
    deterministic)."""
    return FidelityBrief(
        samples=probe_samples,
        held_back=held_back,
        min_sqnr_db=guard.min_sqnr_db,
        min_agreement=guard.min_agreement,
        sqnr_db={m.output: _finite(m.sqnr_db) for m in search.after},
        sqnr_db_before={m.output: _finite(m.sqnr_db) for m in search.before},
        agreement={m.output: m.agreement for m in search.after if m.agreement is not None},
        promoted={k: v.value for k, v in search.promoted.items()},
        met=all(passes(m, guard) for m in search.after),
        stopped=search.stopped,
        cosine={m.output: round(m.cosine, 6) for m in search.after if math.isfinite(m.cosine)},
    )


def _finite(db: float) -> float:
    if math.isnan(db):
        return -REPORT_LIMIT_DB
    return max(-REPORT_LIMIT_DB, min(REPORT_LIMIT_DB, round(db, 2)))
