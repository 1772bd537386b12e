"""Built-in metrics for sequences, language models and embeddings: CTC character and word error
rate (edit distance by rapidfuzz, a maintained C++ implementation), token-normalised perplexity,
and retrieval recall@k of embeddings. Each is a `metrics.base.Metric`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgequant.errors import DataError, DependencyError
from edgequant.metrics.base import Outputs, need_targets, pick_output


def ctc_greedy(scores: NDArray[Any], blank: int = 0, time_axis: int = 1) -> list[list[int]]:
    """Best-path CTC decoding: the arg-max class per step, repeats collapsed, blanks dropped.
    `scores` (N, T, C) with `time_axis` 1, or (T, N, C) with 0, as CTC models export them."""
    best = np.asarray(scores).argmax(-1)
    if time_axis == 0:
        best = best.T
    out = []
    for row in best:
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        out.append([int(c) for c in row[keep & (row != blank)]])
    return out


@dataclass
class ErrorRate:
    """CTC error rate in % (lower is better): the edit distance between each greedy-decoded
    sequence and its target, summed, over the targets' total length. Targets: (N, L) class ids,
    padded with values < 0. `words=True` (WER) compares words, split at the `space` class id;
    else characters (CER), one per class id."""

    blank: int = 0
    time_axis: int = 1
    words: bool = False
    space: int | None = None
    output: str | None = None
    units: str = "%"
    higher_is_better: bool = False
    _errors: int = 0
    _length: int = 0

    def __post_init__(self) -> None:
        if self.words and self.space is None:
            raise DataError("word error rate needs the class id of the space (space=...)")

    @property
    def name(self) -> str:
        return "WER" if self.words else "CER"

    def reset(self) -> None:
        self._errors = self._length = 0

    def update(self, outputs: Outputs, targets: Any) -> None:
        try:
            from rapidfuzz.distance import Levenshtein
        except ImportError:
            raise DependencyError(
                "error rates need rapidfuzz: pip install 'edgequant[text]'"
            ) from None
        found = ctc_greedy(pick_output(outputs, self.output), self.blank, self.time_axis)
        want = need_targets(targets, self.name)
        if want.ndim != 2 or len(want) != len(found):
            raise DataError(
                f"{self.name} targets are (N, L) class ids padded with -1, one row per "
                f"sequence; got {want.shape} for {len(found)} sequences"
            )
        for got, row in zip(found, want, strict=True):
            truth = [int(c) for c in row if c >= 0]
            a, b = (self._words(truth), self._words(got)) if self.words else (truth, got)
            self._errors += int(Levenshtein.distance(a, b))
            self._length += len(a)

    def _words(self, ids: list[int]) -> list[tuple[int, ...]]:
        words: list[tuple[int, ...]] = []
        word: list[int] = []
        for c in ids:
            if c == self.space:
                words += [tuple(word)] if word else []
                word = []
            else:
                word.append(c)
        return words + ([tuple(word)] if word else [])

    def result(self) -> float:
        return 100.0 * self._errors / self._length if self._length else float("nan")


@dataclass
class Perplexity:
    """Token-normalised perplexity exp(mean negative log-likelihood) of a language model's
    next-token logits (N, T, V) against target token ids (N, T) (already shifted: target t is
    the token after position t); ids equal to `ignore_index` (padding) do not count. Lower is
    better."""

    ignore_index: int = -100
    output: str | None = None
    name: str = "perplexity"
    units: str = ""
    higher_is_better: bool = False
    _nll: float = 0.0
    _tokens: int = 0

    def reset(self) -> None:
        self._nll, self._tokens = 0.0, 0

    def update(self, outputs: Outputs, targets: Any) -> None:
        logits = pick_output(outputs, self.output).astype(np.float64)
        ids = need_targets(targets, self.name).astype(np.int64)
        if logits.shape[:-1] != ids.shape:
            raise DataError(f"targets {ids.shape} do not match the logits {logits.shape}")
        keep = ids != self.ignore_index
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_probs, np.where(keep, ids, 0)[..., None], -1)[..., 0]
        self._nll -= float(picked[keep].sum())
        self._tokens += int(keep.sum())

    def result(self) -> float:
        return float(np.exp(self._nll / self._tokens)) if self._tokens else float("nan")


@dataclass
class RetrievalRecall:
    """Recall@k of embeddings in %: for each sample, whether one of its k nearest other samples
    (cosine similarity) has its label; the set is searched whole at the end. Targets: class ids."""

    k: int = 1
    output: str | None = None
    units: str = "%"
    higher_is_better: bool = True
    _embeddings: list[NDArray[Any]] = field(default_factory=list, repr=False)
    _labels: list[NDArray[Any]] = field(default_factory=list, repr=False)

    @property
    def name(self) -> str:
        return f"recall@{self.k}"

    def reset(self) -> None:
        self._embeddings, self._labels = [], []

    def update(self, outputs: Outputs, targets: Any) -> None:
        emb = pick_output(outputs, self.output)
        self._embeddings.append(emb.reshape(len(emb), -1).astype(np.float64))
        self._labels.append(need_targets(targets, self.name).reshape(-1))

    def result(self) -> float:
        if not self._embeddings:
            return float("nan")
        x, y = np.concatenate(self._embeddings), np.concatenate(self._labels)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        similarity = x @ x.T
        np.fill_diagonal(similarity, -np.inf)  # a sample is not its own neighbour
        nearest = np.argsort(-similarity, axis=1, kind="stable")[:, : self.k]
        return 100.0 * float((y[nearest] == y[:, None]).any(1).mean())
