"""Streaming range estimators for activations, with memory that does not grow with the data.

Every observer sees batches one at a time and keeps O(num_bins) state: a running min/max and a
fixed-size histogram. The histogram covers [-B, B) with B = bin_width * num_bins / 2; when a batch
falls outside, the bin width doubles and neighbouring bin pairs merge, which is exact because the
bins stay aligned on zero. The clipping-range searches then run on that histogram:

- min-max: the observed range;
- percentile: the range holding all but (100 - p)% of the non-zero values, split between tails;
- entropy: the threshold minimising KL(P || Q) between the clipped float histogram and its
  quantized version (Migacz, "8-bit Inference with TensorRT", GTC 2017);
- MSE: the threshold minimising the expected squared quantization error, clipping included
  (Banner et al. 2019, "Post-training 4-bit quantization ..." and Nagel et al. 2021, white paper).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from edgequant.config import Calibrator
from edgequant.errors import DataError
from edgequant.primitives import fake_quantize, scale_zero_point
from edgequant.spec import QuantSpec, Symmetry

TYPICAL_SAMPLE = 65536  # values per batch that estimate a tensor's typical magnitude


@dataclass
class HistogramObserver:
    """Running min/max plus a zero-aligned fixed-bin histogram of one tensor's values."""

    num_bins: int = 8192
    histogram: bool = True  # False: running min/max only (all the min-max calibrator needs)
    min_val: float = float("inf")
    max_val: float = float("-inf")
    bin_width: float = 0.0
    counts: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    log_abs_sum: float = 0.0  # sum of log|x| over the non-zero values: their typical magnitude
    nonzero: int = 0  # says whether a grid over [min, max] can hold them (`typical_magnitude`)

    @property
    def typical_magnitude(self) -> float:
        """Geometric mean of |x| over the non-zero values seen (0 when there were none): robust
        to the few large values that set the range, so it shows when most values are far
        below it (a spectrogram's powers span ten decades)."""
        return float(np.exp(self.log_abs_sum / self.nonzero)) if self.nonzero else 0.0

    def update(self, x: NDArray[np.floating], name: str = "tensor") -> None:
        """Add a batch of values (any shape)."""
        flat = np.asarray(x, dtype=np.float32).ravel()
        if flat.size == 0:
            return
        lo, hi = float(flat.min()), float(flat.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise DataError(
                f"tensor {name!r} holds NaN or Inf during calibration: check the calibration data "
                "(and the model's FP32 outputs) for non-finite values"
            )
        self.min_val, self.max_val = min(self.min_val, lo), max(self.max_val, hi)
        # the typical magnitude from an evenly strided sample of at most TYPICAL_SAMPLE values:
        # a logarithm per value cost 45x the min/max pass, and the estimate only has to tell
        # magnitudes a factor of 4 apart
        sample = flat[:: max(1, flat.size // TYPICAL_SAMPLE)]
        nonzero = np.abs(sample[sample != 0.0])
        self.log_abs_sum += float(np.log(nonzero, dtype=np.float64).sum())
        self.nonzero += int(nonzero.size)
        if not self.histogram:
            return
        half = self.num_bins // 2
        if self.counts.size == 0:
            amax = max(abs(lo), abs(hi)) or 1e-8
            self.bin_width = amax / half * 1.0000001  # so that amax lands inside the last bin
            self.counts = np.zeros(self.num_bins, np.int64)
        while max(abs(lo), abs(hi)) >= self.bin_width * half:
            self._double_width()
        # Exact zeros (half of every post-ReLU tensor) are representable on every grid and cost
        # nothing; kept out of the histogram they cannot dominate the KL/MSE searches.
        nonzero = flat[flat != 0.0]  # signed, for the histogram
        idx = (
            np.floor(nonzero / self.bin_width).astype(np.int64) + half
        )  # bin k covers [k w, (k+1) w)
        self.counts += np.bincount(np.clip(idx, 0, self.num_bins - 1), minlength=self.num_bins)

    def _double_width(self) -> None:
        """Merge bin pairs (2k', 2k'+1) -> k' around zero; exact because bins are zero-aligned."""
        half = self.num_bins // 2
        pairs = self.counts.reshape(-1, 2).sum(axis=1)  # (num_bins / 2,), covers [-2B, 2B) at 2w
        merged = np.zeros_like(self.counts)
        merged[half // 2 : half // 2 + half] = pairs
        self.counts, self.bin_width = merged, self.bin_width * 2.0

    @property
    def empty(self) -> bool:
        return self.min_val > self.max_val

    def edges(self) -> NDArray[np.float64]:
        """Bin edges, shape (num_bins + 1,)."""
        half = self.num_bins // 2
        return (np.arange(self.num_bins + 1, dtype=np.float64) - half) * self.bin_width

    def centres(self) -> NDArray[np.float64]:
        e = self.edges()
        return (e[:-1] + e[1:]) / 2.0


def clip_range(
    obs: HistogramObserver, calibrator: Calibrator, spec: QuantSpec, percentile: float = 99.99
) -> tuple[float, float]:
    """The (min, max) range to quantize with, chosen by `calibrator` from the observer's state."""
    if obs.empty:
        raise DataError("calibration saw no values: the calibration data is empty")
    if calibrator is Calibrator.MINMAX or obs.min_val == obs.max_val or obs.counts.sum() == 0:
        return obs.min_val, obs.max_val
    if not obs.histogram:
        raise ValueError(f"the {calibrator.value} calibrator needs an observer with histogram=True")
    if calibrator is Calibrator.PERCENTILE:
        return _percentile_range(obs, percentile)
    candidates = _candidate_ranges(obs, spec)
    score = _kl_score if calibrator is Calibrator.ENTROPY else _mse_score
    costs = [score(obs, lo, hi, spec) for lo, hi in candidates]
    return candidates[int(np.argmin(costs))]


def _percentile_range(obs: HistogramObserver, percentile: float) -> tuple[float, float]:
    cdf = np.cumsum(obs.counts) / obs.counts.sum()
    tail = (100.0 - percentile) / 100.0 / 2.0
    edges = obs.edges()
    lo = edges[int(np.searchsorted(cdf, tail, side="right"))]
    hi = edges[int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1]
    return max(float(lo), obs.min_val), min(float(hi), obs.max_val)


def _candidate_ranges(
    obs: HistogramObserver, spec: QuantSpec, steps: int = 128
) -> list[tuple[float, float]]:
    """Magnitude thresholds T from max|x| down to max|x|/steps (as TensorRT): the range is
    [max(min, -T), min(max, T)], so a one-sided outlier is clipped without clipping the other side.
    Symmetric specs use [-T, T] when the tensor has negative values."""
    lo, hi = obs.min_val, obs.max_val
    amax = max(-lo, hi)
    out = []
    for t in amax * np.linspace(1.0, 1.0 / steps, steps):
        if spec.symmetry is Symmetry.SYMMETRIC:
            out.append((-float(t) if lo < 0 else 0.0, float(t)))
        else:
            out.append((max(lo, -float(t)), min(hi, float(t))))
    return out


def _quantized_bins(
    obs: HistogramObserver, lo: float, hi: float, spec: QuantSpec
) -> NDArray[np.float64]:
    """Each bin centre after fake quantization to the grid of [lo, hi] (clipping included)."""
    scale, zp = scale_zero_point(lo, hi, spec)
    return fake_quantize(obs.centres().astype(np.float32), scale, zp, spec).astype(np.float64)


def _mse_score(obs: HistogramObserver, lo: float, hi: float, spec: QuantSpec) -> float:
    """Expected squared error, approximating each bin's values by its centre."""
    err = (obs.centres() - _quantized_bins(obs, lo, hi, spec)) ** 2
    return float(np.dot(obs.counts, err))


def _kl_score(obs: HistogramObserver, lo: float, hi: float, spec: QuantSpec) -> float:
    """KL(P || Q) as in TensorRT: P is the histogram inside [lo, hi] with the clipped outliers
    folded into its edge bins; Q is built from the same bins *without* the outliers, merged per
    quantization level and spread uniformly over that level's non-empty bins. Clipping thus
    costs the outlier mass, and coarse levels cost the lost shape."""
    centres, counts = obs.centres(), obs.counts.astype(np.float64)
    inside = (centres >= lo) & (centres <= hi)
    if not inside.any():
        return float("inf")
    idx = np.flatnonzero(inside)
    first, last = idx[0], idx[-1]
    kept = counts[first : last + 1]
    p = kept.copy()
    p[0] += counts[:first].sum()
    p[-1] += counts[last + 1 :].sum()
    levels = fake_quantize(
        centres[first : last + 1].astype(np.float32), *scale_zero_point(lo, hi, spec), spec
    )
    _, level_id = np.unique(levels, return_inverse=True)
    nonzero = (kept > 0).astype(np.float64)
    mass = np.bincount(level_id, weights=kept)
    support = np.bincount(level_id, weights=nonzero)
    q = np.where(nonzero > 0, mass[level_id] / np.maximum(support[level_id], 1.0), 0.0)
    mask = p > 0
    if q.sum() == 0:
        return float("inf")
    p_n, q_n = p[mask] / p.sum(), q[mask] / q.sum()
    return float(np.sum(p_n * np.log(p_n / np.maximum(q_n, 1e-12))))


@dataclass
class ChannelMean:
    """Running per-channel mean of a tensor (channels on axis 1), in float64: the statistic bias
    correction needs. O(channels) memory."""

    total: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    count: int = 0

    def update(self, x: NDArray[np.floating]) -> None:
        """Add a batch (N, C, ...)."""
        arr = np.asarray(x)
        axes = tuple(i for i in range(arr.ndim) if i != 1)
        batch_sum = arr.sum(axis=axes, dtype=np.float64)
        self.total = batch_sum if self.count == 0 else self.total + batch_sum
        self.count += arr.size // arr.shape[1]

    def mean(self) -> NDArray[np.float64]:
        return self.total / max(self.count, 1)


@dataclass
class FeatureAbsMax:
    """Running max |x| per feature (the last axis, as a MatMul reads it): the activation side of
    SmoothQuant's scales. O(features) memory."""

    value: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def update(self, x: NDArray[np.floating]) -> None:
        arr = np.abs(np.asarray(x)).reshape(-1, np.shape(x)[-1]).max(axis=0).astype(np.float64)
        self.value = arr if self.value.size == 0 else np.maximum(self.value, arr)


@dataclass
class FeatureGram:
    """Running X^T X over every row of x (features on the last axis), in float64: GPTQ's
    Hessian 2 X^T X / rows. O(features^2) memory, whatever the number of samples."""

    total: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    rows: int = 0

    def update(self, x: NDArray[np.floating]) -> None:
        arr = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
        gram = arr.T @ arr
        self.total = gram if self.rows == 0 else self.total + gram
        self.rows += len(arr)

    def hessian(self) -> NDArray[np.float64]:
        return 2.0 * self.total / max(self.rows, 1)
