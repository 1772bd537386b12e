"""Streaming observers: exact histogram merging, bounded state, and each clipping search."""

from __future__ import annotations

import numpy as np
import pytest

from edgequant.config import ACTIVATIONS_UINT8, Calibrator
from edgequant.errors import DataError
from edgequant.observers import HistogramObserver, clip_range


@pytest.mark.parametrize("order", [(0.1, 1.0, 10.0, 3.0), (10.0, 3.0, 1.0, 0.1)])
def test_streaming_merges_bins_exactly(order: tuple[float, ...]) -> None:
    """Growing the range (bin-pair merging) loses nothing: the streamed histogram equals binning
    all values at once at the final bin width."""
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal(1000) * s).astype(np.float32) for s in order]
    obs = HistogramObserver(512)
    for x in batches:
        obs.update(x)
    values = np.concatenate(batches)
    values = values[values != 0]
    direct = np.bincount(np.floor(values / obs.bin_width).astype(np.int64) + 256, minlength=512)
    np.testing.assert_array_equal(obs.counts, direct)
    assert obs.min_val == values.min() and obs.max_val == values.max()


def test_state_does_not_grow_with_samples() -> None:
    rng = np.random.default_rng(0)
    obs = HistogramObserver(1024)
    obs.update(rng.standard_normal(100))
    size = obs.counts.nbytes
    for _ in range(50):
        obs.update(rng.standard_normal(10_000) * 5)
    assert obs.counts.nbytes == size


def test_nan_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="NaN or Inf"):
        HistogramObserver().update(np.array([1.0, np.nan]), "conv1")


def test_empty_observer_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="empty"):
        clip_range(HistogramObserver(), Calibrator.MINMAX, ACTIVATIONS_UINT8)


def test_mse_finds_the_analytic_laplace_clipping_point() -> None:
    """For Laplace(b=1) at 8 bits the MSE-optimal clip is about 9.89 b (Banner et al. 2019, table 1);
    min-max would use the sample maximum (about 14 for a million samples)."""
    x = np.random.default_rng(0).laplace(0.0, 1.0, 1_000_000)
    obs = HistogramObserver()
    obs.update(x)
    lo, hi = clip_range(obs, Calibrator.MSE, ACTIVATIONS_UINT8)
    assert 8.5 < hi < 11.5 and -11.5 < lo < -8.5, (lo, hi)


@pytest.mark.parametrize("calibrator", [Calibrator.PERCENTILE, Calibrator.ENTROPY])
def test_clipping_calibrators_ignore_a_lone_outlier(calibrator: Calibrator) -> None:
    """A single value at 100 among ReLU outputs of scale ~1 must not set the range."""
    rng = np.random.default_rng(0)
    x = np.concatenate([np.maximum(rng.standard_normal(200_000), 0), [100.0]])
    obs = HistogramObserver()
    obs.update(x)
    lo, hi = clip_range(obs, calibrator, ACTIVATIONS_UINT8, percentile=99.99)
    assert lo == 0.0
    assert 3.0 < hi < 20.0, hi
    assert clip_range(obs, Calibrator.MINMAX, ACTIVATIONS_UINT8) == (0.0, 100.0)


@pytest.mark.parametrize("calibrator", list(Calibrator))
def test_no_clipping_of_a_uniform_distribution(calibrator: Calibrator) -> None:
    """On a uniform distribution every value matters: no calibrator may clip more than 2%."""
    x = np.random.default_rng(0).uniform(-1, 3, 100_000)
    obs = HistogramObserver()
    obs.update(x)
    lo, hi = clip_range(obs, calibrator, ACTIVATIONS_UINT8)
    assert lo <= -0.98 and hi >= 2.94, (lo, hi)
