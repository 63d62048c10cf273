"""The four Dice protocols on hand-built case sets, exact rate intervals, Holm, the exact
sign-flip test, the run-count estimate and the hierarchical bootstrap's coverage."""

import numpy as np
import pytest
from scipy.stats import beta, binomtest

from pu_nnunet.evaluation.metrics.protocols import clopper_pearson, dice_protocols, nnunet_foreground_mean
from pu_nnunet.evaluation.metrics.run_stats import (hierarchical_bootstrap_ci, holm, run_level_difference,
                                                    runs_needed, sign_flip_p)


def case(tp, fp, fn):
    """A per-case label record as case_metrics writes it."""
    defined = tp + fp + fn > 0
    return {"tp": tp, "fp": fp, "fn": fn, "ref_empty": tp + fn == 0,
            "dice": 2 * tp / (2 * tp + fp + fn) if defined else None}


def test_protocols_with_empty_references_with_and_without_false_positives():
    records = [case(8, 2, 2),    # Dice 16/20 = 0.8
               case(0, 0, 10),   # missed: 0
               case(0, 5, 0),    # empty reference, false positive: 0 where counted
               case(0, 0, 0)]    # empty reference, empty prediction
    values = dice_protocols(records)
    assert values["per_case_nonempty"] == pytest.approx((0.8 + 0.0) / 2)
    assert values["nnunet"] == pytest.approx((0.8 + 0.0 + 0.0) / 3)  # empty/empty dropped, FP case 0
    assert values["per_case_empty_as_one"] == pytest.approx((0.8 + 0.0 + 0.0 + 1.0) / 4)
    assert values["pooled"] == pytest.approx(16 / (16 + 7 + 12))


def test_protocols_of_empty_references_only():
    correct = dice_protocols([case(0, 0, 0), case(0, 0, 0)])
    assert correct == {"per_case_nonempty": None, "nnunet": None, "per_case_empty_as_one": 1.0, "pooled": None}
    one_fp = dice_protocols([case(0, 0, 0), case(0, 3, 0)])
    assert one_fp == {"per_case_nonempty": None, "nnunet": 0.0, "per_case_empty_as_one": 0.5, "pooled": 0.0}
    assert dice_protocols([]) == {"per_case_nonempty": None, "nnunet": None, "per_case_empty_as_one": None,
                                  "pooled": None}


def test_nnunet_foreground_mean_is_the_mean_of_label_means_and_undefined_with_one_undefined():
    assert nnunet_foreground_mean([0.2, 0.6]) == pytest.approx(0.4)
    assert nnunet_foreground_mean([0.2, None]) is None  # nnU-Net: np.mean over a NaN gives NaN


@pytest.mark.parametrize("hits,total", [(0, 5), (1, 4), (3, 3), (7, 40)])
def test_clopper_pearson_equals_scipy_and_the_beta_quantiles(hits, total):
    low, high = clopper_pearson(hits, total)
    interval = binomtest(hits, total).proportion_ci(confidence_level=0.95, method="exact")
    assert (low, high) == pytest.approx((interval.low, interval.high), abs=1e-12)
    # the textbook form: beta quantiles, 0 and 1 at the ends
    expected_low = 0.0 if hits == 0 else beta.ppf(0.025, hits, total - hits + 1)
    expected_high = 1.0 if hits == total else beta.ppf(0.975, hits + 1, total - hits)
    assert (low, high) == pytest.approx((expected_low, expected_high), abs=1e-9)
    assert clopper_pearson(0, 0) is None


def test_holm_on_a_known_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, None, 0.01]) == [pytest.approx(0.5), None, pytest.approx(0.02)]  # None: not in the family
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_exact_sign_flip_p():
    assert sign_flip_p([0.1, 0.2, 0.05, 0.3, 0.15, 0.12]) == pytest.approx(2 / 64)  # all positive: the extreme
    # one small negative of six: the patterns with |mean| at least as large are 4 of 64
    assert sign_flip_p([0.1, 0.2, -0.05, 0.3, 0.15, 0.12]) == pytest.approx(4 / 64)


def test_runs_needed_matches_the_paired_t_test_tables():
    # two-sided alpha 0.05, power 0.8: effect size 1 needs 10 pairs, 0.5 needs 34 (standard t-test tables)
    assert runs_needed(0.02, 0.02) == 10
    assert runs_needed(-0.01, 0.02) == 34
    assert runs_needed(0.0, 0.02) is None


def test_run_level_difference_needs_six_runs_for_the_exact_test():
    runs = {f"r{i}": ([0.8, 0.7], [0.85, 0.75]) for i in range(5)}
    few = run_level_difference(runs, resamples=200)
    assert few["n_runs"] == 5 and few["mean_difference"] == pytest.approx(0.05) and few["exact_p"] is None
    assert few["min_attainable_p"] == pytest.approx(2 / 32)
    runs["r5"] = ([0.8, 0.7], [0.86, 0.74])
    six = run_level_difference(runs, resamples=200)
    assert six["exact_p"] == pytest.approx(2 / 64)


def _simulate(rng, n_runs, n_cases, difference, run_sd, case_sd):
    run_effects = rng.normal(difference, run_sd, n_runs)
    return [rng.normal(effect, case_sd, n_cases) for effect in run_effects]


def test_hierarchical_bootstrap_covers_a_known_difference_where_a_case_bootstrap_does_not():
    """Runs differ by a run effect (sd 0.02) and cases by noise (sd 0.05): the true difference is
    0.01. The hierarchical 95 % CI must cover it in roughly 95 % of simulated studies; percentile
    intervals with 12 clusters run a little short, hence the band [0.85, 0.99]. Resampling pooled
    cases only (the naive interval) ignores the run effect and covers far less often: the check
    can fail."""
    rng = np.random.default_rng(2024)
    simulations, truth = 200, 0.01
    hierarchical = naive = 0
    for _ in range(simulations):
        runs = _simulate(rng, n_runs=12, n_cases=20, difference=truth, run_sd=0.02, case_sd=0.05)
        low, high = hierarchical_bootstrap_ci(runs, resamples=400, seed=int(rng.integers(1 << 31)))
        hierarchical += low <= truth <= high
        pooled = np.concatenate(runs)
        means = pooled[rng.integers(0, len(pooled), size=(400, len(pooled)))].mean(axis=1)
        naive_low, naive_high = np.quantile(means, [0.025, 0.975])
        naive += naive_low <= truth <= naive_high
    assert 0.85 <= hierarchical / simulations <= 0.99
    assert naive / simulations < 0.75
