"""The four Dice protocols on hand-built case sets, exact rate intervals, Holm and the exact
sign-flip test (the rest of the run-level statistics: test_run_stats.py)."""

import numpy as np
import pytest
from scipy.stats import beta, binomtest

from pu_nnunet.evaluation.metrics.protocols import clopper_pearson, dice_protocols, nnunet_foreground_mean
from pu_nnunet.evaluation.metrics.run_stats import holm, run_level_difference, sign_flip_test


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


def test_holm_leaves_nan_and_none_out_of_the_family():
    # a NaN p must not corrupt the others: [0.01, 0.04] adjusted as a family of two
    assert holm([0.01, float("nan"), 0.04, None]) == [pytest.approx(0.02), None, pytest.approx(0.04), None]


def test_exact_sign_flip_p():
    sign_flip_p = lambda d: sign_flip_test(d)["p"]  # noqa: E731
    assert sign_flip_p([0.1, 0.2, 0.05, 0.3, 0.15, 0.12]) == pytest.approx(2 / 64)  # all positive: the extreme
    # one small negative of six: the patterns with |mean| at least as large are 4 of 64
    assert sign_flip_p([0.1, 0.2, -0.05, 0.3, 0.15, 0.12]) == pytest.approx(4 / 64)
    assert sign_flip_test([0.1] * 6)["method"] == "exact"


def test_run_level_difference_reports_the_sign_flip_p_and_its_floor_from_two_runs():
    runs = {f"r{i}": ([f"c{j}" for j in range(2)], [0.8, 0.7], [0.85, 0.75]) for i in range(5)}
    few = run_level_difference(runs, resamples=200)
    assert few["n_runs"] == 5 and few["mean_difference"] == pytest.approx(0.05)
    assert few["sign_flip_p"] == pytest.approx(2 / 32) and few["min_attainable_p"] == pytest.approx(2 / 32)
    runs["r5"] = (["c0", "c1"], [0.8, 0.7], [0.86, 0.74])
    six = run_level_difference(runs, resamples=200)
    assert six["sign_flip_p"] == pytest.approx(2 / 64) and six["sign_flip_method"] == "exact"
