"""Image-level flag rates across runs: the images are the sample, never the image-runs."""

import pytest
from scipy.stats import binomtest

from pu_nnunet.evaluation.metrics.flag_rates import clustered_paired_test, flag_rate, split_run_tag
from pu_nnunet.evaluation.metrics.paired_stats import paired_flags


def test_run_tags_of_studies_and_sweeps():
    assert split_run_tag("case_1|fold_0|repeat_2") == ("case_1", "fold_0|repeat_2")
    assert split_run_tag("case_1|run_3") == ("case_1", "run_3")
    assert split_run_tag("case|odd") == ("case|odd", None)


def test_ten_images_flagged_in_three_runs_are_ten_not_thirty():
    """The issue's example: 30/30 pooled read 0.88-1.00; with 10 images as the sample 0.69-1.00."""
    ids = [f"normal_{i}|fold_0|repeat_{r}" for r in range(3) for i in range(10)]
    rate = flag_rate(ids, [True] * 30)
    assert (rate["false_positive_cases"], rate["n_reference_empty"], rate["n_images"], rate["n_runs"]) == (30, 30, 10, 3)
    assert rate["ci_low"] == pytest.approx(0.025 ** (1 / 10)) and rate["ci_high"] == 1.0  # 0.6915
    single = flag_rate([f"normal_{i}" for i in range(10)], [True] * 3 + [False] * 7)  # one run: the binomial one
    interval = binomtest(3, 10).proportion_ci(0.95, method="exact")
    assert (single["ci_low"], single["ci_high"]) == pytest.approx((interval.low, interval.high))
    assert [run["rate"] for run in rate["per_run"]] == [1.0, 1.0, 1.0]


def test_the_clustered_paired_test_is_mcnemar_with_one_run_and_clusters_images_across_runs():
    ids = [f"n{i}" for i in range(7)]
    a = [True] * 6 + [False]
    b = [False] * 7
    one_run = clustered_paired_test(ids, a, b)
    assert one_run["clustered_p"] == pytest.approx(binomtest(6, 6, 0.5).pvalue) == pytest.approx(2 / 64)
    assert one_run["per_run"][0]["mcnemar_p"] == pytest.approx(2 / 64)
    # the same 6 discordant images in 3 runs: still 6 images (p 2/64), not 18 image-runs (p 2/2^18)
    pooled_ids = [f"{i}|run_{r}" for r in range(3) for i in ids]
    flags = paired_flags(a * 3, b * 3, case_ids=pooled_ids)
    assert flags["mcnemar_p"] is None and flags["only_a"] == 18
    assert flags["clustered"]["clustered_p"] == pytest.approx(2 / 64) and flags["clustered"]["n_images"] == 7
    assert paired_flags(a, b, case_ids=ids)["mcnemar_p"] == pytest.approx(2 / 64)  # one run: as before
