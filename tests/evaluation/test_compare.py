"""compare_evaluations and its paired statistics on constructed pairs."""

import json
import re

import numpy as np
import pytest

from pu_nnunet.evaluation import EvaluationError, compare_evaluations, evaluate_folders
from pu_nnunet.evaluation.metrics.paired_stats import paired_flags, paired_scores


def test_constant_improvement():
    a = np.linspace(0.5, 0.85, 8)
    stats = paired_scores(a, a + 0.1)
    assert stats["mean_difference"] == pytest.approx(0.1)
    # every resample has mean difference 0.1
    assert stats["ci_low"] == pytest.approx(0.1) and stats["ci_high"] == pytest.approx(0.1)
    assert (stats["a_better"], stats["ties"], stats["b_better"]) == (0, 0, 8)
    # exact two-sided signed-rank test, all 8 differences positive: p = 2 / 2^8
    assert stats["wilcoxon_p"] == pytest.approx(2 / 2 ** 8)


def test_mixed_differences():
    a = [0.8, 0.7, 0.6, 0.9, 0.5, 0.4]
    b = [0.9, 0.7, 0.5, 0.95, 0.8, 0.4]
    stats = paired_scores(a, b)
    assert (stats["a_better"], stats["ties"], stats["b_better"]) == (1, 2, 3)
    assert stats["mean_difference"] == pytest.approx(np.mean(np.subtract(b, a)))
    assert stats["ci_low"] < stats["mean_difference"] < stats["ci_high"]
    # two ties dropped; ranks of |d| = .1, .1, .05, .3 -> 2.5, 2.5, 1, 4; negative rank sum 2.5
    from scipy.stats import wilcoxon

    assert stats["wilcoxon_p"] == pytest.approx(wilcoxon([0.1, -0.1, 0.05, 0.3]).pvalue)
    assert paired_scores(a, b) == stats  # seeded bootstrap: same interval every time


def test_all_ties_and_empty():
    stats = paired_scores([0.5, 0.6], [0.5, 0.6])
    assert stats["wilcoxon_p"] is None and stats["ties"] == 2 and stats["ci_low"] == 0.0
    assert paired_scores([], [])["mean_difference"] is None


def test_false_positive_flags():
    stats = paired_flags([True, True, True, False], [False, False, False, False])
    assert (stats["rate_a"], stats["rate_b"], stats["difference"]) == (0.75, 0.0, -0.75)
    assert (stats["only_a"], stats["only_b"]) == (3, 0)
    assert stats["mcnemar_p"] == pytest.approx(0.25)  # exact binomial: 2 * 0.5^3
    assert paired_flags([False], [False])["mcnemar_p"] is None


@pytest.fixture
def two_runs(tmp_path, synth):
    refs, preds_a = synth.hand_checked_3d()
    preds_b = dict(preds_a)
    preds_b["overlap"] = refs["overlap"]  # B is perfect on overlap
    preds_b["fp_only"] = np.zeros(synth.SHAPE_3D, np.uint8)  # and has no false positive
    preds_b["missed"] = synth.box(synth.SHAPE_3D, slice(0, 1), slice(0, 2), slice(0, 4))  # 8 of 10 voxels
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred_a", preds_a, ".nii.gz")
    synth.write_cases(tmp_path / "pred_b", preds_b, ".nii.gz")
    meta = synth.write_meta(tmp_path / "cases.json", {"overlap": "malignant", "fp_only": "normal", "normal": "normal",
                                                "missed": "benign"})
    for run in ("a", "b"):
        evaluate_folders(tmp_path / f"pred_{run}", tmp_path / "ref", tmp_path / f"eval_{run}", device="cpu",
                         meta=meta, plots=False)
    return tmp_path


def test_compare_evaluations(two_runs, check_plot):
    result = compare_evaluations(two_runs / "eval_a", two_runs / "eval_b", two_runs / "cmp",
                                 names=("baseline", "pure"))
    fg = result["overall"]["foreground"]
    dice_a = [40 / 58, 0.0]  # overlap, missed
    dice_b = [1.0, 16 / 18]
    assert fg["dice"]["n"] == 2
    assert fg["dice"]["mean_a"] == pytest.approx(np.mean(dice_a))
    assert fg["dice"]["mean_b"] == pytest.approx(np.mean(dice_b))
    assert fg["dice"]["mean_difference"] == pytest.approx(np.mean(np.subtract(dice_b, dice_a)))
    assert (fg["dice"]["a_better"], fg["dice"]["ties"], fg["dice"]["b_better"]) == (0, 0, 2)
    assert (fg["false_positive"]["rate_a"], fg["false_positive"]["rate_b"]) == (0.5, 0.0)
    assert fg["false_positive"]["difference"] == -0.5
    assert result["per_class"]["normal"]["foreground"]["false_positive"]["n"] == 2
    assert result["per_class"]["malignant"]["1"]["dice"]["mean_b"] == 1.0
    text = (two_runs / "cmp" / "comparison.json").read_text()
    json.loads(text, parse_constant=lambda token: pytest.fail(f"invalid JSON {token}"))
    report = (two_runs / "cmp" / "report.md").read_text()
    assert "| Dice baseline | Dice pure | pure - baseline |" in re.sub(" +", " ", report)  # cells are padded
    assert "Class normal" in report
    check_plot(two_runs / "cmp" / "plots" / "paired_dice.png")
    check_plot(two_runs / "cmp" / "plots" / "mean_difference.png")
    rows = (two_runs / "cmp" / "per_case_paired.csv").read_text().splitlines()
    assert rows[0].startswith("case,class,label,dice_baseline,dice_pure") and len(rows) == 1 + 4 * 3


def test_compare_refuses_different_references(two_runs):
    other = json.loads((two_runs / "eval_b" / "metrics.json").read_text())
    other["cases"][0]["labels"]["1"]["n_ref"] += 1
    with pytest.raises(EvaluationError, match="not the same references"):
        compare_evaluations(two_runs / "eval_a", other, two_runs / "cmp", plots=False)


def test_compare_needs_overwrite_and_valid_input(two_runs):
    compare_evaluations(two_runs / "eval_a", two_runs / "eval_b", two_runs / "cmp", plots=False)
    with pytest.raises(EvaluationError, match="--overwrite"):
        compare_evaluations(two_runs / "eval_a", two_runs / "eval_b", two_runs / "cmp", plots=False)
    compare_evaluations(two_runs / "eval_a", two_runs / "eval_b", two_runs / "cmp", plots=False, overwrite=True)
    with pytest.raises(EvaluationError, match="not found"):
        compare_evaluations(two_runs / "nowhere", two_runs / "eval_b", two_runs / "cmp2", plots=False)
    (two_runs / "bad.json").write_text('{"cases": NaN}')
    with pytest.raises(EvaluationError, match="not valid JSON"):
        compare_evaluations(two_runs / "bad.json", two_runs / "eval_b", two_runs / "cmp2", plots=False)


def test_compare_pairs_nsd_and_hd95(two_runs):
    """B is perfect on overlap (NSD 1, HD95 0); A's missed case has no HD95 (empty prediction), so
    HD95 is paired over overlap alone, NSD over overlap and missed."""
    result = compare_evaluations(two_runs / "eval_a", two_runs / "eval_b", two_runs / "cmp", plots=False)
    evaluation_a = json.loads((two_runs / "eval_a" / "metrics.json").read_text())
    a = {c["case"]: c["labels"]["foreground"] for c in evaluation_a["cases"]}
    fg = result["overall"]["foreground"]
    assert result["scores"] == ["dice", "iou", "nsd", "hd95"] and result["boundary_note"] is None
    assert fg["nsd"]["n"] == 2 and fg["nsd"]["mean_a"] == pytest.approx((a["overlap"]["nsd"] + 0.0) / 2)
    assert fg["hd95"]["n"] == 1
    assert (fg["hd95"]["mean_a"], fg["hd95"]["mean_b"]) == (pytest.approx(a["overlap"]["hd95"]), 0.0)
    report = re.sub(" +", " ", (two_runs / "cmp" / "report.md").read_text())
    assert "## All cases: NSD" in report and "## All cases: HD95 (cases where both runs have it)" in report
    # HD95 is better lower: B's smaller distance is a win of B
    hd95_row = report.split("## All cases: HD95")[1].split("**foreground**")[1].splitlines()[0]
    assert hd95_row.rstrip(" |").endswith("0 / 0 / 1")
    header = (two_runs / "cmp" / "per_case_paired.csv").read_text().splitlines()[0]
    assert header.endswith("nsd_A,nsd_B,hd95_A,hd95_B")


def test_compare_reads_evaluations_without_boundary_metrics(two_runs):
    old = json.loads((two_runs / "eval_a" / "metrics.json").read_text())
    for case in old["cases"]:
        for record in case["labels"].values():
            del record["nsd"], record["hd95"]
    (two_runs / "old.json").write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="NSD and HD95 are not compared"):
        result = compare_evaluations(two_runs / "old.json", two_runs / "eval_b", two_runs / "cmp", plots=False)
    assert result["scores"] == ["dice", "iou"] and "nsd" not in result["overall"]["foreground"]
    assert "NSD and HD95 are not compared: evaluation A has none" in (two_runs / "cmp" / "report.md").read_text()


def test_pooled_runs_test_false_positives_per_image_not_as_independent_cases(two_runs):
    """Two runs of each evaluation pooled as a study pools them: the same image in two runs is one
    cluster, so McNemar on the pooled image-runs is withheld and the report names the per-image test."""
    from collections import namedtuple

    from pu_nnunet.study.report.run_pooling import pooled_evaluation

    runs = [namedtuple("Run", "fold repeat")(0, r) for r in (0, 1)]
    pooled = [pooled_evaluation({job: json.loads((two_runs / f"eval_{side}" / "metrics.json").read_text())
                                 for job in runs}, runs) for side in ("a", "b")]
    result = compare_evaluations(pooled[0], pooled[1], two_runs / "cmp_pooled", names=("baseline", "pure"),
                                 plots=False)
    fp = result["overall"]["foreground"]["false_positive"]
    assert fp["n"] == 4 and fp["mcnemar_p"] is None  # 2 reference-empty images x 2 runs
    assert fp["clustered"]["n_images"] == 2 and fp["clustered"]["n_runs"] == 2
    report = (two_runs / "cmp_pooled" / "report.md").read_text()
    assert "per-image sign flip, 2 images x 2 runs" in report
