"""Paired statistics for two runs scored on the same cases.

- Scores (Dice, IoU): mean difference B - A, a seeded paired bootstrap confidence interval of
  it (cases resampled with replacement), the Wilcoxon signed-rank test, and win/tie/loss counts.
- Case-level flags (false positive on a reference-empty case): the two rates, their difference
  and McNemar's exact test (a binomial test on the discordant cases). When the cases are several
  runs pooled (run-tagged case ids), McNemar holds per run only: across runs the images are the
  sample (:mod:`pu_nnunet.evaluation.metrics.flag_rates`), never the image-runs.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

# Paired bootstrap: resamples and seed (fixed, so reports are reproducible) and the interval.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE_LEVEL = 0.95
# Resamples drawn per block, bounding memory to block x cases floats for large test sets.
BOOTSTRAP_BLOCK = 1_000
# A score difference at or below this is a tie: metrics.json stores full double precision, so
# only float noise from different summation orders is folded into ties.
TIE_TOLERANCE = 1e-9


def bootstrap_mean_ci(differences: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED, confidence: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
    """Percentile interval of the mean of ``differences`` under resampling of cases."""
    rng = np.random.default_rng(seed)
    n = len(differences)
    means = []
    for start in range(0, resamples, BOOTSTRAP_BLOCK):
        block = min(BOOTSTRAP_BLOCK, resamples - start)
        means.append(differences[rng.integers(0, n, size=(block, n))].mean(axis=1))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.concatenate(means), [tail, 1.0 - tail])
    return float(low), float(high)


def wilcoxon_p(differences: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value; None when every difference is a tie."""
    from scipy.stats import wilcoxon

    nonzero = differences[np.abs(differences) > TIE_TOLERANCE]
    if len(nonzero) == 0:
        return None
    return float(wilcoxon(nonzero, alternative="two-sided").pvalue)


def paired_scores(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Statistics of paired scores ``a[i]``, ``b[i]`` of the same case i (positive = B higher)."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a_arr)
    result: dict[str, Any] = {"n": n, "mean_a": None, "mean_b": None, "mean_difference": None,
                              "ci_low": None, "ci_high": None, "confidence": CONFIDENCE_LEVEL,
                              "wilcoxon_p": None, "a_better": 0, "ties": 0, "b_better": 0}
    if n == 0:
        return result
    differences = b_arr - a_arr
    ci_low, ci_high = bootstrap_mean_ci(differences)
    result.update(
        mean_a=float(a_arr.mean()), mean_b=float(b_arr.mean()), mean_difference=float(differences.mean()),
        ci_low=ci_low, ci_high=ci_high, wilcoxon_p=wilcoxon_p(differences),
        a_better=int((differences < -TIE_TOLERANCE).sum()),
        ties=int((np.abs(differences) <= TIE_TOLERANCE).sum()),
        b_better=int((differences > TIE_TOLERANCE).sum()),
    )
    return result


def paired_flags(a: Sequence[bool], b: Sequence[bool], case_ids: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Rates of paired case flags (e.g. false positives) and McNemar's exact test; with
    ``case_ids`` from several pooled runs, McNemar per run and the image-clustered test across runs
    instead ("mcnemar_p" is then None: the pooled image-runs are not independent)."""
    from scipy.stats import binomtest

    from pu_nnunet.evaluation.metrics.flag_rates import clustered_paired_test, flag_rate

    a_arr, b_arr = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = len(a_arr)
    only_a = int((a_arr & ~b_arr).sum())
    only_b = int((b_arr & ~a_arr).sum())
    discordant = only_a + only_b
    rate_a = float(a_arr.mean()) if n else None
    rate_b = float(b_arr.mean()) if n else None
    result = {
        "n": n,
        "cases_a": int(a_arr.sum()),
        "cases_b": int(b_arr.sum()),
        "rate_a": rate_a,
        "rate_b": rate_b,
        "difference": None if n == 0 else rate_b - rate_a,
        "only_a": only_a,
        "only_b": only_b,
        "mcnemar_p": float(binomtest(only_a, discordant, 0.5).pvalue) if discordant else None,
        "clustered": None,
    }
    if case_ids is not None and n:
        clustered = clustered_paired_test(case_ids, a_arr, b_arr)
        if clustered["n_runs"] > 1 or clustered["n_images"] < n:
            rates = flag_rate(case_ids, a_arr), flag_rate(case_ids, b_arr)
            clustered.update(ci_a=[rates[0]["ci_low"], rates[0]["ci_high"]],
                             ci_b=[rates[1]["ci_low"], rates[1]["ci_high"]])
            result.update(mcnemar_p=None, clustered=clustered)
    return result
