"""Run-level statistics: differences between paired training runs, not between pooled cases.

A held-out case appears once per run, so cases pooled over runs are not independent and the
between-run spread (seeds, data order) is the noise a trainer difference must exceed. The runs
score the same test cases: the design is crossed (run x case), not nested. Here:

- each paired run (the same fold and repeat for both trainers) gives one difference of mean
  score over the run's paired cases;
- primary interval: the t-interval on the run differences, df = R - 1 (:func:`t_interval`). It
  generalises over new runs on this test set (the cases are held fixed);
- secondary interval: the two-way ("pigeonhole") bootstrap of the crossed design, Owen (2007,
  Ann. Appl. Stat. 1(2)): one case resample shared by all runs, the runs resampled independently
  (:func:`two_way_bootstrap_ci`). It generalises over new runs and new cases;
- below :data:`MIN_RUNS_FOR_INTERVAL` paired runs neither interval is shown (not informative);
- the two-sided sign-flip test on the run differences: exact over all 2^R sign patterns up to
  :data:`EXACT_SIGN_FLIP_MAX_RUNS` runs, Monte-Carlo with a seeded number of resamples and its
  Monte-Carlo standard error above (:func:`sign_flip_test`);
- Holm's step-down adjustment across the tests of a report (:func:`holm`; scipy has
  false_discovery_control, which is Benjamini-Hochberg, not Holm); None or NaN stays out;
- equivalence: two one-sided paired t-tests against a margin (TOST, :func:`tost_p`);
- prospective power: the paired runs at which the sign-flip test at the Holm level alpha / m
  reaches 80 % power for a minimal important difference, over a range of plausible between-run
  sds (:func:`runs_for_power`, :func:`plausible_sds`).
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, Mapping, Optional, Sequence

import numpy as np

RUN_CONFIDENCE = 0.95
# Significance level of the tests and the power the planning aims for (the usual 5 % and 80 %).
ALPHA = 0.05
TARGET_POWER = 0.80
# Fewest paired runs for which an interval is shown. The t-interval holds its level at 2 runs too
# (benchmarks/studies/coverage_simulation.py: 95 % at 2, 3, 5 and 10 runs), but with df = 1 its
# half-width is 12.7 sd / sqrt(2) = 9 sd (0.15 Dice in the CT-like setting against 0.045 at 3 runs):
# no reader can use it, so with 2 runs the report says "not informative" instead.
MIN_RUNS_FOR_INTERVAL = 3
# Two-way bootstrap: resamples and seed (fixed: reports are reproducible).
TWO_WAY_RESAMPLES = 4_000
RUN_BOOTSTRAP_SEED = 0
# Resamples drawn per block, bounding memory to block x runs x cases floats.
BOOTSTRAP_BLOCK = 500
# The exact sign-flip test enumerates 2^R patterns: 65 536 at 16 runs (milliseconds); above, a
# seeded Monte-Carlo test whose standard error at p = 0.05 is sqrt(0.05 * 0.95 / 1e5) = 0.0007.
EXACT_SIGN_FLIP_MAX_RUNS = 16
SIGN_FLIP_RESAMPLES = 100_000
SIGN_FLIP_SEED = 0
SIGN_FLIP_BLOCK = 10_000
# Defaults of the minimal important difference (planning) and the equivalence margin, in Dice:
# 0.01 is below the between-run sd of the committed demo studies (0.004-0.03) and the smallest
# Dice change segmentation papers of this field report as a gain.
DEFAULT_MID = 0.01
DEFAULT_EQUIVALENCE_MARGIN = 0.01
# Power by simulation: run sets drawn (standard error of a power of 0.8: sqrt(.16 / 2000) = 0.009),
# seed, and the largest run count searched.
POWER_SIMULATIONS = 2_000
POWER_SEED = 0
MAX_RUNS_SEARCHED = 2_000
# Plausible between-run sds for planning: the observed one and its one-sided upper confidence
# bounds (chi-square with R - 1 df) at these levels.
SD_UPPER_BOUNDS = (0.80, 0.95)
# Run differences whose sd is at or below this are treated as identical (float noise); a sign-flip
# statistic within this relative distance of the observed one counts as a tie.
SD_TOLERANCE = 1e-12
TIE_RELATIVE = 1e-9


def _finite(value: Optional[float]) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def spread(values: Sequence[Optional[float]]) -> dict[str, Any]:
    """A value's spread over runs: n, mean, sd (None below two values), min and max of those not None."""
    kept = np.asarray([v for v in values if v is not None], dtype=float)
    if len(kept) == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": int(len(kept)), "mean": float(kept.mean()), "sd": float(kept.std(ddof=1)) if len(kept) > 1 else None,
            "min": float(kept.min()), "max": float(kept.max())}


def holm(p_values: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm's step-down adjusted p-values; None and NaN stay None and are not in the family."""
    indexed = sorted((float(p), i) for i, p in enumerate(p_values) if _finite(p))
    m = len(indexed)
    adjusted: list[Optional[float]] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def t_interval(differences: np.ndarray, confidence: float = RUN_CONFIDENCE) -> tuple[np.ndarray, np.ndarray]:
    """The t-interval of the mean of the last axis (df = R - 1); vectorised over leading axes."""
    from scipy.stats import t

    data = np.asarray(differences, dtype=float)
    n = data.shape[-1]
    mean = data.mean(axis=-1)
    half = t.ppf(0.5 + confidence / 2, n - 1) * data.std(axis=-1, ddof=1) / math.sqrt(n)
    return mean - half, mean + half


def two_way_bootstrap_ci(matrix: np.ndarray, resamples: int = TWO_WAY_RESAMPLES, seed: int = RUN_BOOTSTRAP_SEED,
                         confidence: float = RUN_CONFIDENCE) -> tuple[float, float]:
    """Interval of the mean of run means of a runs x cases matrix of paired case differences (NaN:
    the case is not in that run) from the two-way (pigeonhole) bootstrap: each resample draws one
    case resample that every run shares and the runs independently; its standard error times the
    t quantile with R - 1 df. Its percentile interval with so few run draws covered 83 % at 3 runs and
    87 % at 5 (a 300-study run of benchmarks/studies/coverage_simulation.py, CT-like setting); with the
    t quantile it covers 97-100 % (conservative: Owen's variance counts the noise term twice)."""
    from scipy.stats import t

    matrix = np.asarray(matrix, dtype=float)
    n_runs, n_cases = matrix.shape
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, resamples, BOOTSTRAP_BLOCK):
        block = min(BOOTSTRAP_BLOCK, resamples - start)
        runs = rng.integers(0, n_runs, size=(block, n_runs))
        cases = rng.integers(0, n_cases, size=(block, n_cases))
        drawn = matrix[runs[:, :, None], cases[:, None, :]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample that draws no case of a run
            means.append(np.nanmean(np.nanmean(drawn, axis=2), axis=1))
    values = np.concatenate(means)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        estimate = float(np.nanmean(np.nanmean(matrix, axis=1)))
    half = float(t.ppf(0.5 + confidence / 2, n_runs - 1) * np.std(values[np.isfinite(values)], ddof=1))
    return estimate - half, estimate + half


def _sign_patterns(k: int) -> np.ndarray:
    """All 2^k sign patterns as a 2^k x k matrix of +-1."""
    return 1.0 - 2.0 * ((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1)


def exact_sign_flip_p(data: np.ndarray) -> np.ndarray:
    """Exact two-sided sign-flip p of the sum over the last axis, for each row: the share of the
    2^R sign patterns whose |sum| reaches the observed one. Meet in the middle: the sums of two
    halves of the runs, one sorted and searched, so a row costs 2^(R/2) log, not 2^R."""
    data = np.atleast_2d(np.asarray(data, dtype=float))
    rows, n = data.shape
    magnitude = np.abs(data)
    scale = magnitude.sum(axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    magnitude = magnitude / scale  # sums within [-1, 1]: one tie tolerance fits every row
    observed = np.abs(data.sum(axis=1)) / scale[:, 0] - TIE_RELATIVE
    left, right = magnitude[:, : n // 2], magnitude[:, n // 2:]
    a = left @ _sign_patterns(left.shape[1]).T  # rows x 2^(n//2)
    b = np.sort(right @ _sign_patterns(right.shape[1]).T, axis=1)
    # rows laid end to end, each shifted by 4 (sums lie in [-2, 2]), so one searchsorted serves all
    offset = 4.0 * np.arange(rows)[:, None]
    flat = (b + offset).ravel()
    width = b.shape[1]
    base = (np.arange(rows) * width)[:, None]
    upper = width - (np.searchsorted(flat, (observed[:, None] - a + offset).ravel()).reshape(a.shape) - base)
    lower = np.searchsorted(flat, (-observed[:, None] - a + offset).ravel(), side="right").reshape(a.shape) - base
    count = upper.sum(axis=1) + lower.sum(axis=1)
    return np.minimum(1.0, count / 2.0 ** n)


def sign_flip_test(differences: Sequence[float], resamples: int = SIGN_FLIP_RESAMPLES,
                   seed: int = SIGN_FLIP_SEED) -> dict[str, Any]:
    """Two-sided sign-flip test of the mean of paired differences: exact up to
    EXACT_SIGN_FLIP_MAX_RUNS values, else Monte-Carlo (p = (1 + hits) / (1 + resamples)) with its
    standard error. Returns {p, method, resamples, mc_se}."""
    data = np.asarray(differences, dtype=float)
    if len(data) <= EXACT_SIGN_FLIP_MAX_RUNS:
        return {"p": float(exact_sign_flip_p(data)[0]), "method": "exact", "resamples": None, "mc_se": None}
    rng = np.random.default_rng(seed)
    observed = abs(data.sum()) * (1 - TIE_RELATIVE)
    hits = 0
    for start in range(0, resamples, SIGN_FLIP_BLOCK):
        block = min(SIGN_FLIP_BLOCK, resamples - start)
        signs = rng.choice((-1.0, 1.0), size=(block, len(data)))
        hits += int((np.abs(signs @ data) >= observed).sum())
    p = (1 + hits) / (1 + resamples)
    return {"p": p, "method": "monte-carlo", "resamples": resamples, "mc_se": math.sqrt(p * (1 - p) / resamples)}


def min_attainable_p(n_runs: int) -> float:
    """The smallest two-sided sign-flip p with n runs: 2 / 2^n (all runs on one side)."""
    return min(1.0, 2.0 / 2 ** n_runs)


def min_runs_for_level(level: float) -> int:
    """Fewest runs at which the sign-flip test can reach p <= level (2 / 2^R <= level)."""
    return max(1, math.ceil(math.log2(2.0 / level) - 1e-12))


def tost_p(differences: Sequence[float], margin: float) -> Optional[float]:
    """p of two one-sided paired t-tests that the mean difference lies within (-margin, +margin)
    (the larger of the two one-sided p); None below 2 runs, with sd 0 (t undefined) or margin <= 0."""
    from scipy.stats import t

    data = np.asarray(differences, dtype=float)
    n = len(data)
    if n < 2 or not margin > 0 or not np.all(np.isfinite(data)):
        return None
    sd = float(data.std(ddof=1))
    if sd <= SD_TOLERANCE:
        return None
    se = sd / math.sqrt(n)
    p_above = float(t.sf((data.mean() + margin) / se, n - 1))  # H0: mean <= -margin
    p_below = float(t.cdf((data.mean() - margin) / se, n - 1))  # H0: mean >= +margin
    return max(p_above, p_below)


# memoised: a report asks for the same power many times (a single-label dataset's label and its
# foreground have one sd; the runs-for-power search and the detectable difference revisit effects),
# and an exact evaluation at 16 runs costs tens of milliseconds
@functools.lru_cache(maxsize=4096)
def sign_flip_power(effect: float, n_runs: int, level: float, simulations: int = POWER_SIMULATIONS,
                    seed: int = POWER_SEED) -> float:
    """Power of the two-sided sign-flip test at ``level`` for n normal run differences with mean
    ``effect`` sds (by simulation). Up to EXACT_SIGN_FLIP_MAX_RUNS runs each simulated run set gets
    its exact p; above, the Monte-Carlo test of the report estimates the exact p, whose distribution
    is then the normal limit of sum(+-|d|) / sqrt(sum d^2)."""
    from scipy.stats import norm

    if n_runs < min_runs_for_level(level):
        return 0.0
    draws = np.random.default_rng(seed).standard_normal((simulations, n_runs)) + effect
    if n_runs <= EXACT_SIGN_FLIP_MAX_RUNS:
        return float((exact_sign_flip_p(draws) <= level * (1 + TIE_RELATIVE)).mean())
    statistic = np.abs(draws.sum(axis=1)) / np.sqrt((draws ** 2).sum(axis=1))
    return float((statistic >= norm.isf(level / 2)).mean())


def runs_for_power(mid: float, sd: float, family_size: int = 1, alpha: float = ALPHA,
                   power: float = TARGET_POWER) -> Optional[int]:
    """Fewest paired runs at which the sign-flip test at the Holm worst-case level alpha /
    family_size reaches ``power`` against a true difference ``mid`` when run differences have sd
    ``sd``; with sd 0 the fewest runs that can reach the level at all; None beyond MAX_RUNS_SEARCHED."""
    if not (mid and math.isfinite(mid)) or not math.isfinite(sd) or family_size < 1:
        return None
    level = alpha / family_size
    floor = min_runs_for_level(level)
    if sd <= SD_TOLERANCE:
        return floor
    effect = abs(mid) / sd
    achieved = lambda n: sign_flip_power(effect, n, level) >= power  # noqa: E731
    for n in range(floor, EXACT_SIGN_FLIP_MAX_RUNS + 1):
        if achieved(n):
            return n
    low, high = EXACT_SIGN_FLIP_MAX_RUNS, EXACT_SIGN_FLIP_MAX_RUNS + 1
    while not achieved(high):  # power grows with the runs: double, then bisect
        if high >= MAX_RUNS_SEARCHED:
            return None
        low, high = high, min(2 * high, MAX_RUNS_SEARCHED)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if achieved(middle) else (middle, high)
    return high


def plausible_sds(sd: float, n_runs: int) -> list[tuple[str, float]]:
    """The observed sd and its one-sided upper confidence bounds (chi-square, df = n_runs - 1)."""
    from scipy.stats import chi2

    values = [("observed", float(sd))]
    if n_runs >= 2:
        values += [(f"{level:.0%} upper bound", float(sd * math.sqrt((n_runs - 1) / chi2.ppf(1 - level, n_runs - 1))))
                   for level in SD_UPPER_BOUNDS]
    return values


# effects (in sds) the detectable-difference search goes up to; far past any power target
MAX_EFFECT_SEARCHED = 1024.0


def detectable_difference(n_runs: int, sd: float, family_size: int = 1, alpha: float = ALPHA,
                          power: float = TARGET_POWER) -> Optional[float]:
    """The smallest true difference that ``n_runs`` paired runs with between-run sd ``sd`` detect
    with ``power`` by the sign-flip test at the Holm worst-case level alpha / family_size: what an
    inconclusive result could have found. None where the runs cannot reach the level at all;
    0 with sd 0. Bisection on the effect in sds (the power simulation's draws are shared, so the
    power grows with the effect), to 1/1000 of the bracket."""
    level = alpha / family_size
    if n_runs < min_runs_for_level(level) or not math.isfinite(sd):
        return None
    if sd <= SD_TOLERANCE:
        return 0.0
    achieved = lambda effect: sign_flip_power(effect, n_runs, level) >= power  # noqa: E731
    low, high = 0.0, 1.0
    while not achieved(high):
        if high >= MAX_EFFECT_SEARCHED:  # the runs reach the level, but not with this power
            return None
        low, high = high, 2 * high
    while high - low > high / 1000:
        middle = (low + high) / 2
        low, high = (low, middle) if achieved(middle) else (middle, high)
    return high * sd


def power_plan(mid: float, sds: Sequence[tuple[str, float]], family_size: int, alpha: float = ALPHA
               ) -> dict[str, Any]:
    """Runs needed for each plausible sd (label, value), with the level and its attainable floor."""
    level = alpha / family_size
    return {"mid": mid, "family_size": family_size, "alpha": alpha, "level": level, "power": TARGET_POWER,
            "fewest_runs_for_level": min_runs_for_level(level),
            "by_sd": [{"sd_from": label, "sd": value, "runs": runs_for_power(mid, value, family_size, alpha)}
                      for label, value in sds]}


def _case_matrix(runs: Mapping[str, tuple[Sequence[str], np.ndarray]]) -> np.ndarray:
    """runs x cases matrix of paired differences, cases in first-seen order, NaN where absent."""
    index: dict[str, int] = {}
    for cases, _ in runs.values():
        for case in cases:
            index.setdefault(case, len(index))
    matrix = np.full((len(runs), len(index)), np.nan)
    for row, (cases, differences) in enumerate(runs.values()):
        matrix[row, [index[c] for c in cases]] = differences
    return matrix


def run_level_difference(paired_runs: Mapping[str, tuple[Sequence[str], Sequence[float], Sequence[float]]],
                         margin: float = DEFAULT_EQUIVALENCE_MARGIN,
                         resamples: int = TWO_WAY_RESAMPLES) -> dict[str, Any]:
    """Run-level statistics of B - A from ``run id -> (case ids, scores of A, scores of B)``
    over the run's paired cases (same order). A case whose score is missing or NaN on either side
    is dropped (counted); runs without a paired case are skipped. Holm and power need the
    report's family and are added by the caller (:func:`add_family_results`)."""
    runs, dropped = {}, 0
    for run, (cases, a, b) in paired_runs.items():
        a_arr = np.array([np.nan if v is None else v for v in a], dtype=float)
        b_arr = np.array([np.nan if v is None else v for v in b], dtype=float)
        keep = np.isfinite(a_arr) & np.isfinite(b_arr)
        dropped += int((~keep).sum())
        if keep.any():
            runs[run] = ([c for c, k in zip(cases, keep) if k], a_arr[keep], b_arr[keep])
    per_run = [{"run": run, "n_cases": len(a), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
                "difference": float((b - a).mean())} for run, (_, a, b) in runs.items()]
    differences = np.array([r["difference"] for r in per_run])
    n = len(differences)
    result: dict[str, Any] = {
        "n_runs": n, "runs": per_run, "n_cases_dropped": dropped, "mean_difference": None, "sd": None,
        "confidence": RUN_CONFIDENCE, "t_low": None, "t_high": None, "two_way_low": None, "two_way_high": None,
        "interval_note": None, "sign_flip_p": None, "sign_flip_method": None, "sign_flip_mc_se": None,
        "min_attainable_p": None, "margin": margin, "tost_p": None,
    }
    if n == 0:
        return result
    result["mean_difference"] = float(differences.mean())
    result["min_attainable_p"] = min_attainable_p(n)
    if n < 2:
        result["interval_note"] = "one run: no between-run spread"
        return result
    sd = float(differences.std(ddof=1))
    result["sd"] = sd
    test = sign_flip_test(differences)
    result.update(sign_flip_p=test["p"], sign_flip_method=test["method"], sign_flip_mc_se=test["mc_se"],
                  sign_flip_resamples=test["resamples"], tost_p=tost_p(differences, margin))
    if sd <= SD_TOLERANCE:
        result["interval_note"] = "sd 0: every run gave the same difference"
    elif n < MIN_RUNS_FOR_INTERVAL:
        result["interval_note"] = f"not informative below {MIN_RUNS_FOR_INTERVAL} runs"
    else:
        low, high = t_interval(differences)
        result["t_low"], result["t_high"] = float(low), float(high)
        matrix = _case_matrix({run: (cases, b - a) for run, (cases, a, b) in runs.items()})
        result["two_way_low"], result["two_way_high"] = two_way_bootstrap_ci(matrix, resamples)
    return result


# what a run-level entry concludes
DIFFERENT, EQUIVALENT, INCONCLUSIVE, NOT_TESTED = "different", "equivalent", "inconclusive", "not tested"


def conclusion(entry: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """different: the Holm-adjusted sign-flip p is below alpha; equivalent: TOST rejects both
    one-sided nulls (and no difference is shown); inconclusive: neither; not tested: < 2 runs."""
    if entry.get("sign_flip_p") is None:
        return NOT_TESTED
    adjusted = entry.get("sign_flip_p_holm")
    if _finite(adjusted) and adjusted < alpha:
        return DIFFERENT
    if _finite(entry.get("tost_p")) and entry["tost_p"] < alpha:
        return EQUIVALENT
    return INCONCLUSIVE


def add_family_results(entries: Sequence[dict[str, Any]], mid: float = DEFAULT_MID, alpha: float = ALPHA) -> None:
    """Holm over the entries' sign-flip p (the report's family), each entry's conclusion, the
    runs for 80 % power at the family's worst-case level alpha / m for plausible sds, and the
    smallest difference the runs at hand detect with that power at the observed sd."""
    family = max(1, sum(1 for e in entries if e.get("sign_flip_p") is not None))
    for entry, adjusted in zip(entries, holm([e.get("sign_flip_p") for e in entries])):
        entry["sign_flip_p_holm"] = adjusted
        entry["conclusion"] = conclusion(entry, alpha)
        entry["power"] = (power_plan(mid, plausible_sds(entry["sd"], entry["n_runs"]), family, alpha)
                          if entry.get("sd") is not None else None)
        # what an inconclusive result could have detected (80 % power at the observed sd)
        entry["detectable_difference"] = (detectable_difference(entry["n_runs"], entry["sd"], family, alpha)
                                           if entry.get("sd") is not None else None)
