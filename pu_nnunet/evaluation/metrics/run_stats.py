"""Run-level statistics: differences between paired training runs, not between pooled cases.

A held-out case appears once per run, so cases pooled over runs are not independent and the
between-run spread (seeds, data order) is the noise a trainer difference must exceed. Here:

- each paired run (the same fold and repeat for both trainers) gives one difference of mean
  Dice over the run's paired cases;
- the mean and sd of those differences;
- a percentile CI from a hierarchical (cluster) bootstrap: resample runs with replacement, then
  the cases within each drawn run (:func:`hierarchical_bootstrap_ci`; scipy.stats.bootstrap
  resamples one level only, so this one is written here);
- an exact paired test on the run differences: the two-sided sign-flip permutation test over
  all 2^R sign patterns (scipy.stats.permutation_test), once there are enough runs for a p
  below 0.05 to be possible;
- Holm's step-down adjustment across the tests of a report (:func:`holm`; scipy has
  false_discovery_control, which is Benjamini-Hochberg, not Holm, so Holm is written here);
- the runs needed to detect the observed difference with a paired t-test, from the sd of the
  run differences (:func:`runs_needed`, scipy.stats.nct).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

# Resamples and seed of the hierarchical bootstrap (fixed: reports are reproducible).
RUN_BOOTSTRAP_RESAMPLES = 10_000
RUN_BOOTSTRAP_SEED = 0
RUN_CONFIDENCE = 0.95
# Significance level of the tests and the power the run-count estimate aims for (the usual 5 %
# and 80 % of sample-size planning).
ALPHA = 0.05
TARGET_POWER = 0.80
# The exact two-sided sign-flip test cannot go below 2 / 2^R: R = 6 runs is the fewest for
# which p < 0.05 is attainable (2 / 64 = 0.031); with fewer the test is not reported.
MIN_RUNS_FOR_EXACT_TEST = 6
# runs_needed gives up beyond this many runs (the difference is then practically noise).
MAX_RUNS_SEARCHED = 10_000
# Run differences whose sd is at or below this are treated as identical (float noise).
SD_TOLERANCE = 1e-12


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and is not counted in the family)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def hierarchical_bootstrap_ci(runs: Sequence[np.ndarray], resamples: int = RUN_BOOTSTRAP_RESAMPLES,
                              seed: int = RUN_BOOTSTRAP_SEED, confidence: float = RUN_CONFIDENCE
                              ) -> tuple[float, float]:
    """Percentile CI of the mean of run means of paired case differences, resampling runs and
    then cases within each drawn run (each draw of a run gets its own case resample)."""
    runs = [np.asarray(run, dtype=float) for run in runs]
    rng = np.random.default_rng(seed)
    n_runs = len(runs)
    drawn = rng.integers(0, n_runs, size=(resamples, n_runs))
    run_means = np.empty((resamples, n_runs))
    for index, cases in enumerate(runs):
        slots = drawn == index
        count = int(slots.sum())
        if count:
            picks = rng.integers(0, len(cases), size=(count, len(cases)))
            run_means[slots] = cases[picks].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(run_means.mean(axis=1), [tail, 1.0 - tail])
    return float(low), float(high)


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided p of the mean of paired differences under all 2^R sign flips."""
    from scipy.stats import permutation_test

    data = np.asarray(differences, dtype=float)
    result = permutation_test((data,), lambda x, axis: np.mean(x, axis=axis), permutation_type="samples",
                              n_resamples=np.inf, alternative="two-sided")
    return float(min(1.0, result.pvalue))


def runs_needed(difference: float, sd: float, alpha: float = ALPHA, power: float = TARGET_POWER) -> int | None:
    """Fewest paired runs for a two-sided paired t-test at ``alpha`` to detect ``difference`` with
    ``power`` when run differences have sd ``sd`` (noncentral t); None beyond MAX_RUNS_SEARCHED
    or when the difference is 0."""
    from scipy.stats import nct, t

    if difference == 0 or not math.isfinite(difference):
        return None
    if sd <= SD_TOLERANCE:
        return 2  # no between-run noise: two runs show the difference
    effect = abs(difference) / sd
    for n in range(2, MAX_RUNS_SEARCHED + 1):
        critical = t.ppf(1 - alpha / 2, n - 1)
        shift = effect * math.sqrt(n)
        achieved = nct.sf(critical, n - 1, shift) + nct.cdf(-critical, n - 1, shift)
        if achieved >= power:
            return n
    return None


def run_level_difference(paired_runs: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                         resamples: int = RUN_BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """Run-level statistics of B - A from ``run id -> (scores of A, scores of B)`` over the run's
    paired cases (same order). Runs without a paired case are skipped."""
    runs = {run: (np.asarray(a, dtype=float), np.asarray(b, dtype=float))
            for run, (a, b) in paired_runs.items() if len(a)}
    per_run = [{"run": run, "n_cases": len(a), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                "difference": float((b - a).mean())} for run, (a, b) in runs.items()]
    differences = np.array([r["difference"] for r in per_run])
    n = len(differences)
    result: dict[str, Any] = {
        "n_runs": n, "runs": per_run, "mean_difference": None, "sd": None, "ci_low": None, "ci_high": None,
        "confidence": RUN_CONFIDENCE, "exact_p": None, "min_attainable_p": None, "runs_needed": None,
        "test": "two-sided exact sign-flip permutation test on the run differences",
    }
    if n == 0:
        return result
    result["mean_difference"] = float(differences.mean())
    result["min_attainable_p"] = min(1.0, 2.0 / 2 ** n)
    if n >= 2:
        sd = float(differences.std(ddof=1))
        result["sd"] = sd
        result["ci_low"], result["ci_high"] = hierarchical_bootstrap_ci([b - a for a, b in runs.values()], resamples)
        result["runs_needed"] = runs_needed(result["mean_difference"], sd)
    if n >= MIN_RUNS_FOR_EXACT_TEST:
        result["exact_p"] = sign_flip_p(differences)
    return result
