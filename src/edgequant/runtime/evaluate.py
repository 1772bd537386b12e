"""Accuracy on labelled data, agreement with the FP32 model, output SQNR and per-layer SQNR.

All figures come from running the models in ONNX Runtime.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sized
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from edgequant.data import split_item
from edgequant.errors import DataError
from edgequant.metrics.base import Metric, MetricValue, Outputs, as_metric, load_metric, measured
from edgequant.metrics.fidelity import OutputComparison, OutputFidelity, scores_output
from edgequant.model import Model
from edgequant.progress import ProgressFn, silent
from edgequant.runtime.runtimes import Runtime
from edgequant.runtime.session import Optimization, input_specs, make_feed, make_session, run_feed


@dataclass(frozen=True)
class EvalResult:
    """top1/top5 in [0, 1] (None without class-id labels or with a task `metric`); agreement
    and SQNR of the first output against the reference (agreement only where it holds class
    scores); `metric` and `reference_metric`: the task metric on the model and the reference;
    `outputs`: every output's fidelity to the reference."""

    samples: int
    top1: float | None
    top5: float | None
    agreement: float | None = None
    output_sqnr_db: float | None = None
    reference_top1: float | None = None
    metric: MetricValue | None = None
    reference_metric: MetricValue | None = None
    outputs: tuple[OutputFidelity, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(
    model: Model,
    data: Iterable[Any],
    *,
    reference: Model | None = None,
    metric: Metric | Callable[[Outputs, Any], float] | str | None = None,
    threads: int | None = None,
    progress: ProgressFn = silent,
    runtime: Runtime | None = None,
) -> EvalResult:
    """Run `model` (and `reference`, e.g. the FP32 model) over batches, each inputs or
    (inputs, targets).

    `metric` (a `Metric`, a function(outputs by name, targets) -> float over the whole set, or a
    built-in name such as "map"; `edgequant.metrics`) measures the task on both models. Without
    one, the first output is read as class scores and top-1/top-5 computed when the targets are
    class ids (a classifier). With a `reference`, every output is compared with the
    reference's (SQNR, cosine, largest error; top-1 agreement where it holds class scores).
    `runtime`: where both run (`runtime.runtimes`: an ONNX Runtime execution provider, or
    OpenVINO); ONNX Runtime's CPU by default."""
    sess = make_session(model, threads, runtime=runtime)
    ref = make_session(reference, threads, runtime=runtime) if reference is not None else None
    specs = input_specs(sess)
    ref_specs = input_specs(ref) if ref is not None else []
    names = [o.name for o in sess.get_outputs()]
    if ref is not None:
        _check_same_inputs(specs, ref_specs)
        _check_same_outputs(names, [o.name for o in ref.get_outputs()])
    task = _task_metric(metric)
    ref_task = copy.deepcopy(task) if task is not None and ref is not None else None
    judge = reference if reference is not None else model
    compared = [OutputComparison(name, scores_output(judge, name)) for name in names]
    hits1 = hits5 = ref_hits = n = 0
    labelled, many = True, False
    total = len(data) if isinstance(data, Sized) else None  # samples, for the progress bar
    for item in data:
        batch, targets = split_item(item)
        feed = make_feed(batch, specs)
        outs = dict(zip(names, run_feed(sess, feed, specs), strict=True))
        logits = np.asarray(outs[names[0]])
        labelled = labelled and targets is not None
        if task is not None:
            task.update(outs, targets)
        elif targets is not None:
            check_labels(targets, logits)
            hits1 += int((logits.argmax(-1) == targets).sum())
            hits5 += int(_topk_hits(logits, targets, 5))
            many = logits.shape[-1] > 5  # top-5 of five classes or fewer is always 1
        if ref is not None:
            ref_feed = feed if ref_specs == specs else _reference_feed(batch, ref_specs)
            ref_outs = dict(zip(names, run_feed(ref, ref_feed, ref_specs, names), strict=True))
            for acc in compared:
                acc.update(outs[acc.name], ref_outs[acc.name])
            if ref_task is not None:
                ref_task.update(ref_outs, targets)
            elif targets is not None and task is None:
                ref_hits += int((np.asarray(ref_outs[names[0]]).argmax(-1) == targets).sum())
        n += len(logits)
        progress("evaluating", n, total)
    if n == 0:
        raise DataError("the evaluation data is empty")
    fidelity = tuple(acc.result() for acc in compared) if ref is not None else ()
    classes = labelled and task is None
    return EvalResult(
        samples=n,
        top1=hits1 / n if classes else None,
        top5=hits5 / n if classes and many else None,
        agreement=fidelity[0].agreement if fidelity else None,
        output_sqnr_db=fidelity[0].sqnr_db if fidelity else None,
        reference_top1=ref_hits / n if ref is not None and classes else None,
        metric=measured(task) if task is not None else None,
        reference_metric=measured(ref_task) if ref_task is not None else None,
        outputs=fidelity,
    )


def _task_metric(metric: Metric | Callable[[Outputs, Any], float] | str | None) -> Metric | None:
    if metric is None:
        return None
    found = load_metric(metric) if isinstance(metric, str) else as_metric(metric)
    found.reset()
    return found


def _check_same_outputs(ours: list[str], theirs: list[str]) -> None:
    if ours != theirs:
        raise DataError(
            f"the reference model's outputs {theirs} differ from the model's {ours}: give the "
            "FP32 model this one was made from"
        )


def _reference_feed(batch: Any, specs: Any) -> dict[str, Any]:
    try:
        return make_feed(batch, specs)
    except DataError as exc:
        raise DataError(f"the reference model does not take this data: {exc}") from None


def _check_same_inputs(specs: Any, ref_specs: Any) -> None:
    ours = {s.name: s.shape for s in specs}
    theirs = {s.name: s.shape for s in ref_specs}
    if set(ours) != set(theirs):
        raise DataError(
            f"the reference model's inputs {sorted(theirs)} differ from the model's "
            f"{sorted(ours)}: give the FP32 model this one was made from"
        )


def check_labels(labels: np.ndarray, logits: np.ndarray) -> None:
    """Labels are class ids, one per prediction, in [0, classes): anything else would score
    as a silent 0% (the model's first output gives scores over its last axis)."""
    classes = logits.shape[-1]
    if labels.shape != logits.shape[:-1]:
        hint = (
            ": one-hot labels? give class ids (labels.argmax(-1))"
            if labels.shape == logits.shape
            else ""
        )
        raise DataError(
            f"labels have shape {labels.shape} but the model's first output {logits.shape} "
            f"needs one class id per row, shape {logits.shape[:-1]}{hint}"
        )
    if labels.dtype.kind not in "biu" and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise DataError("labels must be integer class ids, got fractional values")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(
            f"labels range over [{labels.min():g}, {labels.max():g}] but the model scores "
            f"{classes} classes (ids 0..{classes - 1}): fix the labels or the model"
        )


def _topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    k = min(k, logits.shape[-1])
    top = np.argpartition(-logits, k - 1, axis=-1)[..., :k]
    return int((top == labels[..., None]).any(-1).sum())


@dataclass(frozen=True)
class LayerError:
    """SQNR of one quantized activation against FP32, and the part its own node adds.

    Relative noise powers add (independent errors): with r = 10^(-SQNR/10), a node adds
    r_out - max(r_inputs). `own_sqnr_db` is -10 log10 of that: the SQNR the node would have on
    exact inputs. The lowest own SQNR names the layer losing most, not the layers downstream
    that merely inherit its error.
    """

    tensor: str
    node: str
    sqnr_db: float
    own_sqnr_db: float


def layer_sqnr(
    quantized: Model, reference: Model, data: Iterable[Any], *, max_batches: int = 4
) -> list[LayerError]:
    """Per-activation SQNR (dB) of `quantized` against the same tensors of `reference` (the FP32
    model after the same graph clean-up), in graph order.

    The quantized model runs with graph optimisation off so every DequantizeLinear output exists;
    the arithmetic is ONNX Runtime's own QuantizeLinear/DequantizeLinear.
    """
    ref_names = {o for n in reference.proto.graph.node for o in n.output} | set(
        reference.input_names
    )
    pairs = [(t, dq) for t, dq in _dq_pairs(quantized.proto) if t in ref_names]
    q_sess = make_session(
        quantized.with_outputs([dq for _, dq in pairs]), optimization=Optimization.NONE
    )
    r_sess = make_session(
        reference.with_outputs([t for t, _ in pairs]), optimization=Optimization.NONE
    )
    specs = input_specs(q_sess)
    sums = {t: [0.0, 0.0] for t, _ in pairs}
    for i, item in enumerate(data):
        if i >= max_batches:
            break
        feed = make_feed(split_item(item)[0], specs)
        q_out = dict(
            zip([o.name for o in q_sess.get_outputs()], run_feed(q_sess, feed, specs), strict=True)
        )
        r_out = dict(
            zip([o.name for o in r_sess.get_outputs()], run_feed(r_sess, feed, specs), strict=True)
        )
        for t, dq in pairs:
            ref = r_out[t].astype(np.float64)
            sums[t][0] += float(np.sum(ref**2))
            sums[t][1] += float(np.sum((ref - q_out[dq]) ** 2))
    sqnr = {
        t: 10 * float(np.log10(s / max(e, 1e-30))) if s > 0 else float("inf")
        for t, (s, e) in sums.items()
    }
    return _attribute_losses(quantized.proto, pairs, sqnr)


def _attribute_losses(
    proto: onnx.ModelProto, pairs: list[tuple[str, str]], sqnr: dict[str, float]
) -> list[LayerError]:
    original_of = {dq: t for t, dq in pairs}
    producer = {out: n for n in proto.graph.node for out in n.output}

    def noise(db: float) -> float:
        return float(10.0 ** (-db / 10.0))

    rows = []
    for t, _ in pairs:
        node = producer.get(t)
        upstream = [
            original_of[i] for i in (node.input if node is not None else []) if i in original_of
        ]
        added = noise(sqnr[t]) - max((noise(sqnr[u]) for u in upstream), default=0.0)
        own = -10.0 * float(np.log10(added)) if added > 0 else float("inf")
        name = node.name if node is not None else "(graph input)"
        rows.append(LayerError(t, name, sqnr[t], own))
    return rows


def _dq_pairs(proto: onnx.ModelProto) -> list[tuple[str, str]]:
    """(original activation name, its DequantizeLinear output) for every activation Q/DQ pair."""
    q_input = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    return [
        (q_input[n.input[0]], n.output[0])
        for n in proto.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in q_input
    ]


__all__ = ["EvalResult", "LayerError", "evaluate", "layer_sqnr"]
