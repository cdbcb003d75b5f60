"""Statistics for comparing methods over seeds: percentile-bootstrap confidence intervals.

We resample *seeds* (runs) with replacement and take the mean of each resample; the interval is
the (1 - confidence) / 2 and (1 + confidence) / 2 percentiles of those bootstrap means (the
percentile bootstrap, Efron & Tibshirani 1993, ch. 13). Defaults: 10,000 resamples, 95 %, numpy
`default_rng(0)`, so tables and plots are reproducible bit for bit.

With few seeds (3-5, as usual in RL) the percentile interval is too narrow (it cannot reach beyond
the observed values; with one seed it collapses to that seed's value); treat it as a description
of the seeds at hand, not as a guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    """Mean over seeds and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_means(values: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement) of the rows of `values`.

    `values` is (n,) or (n, P): n seeds, optionally P points each (a learning curve). Rows are resampled
    jointly across the P points, so a curve's band reflects whole seeds, not pointwise mixing.
    Returns (n_resamples,) or (n_resamples, P).
    """
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    if n == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    # A resample is fully described by how often it draws each seed; counts @ values / n is its mean.
    # This needs (R, n) + (R, P) memory instead of (R, n, P).
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)
    flat = values.reshape(n, -1)
    means = counts @ flat / n
    return means.reshape(n_resamples, *values.shape[1:])


def bootstrap_ci(values, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED) -> Interval:
    """Mean of `values` (one number per seed) with a percentile-bootstrap interval."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    means = bootstrap_means(values, n_resamples, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(values.mean()), float(low), float(high), len(values))


def bootstrap_band(curves, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                   seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean curve and pointwise percentile-bootstrap band of `curves` (n_seeds, P) on a shared x grid."""
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2:
        raise ValueError(f"curves must be (seeds, points), got shape {curves.shape}")
    means = bootstrap_means(curves, n_resamples, seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return curves.mean(0), low, high


def first_crossing(x: np.ndarray, y: np.ndarray, threshold: float) -> float | None:
    """The first x at which y >= threshold (None if it never does); no interpolation between points."""
    hits = np.flatnonzero(np.asarray(y) >= threshold - 1e-12)
    return float(np.asarray(x)[hits[0]]) if len(hits) else None


def final_over_best_if_constant(success: float, eval_episodes: list[int], n_sim: int = 100_000,
                                seed: int = SEED) -> float:
    """E[final] / E[best] for a policy whose success probability never changes, evaluated
    `len(eval_episodes)` times with that many episodes each (the last entry is the final evaluation).

    The best of several noisy evaluations overestimates the policy, so even a perfectly stable policy
    scores below 1 on the "final / best evaluation" stability measure: e.g. 0.63 at success 0.3 with five
    10-episode evaluations and a 20-episode final one. This is the level a run's measured ratio should be
    read against."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(eval_episodes)
    rates = rng.binomial(counts, success, size=(n_sim, len(counts))) / counts
    return float(rates[:, -1].mean() / max(rates.max(1).mean(), 1e-9))
