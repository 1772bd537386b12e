"""Quantization under the fidelity guard (`analysis.fidelity`): static PTQ promotes the layers
that lose fidelity; the other methods are measured and warn."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from edgequant.analysis.fidelity import FidelityGuard, Probe, Search, brief, promote_culprits
from edgequant.choices import Precision
from edgequant.config import PTQConfig
from edgequant.errors import FidelityWarning
from edgequant.graph.index import GraphIndex
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent
from edgequant.provenance import FidelityBrief
from edgequant.targets import preset


def quantize_static_guarded(
    model: Model,
    config: PTQConfig,
    calibration: Iterable[Any],
    guard: FidelityGuard,
    progress: ProgressFn = silent,
) -> Model:
    """Static PTQ, then the guard: culprits promoted to the target's `promote_to` precision."""
    from edgequant.ptq.static import calibrate_static, quantize_calibrated

    cal = calibrate_static(model, config, calibration, progress, hold_back=guard.samples)
    probe = Probe(model, cal.held, cal.axes)
    index = GraphIndex.of(cal.fp32.proto.graph)
    nodes = [n.name for n in cal.selection(frozenset(), index).nodes]
    nodes += [n.name for n in cal.fp32.proto.graph.node if n.op_type == "LSTM"]  # int8 weights

    def build(exclude: frozenset[str], promoted: dict[str, Precision]) -> Model:
        return quantize_calibrated(cal, exclude, promoted)

    q, search = promote_culprits(
        guard, probe, nodes, build, preset(config.target).promote_to,
        quantize_calibrated(cal), progress,
    )  # fmt: skip
    return _record(q, guard, probe.samples, cal.held_back, search)


def measure_only(
    model: Model, q: Model, calibration: Iterable[Any] | None, guard: FidelityGuard
) -> Model:
    """Dynamic, FP16 and INT4 models measured on the first samples of `calibration` (when it
    can be read again: a one-shot iterator was used up by the method)."""
    from edgequant.ptq.calibrate import calibrate

    if calibration is None or iter(calibration) is calibration:
        return q
    held = calibrate(
        model, [], calibration, num_bins=128, max_samples=guard.samples, hold_back=guard.samples
    )
    probe = Probe(model, held.held, held.axes)
    measured = probe.measure(q)
    return _record(q, guard, probe.samples, False, Search(measured, measured))


def _record(q: Model, guard: FidelityGuard, samples: int, held_back: bool, search: Search) -> Model:
    record = brief(guard, samples, held_back, search)
    assert q.provenance is not None
    q.provenance.fidelity = record
    for node, precision in search.promoted.items():
        if node in q.provenance.float_nodes:
            q.provenance.float_nodes[node] = (
                f"promoted to {precision.value} by the fidelity guard (outputs below "
                f"{guard.min_sqnr_db:g} dB or {guard.min_agreement:.0%} top-1 agreement)"
            )
    if not record.met:
        warnings.warn(fidelity_advice(record), FidelityWarning, stacklevel=3)
    return q


def fidelity_advice(record: FidelityBrief) -> str:
    """The line a user reads when the thresholds do not hold: what, measured how, what to do."""
    return (
        f"{record.shortfall()}: {record.summary()}. Keep more layers in float (--exclude, "
        "--layer NODE=fp32; `edgequant analyze` ranks them), give the guard more time, "
        "or try another method"
    )
