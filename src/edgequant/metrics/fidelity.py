"""How closely one output of a model follows the same output of a reference (FP32), streamed
over batches: SQNR, cosine, largest absolute error, and top-1 agreement where the output holds
class scores. The fidelity guard and `evaluate` share it, so a figure means the same in both.

SQNR = 10 log10(sum r^2 / sum (r - o)^2) over every value of the output; cosine = <r, o> /
(|r| |o|) over the whole output flattened (one number for the set, not a mean of per-sample
cosines, so rows of zeros do not count as perfect).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from edgequant.model import Model


@dataclass(frozen=True)
class OutputFidelity:
    """One output of a model against the reference over the samples measured."""

    output: str
    sqnr_db: float  # -inf when the output holds NaN/Inf where the reference does not
    cosine: float
    agreement: float | None  # top-1 agreement, for class scores (batch, classes); exact match
    # for integer outputs (labels, indices)
    noise_ratio: float  # noise power / signal power (inf with NaN/Inf)
    max_abs_error: float = 0.0


@dataclass
class OutputComparison:
    """Running sums for one output; `scores`: the output may hold class scores (it is taken
    as such when every batch is (batch, classes) floats)."""

    name: str
    scores: bool = True
    signal: float = 0.0
    noise: float = 0.0
    dot: float = 0.0
    norm_out: float = 0.0
    agree: int = 0
    rows: int = 0
    max_error: float = 0.0
    broken: bool = False  # non-finite where the reference is finite
    classes: bool | None = None

    def update(self, out: NDArray, ref: NDArray) -> None:
        """Add one batch of the output (`out`) and the reference's (`ref`), same shapes."""
        if self.broken:
            return
        o, r = np.asarray(out, np.float64), np.asarray(ref, np.float64)
        is_scores = self.scores and r.ndim == 2 and r.shape[1] >= 2 and ref.dtype.kind == "f"
        self.classes = is_scores if self.classes is None else self.classes and is_scores
        if not np.isfinite(o).all() and np.isfinite(r).all():
            self.broken = True
            return
        self.signal += float(np.sum(r * r))
        self.noise += float(np.sum((r - o) ** 2))
        self.dot += float(np.sum(r * o))
        self.norm_out += float(np.sum(o * o))
        if r.size:
            self.max_error = max(self.max_error, float(np.max(np.abs(r - o))))
        if is_scores:
            self.agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
            self.rows += len(ref)
        elif ref.dtype.kind != "f":  # labels, indices: they must match exactly
            self.agree += int(np.sum(out == ref))
            self.rows += ref.size

    def result(self) -> OutputFidelity:
        if self.broken:
            return OutputFidelity(
                self.name, -math.inf, 0.0, 0.0 if self.classes else None, math.inf, math.inf
            )
        signal, noise = self.signal, self.noise
        ratio = noise / signal if signal > 0 else (0.0 if noise == 0 else math.inf)
        sqnr = (
            10 * math.log10(1 / ratio)
            if 0 < ratio < math.inf
            else (math.inf if ratio == 0 else -math.inf)
        )
        cosine = (
            self.dot / math.sqrt(signal * self.norm_out)
            if signal > 0 and self.norm_out > 0
            else float(noise == 0)
        )
        agreement = self.agree / self.rows if self.rows else None
        return OutputFidelity(self.name, sqnr, cosine, agreement, ratio, self.max_error)


# the last operators of a classifier head: its output holds class scores
_HEADS = frozenset({"Gemm", "MatMul", "Add", "Softmax", "LogSoftmax", "Sigmoid"})
_PASS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Cast"})


def scores_output(model: Model, name: str) -> bool:
    """Whether output `name` holds class scores, judged by what writes it: a linear head (or a
    softmax over one), through reshapes. An embedding (L2-normalised by a Div, pooled by a
    ReduceMean) is not: top-1 over its features would mean nothing."""
    producers = {o: n for n in model.proto.graph.node for o in n.output}
    node = producers.get(name)
    while node is not None and node.op_type in _PASS:
        node = producers.get(node.input[0])
    return node is not None and node.op_type in _HEADS


def compare(
    name: str, outs: list[NDArray], refs: list[NDArray], scores: bool = True
) -> OutputFidelity:
    """`OutputComparison` over whole lists of batches."""
    acc = OutputComparison(name, scores)
    for out, ref in zip(outs, refs, strict=True):
        acc.update(out, ref)
    return acc.result()
