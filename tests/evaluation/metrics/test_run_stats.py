"""Run-level statistics (issue 26): the t-interval's coverage on crossed run x case designs, the
not-informative rule, exact and Monte-Carlo sign-flip tests, sign-flip power against its exact
value, Holm's family in the runs needed, TOST on constructed run sets, and clean verdicts for one
run, sd 0 and NaN Dice."""

import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm, t

from pu_nnunet.evaluation.metrics.run_stats import (EXACT_SIGN_FLIP_MAX_RUNS, MIN_RUNS_FOR_INTERVAL, exact_sign_flip_p,
                                                    min_runs_for_level, plausible_sds, run_level_difference,
                                                    runs_for_power, sign_flip_power, sign_flip_test, t_interval,
                                                    tost_p, two_way_bootstrap_ci)
from pu_nnunet.study.report import run_level


@pytest.mark.parametrize("n_runs", [2, 3, 5, 10])
def test_t_interval_covers_the_test_set_mean_of_a_crossed_design(n_runs):
    """d[r, c] = mu + a[c] (shared by every run) + b[r] + e[r, c]; the interval claims new runs on
    this test set, so its target is mu + mean(a). 2000 simulated studies: 95 % +- 3 points (the
    Monte-Carlo sd of the share is 0.5 points, so a 3-point miss is a real failure)."""
    rng = np.random.default_rng(26)
    simulations, cases = 2000, 8
    a = rng.normal(0, 0.02, (simulations, 1, cases))
    b = rng.normal(0, 0.02, (simulations, n_runs, 1))
    d = 0.005 + a + b + rng.normal(0, 0.03, (simulations, n_runs, cases))
    target = 0.005 + a.mean(axis=(1, 2))
    low, high = t_interval(d.mean(axis=2))
    coverage = ((low <= target) & (target <= high)).mean()
    assert 0.92 <= coverage <= 0.98


def test_two_way_bootstrap_holds_its_level_for_new_runs_and_cases():
    """The two-way interval claims the population mean mu (new runs and new cases); with 5 runs and
    a large case effect it must cover mu in about 95 % or more of 300 studies (it is conservative)."""
    rng = np.random.default_rng(7)
    covered = 0
    for i in range(300):
        d = rng.normal(0, 0.03, (1, 12)) + rng.normal(0, 0.01, (5, 1)) + rng.normal(0, 0.02, (5, 12))
        low, high = two_way_bootstrap_ci(d, resamples=300, seed=i)
        covered += low <= 0.0 <= high
    assert covered / 300 >= 0.92


def test_below_the_minimum_runs_no_interval_is_printed():
    runs = {"r0": (["c0", "c1"], [0.8, 0.7], [0.82, 0.75]), "r1": (["c0", "c1"], [0.8, 0.7], [0.84, 0.71])}
    entry = run_level_difference(runs, resamples=100)
    assert MIN_RUNS_FOR_INTERVAL == 3 and entry["n_runs"] == 2
    assert entry["t_low"] is None and entry["two_way_low"] is None and "not informative" in entry["interval_note"]
    runs["r2"] = (["c0", "c1"], [0.8, 0.7], [0.81, 0.73])
    entry = run_level_difference(runs, resamples=100)
    differences = [0.035, 0.025, 0.02]
    half = t.ppf(0.975, 2) * np.std(differences, ddof=1) / math.sqrt(3)
    assert (entry["t_low"], entry["t_high"]) == pytest.approx((np.mean(differences) - half, np.mean(differences) + half))


@pytest.mark.parametrize("n", range(1, 11))
def test_exact_sign_flip_p_equals_the_enumeration_of_every_sign_pattern(n):
    rng = np.random.default_rng(n)
    data = rng.normal(0.2, 1.0, (4, n))
    patterns = np.array(list(itertools.product((-1.0, 1.0), repeat=n)))
    brute = [(np.abs(patterns @ row) >= abs(row.sum()) - 1e-12).mean() for row in data]
    assert exact_sign_flip_p(data) == pytest.approx(brute, abs=1e-12)


def test_monte_carlo_sign_flip_above_16_runs_agrees_with_the_exact_p():
    data = np.random.default_rng(3).normal(0.3, 1.0, EXACT_SIGN_FLIP_MAX_RUNS + 1)
    result = sign_flip_test(data)
    assert result["method"] == "monte-carlo" and result["resamples"] == 100_000
    exact = exact_sign_flip_p(data)[0]
    assert abs(result["p"] - exact) <= 4 * result["mc_se"]
    assert result["mc_se"] == pytest.approx(math.sqrt(result["p"] * (1 - result["p"]) / 100_000))
    assert sign_flip_test(data) == result  # seeded


@pytest.mark.parametrize("effect", [0.5, 1.0, 2.0])
def test_sign_flip_power_by_simulation_matches_the_exact_power_at_six_runs(effect):
    """With 6 runs at level 0.05 only the two all-one-sign patterns reject (p = 2/64; any other
    pattern has p >= 4/64), so the exact power is Phi(e)^6 + Phi(-e)^6; with 5 runs it is 0."""
    exact = norm.cdf(effect) ** 6 + norm.cdf(-effect) ** 6
    simulated = sign_flip_power(effect, 6, 0.05)
    assert abs(simulated - exact) <= 4 * math.sqrt(exact * (1 - exact) / 2000)
    assert sign_flip_power(effect, 5, 0.05) == 0.0


def test_holm_family_size_raises_the_runs_needed_as_computed_by_hand():
    # the floor 2 / 2^R <= 0.05 / m: m = 1 -> 6, 3 -> 7 (2/128 = 0.016 <= 0.0167), 8 -> 9, 16 -> 10
    assert [min_runs_for_level(0.05 / m) for m in (1, 3, 8, 16)] == [6, 7, 9, 10]
    # no between-run noise: the floor is all the runs needed (not 2)
    assert [runs_for_power(0.01, 0.0, m) for m in (1, 3, 8, 16)] == [6, 7, 9, 10]
    # effect 3 sd: at 6 runs the power is Phi(3)^6 = 0.992 at level 0.05; with 8 tests the floor decides
    assert runs_for_power(0.03, 0.01, 1) == 6 and runs_for_power(0.03, 0.01, 8) == 9
    # effect 0.5 sd: about 35 runs at 0.05 (the paired t-test needs 34); more with a family of 8
    alone, family = runs_for_power(0.01, 0.02, 1), runs_for_power(0.01, 0.02, 8)
    assert 32 <= alone <= 38 and family > alone + 10


def test_plausible_sds_are_the_chi_square_upper_bounds():
    sds = dict(plausible_sds(0.02, 3))
    assert sds["observed"] == 0.02
    assert sds["95% upper bound"] == pytest.approx(0.02 * math.sqrt(2 / 0.10259), rel=1e-4)  # chi2(2) 5 % = 0.10259
    assert sds["80% upper bound"] < sds["95% upper bound"]


def test_tost_by_hand():
    d = np.array([0.002, -0.001, 0.003, 0.0, 0.001])
    se = d.std(ddof=1) / math.sqrt(5)
    expected = max(t.sf((d.mean() + 0.01) / se, 4), t.cdf((d.mean() - 0.01) / se, 4))
    assert tost_p(d, 0.01) == pytest.approx(expected)
    assert tost_p([0.01], 0.01) is None and tost_p([0.002, 0.002, 0.002], 0.01) is None  # 1 run, sd 0


def _runs(differences, cases=4):
    """Run sets with the given per-run mean differences (cases share their baseline scores)."""
    return {f"fold 0, repeat {i}": ([f"c{j}" for j in range(cases)], [0.8] * cases, [0.8 + d] * cases)
            for i, d in enumerate(differences)}


def _foreground(differences, **kwargs):
    analysis = run_level.run_level_analysis({"T": {"foreground": _runs(differences)}}, **kwargs)
    return analysis["T"]["foreground"]


def test_equivalent_different_and_inconclusive_run_sets():
    equivalent = _foreground([0.001, -0.002, 0.0015, 0.0005, -0.001, 0.002])
    assert equivalent["conclusion"] == "equivalent" and equivalent["tost_p"] < 0.05
    different = _foreground([0.03, 0.04, 0.035, 0.05, 0.028, 0.033, 0.041, 0.036])
    assert different["conclusion"] == "different" and different["sign_flip_p_holm"] == pytest.approx(2 / 256)
    assert different["tost_p"] > 0.05
    inconclusive = _foreground([0.02, -0.03, 0.01])
    assert inconclusive["conclusion"] == "inconclusive"
    text = run_level.verdict("T", "B", inconclusive)
    assert "inconclusive" in text and "equivalent within" not in text
    assert "equivalent within ±0.01" in run_level.verdict("T", "B", equivalent)
    # the margin is the user's: a 0.001 margin makes the same runs inconclusive
    assert _foreground([0.001, -0.002, 0.0015, 0.0005, -0.001, 0.002], margin=0.001)["conclusion"] == "inconclusive"


def test_verdicts_with_one_run_sd_zero_and_nan_dice():
    one = _foreground([0.02])
    text = run_level.verdict("T", "B", one)
    assert one["conclusion"] == "not tested" and "from 1 paired run" in text and "CI" not in text
    assert text.count(".") == text.count("0.") + 1  # one sentence, numbers aside
    identical = _foreground([0.02, 0.02])
    text = run_level.verdict("T", "B", identical)
    assert identical["sd"] == 0.0 and identical["t_low"] is None and "excludes" not in text
    assert "sd 0" in text and "inconclusive" in text
    # sd 0 needs the floor of runs, not 2
    assert [row["runs"] for row in identical["power"]["by_sd"]] == [6, 6, 6]
    runs = _runs([0.01, 0.02, 0.015])
    runs["fold 0, repeat 0"][2][1] = float("nan")  # a NaN Dice: that case is dropped, not the run
    entry = run_level.run_level_analysis({"T": {"foreground": runs}})["T"]["foreground"]
    assert entry["n_cases_dropped"] == 1 and entry["runs"][0]["n_cases"] == 3
    assert entry["mean_difference"] == pytest.approx(0.015) and "nan" not in run_level.verdict("T", "B", entry)


def test_pairs_take_a_metric_and_skip_records_without_it():
    from collections import namedtuple

    Job = namedtuple("Job", "trainer fold repeat")

    def metrics(dice, nsd=None):
        label = {"dice": dice, "ref_empty": False, **({} if nsd is None else {"nsd": nsd})}
        return {"cases": [{"case": "c0", "labels": {"foreground": label}}]}

    evaluations = {Job("B", 0, 0): metrics(0.8, 0.7), Job("T", 0, 0): metrics(0.9, 0.75),
                   Job("B", 0, 1): metrics(0.8), Job("T", 0, 1): metrics(0.85)}
    dice = run_level.pairs_from_evaluations(evaluations, "B", ["B", "T"], ["foreground"])
    assert dice["T"]["foreground"] == {"fold 0, repeat 0": (["c0"], [0.8], [0.9]),
                                       "fold 0, repeat 1": (["c0"], [0.8], [0.85])}
    nsd = run_level.pairs_from_evaluations(evaluations, "B", ["B", "T"], ["foreground"], metric="nsd")
    assert nsd["T"]["foreground"] == {"fold 0, repeat 0": (["c0"], [0.7], [0.75])}  # repeat 1 holds no NSD
    assert run_level.pairs_from_evaluations({Job("B", 0, 1): metrics(0.8), Job("T", 0, 1): metrics(0.85)},
                                            "B", ["T"], ["foreground"], metric="nsd") == {}


def test_the_false_positive_rate_is_a_run_level_difference_over_the_empty_cases():
    """A run's FPR is the mean of its empty cases' flags, so the run-level machinery tests the FPR
    difference: a trainer flagging fewer normal images than the baseline in every run gets a
    negative difference, the lesion images are not part of it, and the power plan is for the
    paper's 0.077."""
    from collections import namedtuple

    from pu_nnunet.evaluation.published import PUBLISHED_NORMAL_FPR_DIFFERENCE

    Job = namedtuple("Job", "trainer fold repeat")

    def metrics(flags):
        empty = [{"case": f"normal_{i}", "labels": {"foreground": {"ref_empty": True, "false_positive": flag,
                                                                    "dice": None}}}
                 for i, flag in enumerate(flags)]
        lesion = [{"case": "lesion", "labels": {"foreground": {"ref_empty": False, "false_positive": None,
                                                                "dice": 0.9}}}]
        return {"cases": empty + lesion}

    baseline_flags = [[True, True, False, False], [True, False, True, False], [True, True, True, False]]
    trainer_flags = [[False, True, False, False], [False, False, False, False], [True, False, False, False]]
    evaluations = {}
    for repeat, (b, t) in enumerate(zip(baseline_flags, trainer_flags)):
        evaluations[Job("B", 0, repeat)] = metrics(b)
        evaluations[Job("T", 0, repeat)] = metrics(t)
    pairs = run_level.pairs_from_evaluations(evaluations, "B", ["T"], ["foreground"], metric=run_level.FALSE_POSITIVE)
    cases, base, trainer = pairs["T"]["foreground"]["fold 0, repeat 0"]
    assert cases == ["normal_0", "normal_1", "normal_2", "normal_3"]  # the lesion image is not scored
    assert base == [1.0, 1.0, 0.0, 0.0] and trainer == [0.0, 1.0, 0.0, 0.0]
    analysis = run_level.run_level_analysis(pairs, mid=PUBLISHED_NORMAL_FPR_DIFFERENCE,
                                            margin=PUBLISHED_NORMAL_FPR_DIFFERENCE)
    entry = analysis["T"]["foreground"]
    # FPR per run: baseline 0.5, 0.5, 0.75; trainer 0.25, 0, 0.25
    assert [run["difference"] for run in entry["runs"]] == pytest.approx([-0.25, -0.5, -0.5])
    assert entry["mean_difference"] == pytest.approx(-5 / 12)
    assert entry["power"]["mid"] == pytest.approx(0.077) and entry["margin"] == pytest.approx(0.077)
    text = "\n".join(run_level.markdown(analysis, "B", {"foreground": "foreground"}, str, run_level.FALSE_POSITIVE))
    assert "image-level FPR" in text and "a run's mean is its FPR" in text and "±0.077" in text


def test_the_detectable_difference_is_the_inverse_of_the_runs_for_power():
    """An inconclusive result says what it could have found: the difference n runs detect with 80 %
    power is the one at which runs_for_power asks for n runs (no fewer), it shrinks with more runs,
    and it does not exist where the runs cannot reach the level."""
    from pu_nnunet.evaluation.metrics.run_stats import detectable_difference, runs_for_power

    sd = 0.017
    at_8, at_16 = detectable_difference(8, sd, family_size=2), detectable_difference(16, sd, family_size=2)
    assert 0 < at_16 < at_8
    assert runs_for_power(at_8, sd, family_size=2) == 8
    assert runs_for_power(at_8 * 0.9, sd, family_size=2) > 8
    assert detectable_difference(3, sd, family_size=2) is None  # 3 runs cannot reach p 0.025
    assert detectable_difference(8, 0.0, family_size=2) == 0.0
