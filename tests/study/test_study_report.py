"""The study report from hand-made runs (no training): spread over runs, pairing by fold and repeat,
false positives on normal images, and the published PU-UNet numbers for BUSI."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.stats import beta, t

from pu_nnunet.evaluation import evaluate_folders
from pu_nnunet.study.jobs import Job, mark_finished, mark_started
from pu_nnunet.study.report.study_report import write_study_report
from pu_nnunet.study.spec import Study

PURE, BASELINE = "nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline"
CASES = {"benign_1": "benign", "benign_2": "benign", "normal_1": "normal", "normal_2": "normal"}


def write_volume(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def lesion(size: int) -> np.ndarray:
    array = np.zeros((1, 12, 12), dtype=np.uint8)
    array[0, 2:2 + size, 2:2 + size] = 1
    return array


@pytest.fixture
def busi_like_study(tmp_path):
    raw = tmp_path / "raw" / "Dataset303_BUSI"
    (raw / "dataset.json").parent.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz",
                                                  "channel_names": {"0": "US"}, "numTraining": 4}))
    (raw / "cases.json").write_text(json.dumps({case: {"class": c} for case, c in CASES.items()}))
    for case, kind in CASES.items():
        write_volume(raw / "labelsTs" / f"{case}.nii.gz", lesion(6) if kind == "benign" else lesion(0))
    study = Study(dataset_id=303, trainers=[PURE, BASELINE], baseline=BASELINE, folds=[0, 1], repeats=2,
                  paths={"study_dir": str(tmp_path / "study"), "nnUNet_raw": str(tmp_path / "raw"),
                         "nnUNet_preprocessed": str(tmp_path / "pre"), "nnUNet_results": str(tmp_path / "res")})
    # PURe finds lesions of size 5 and stays silent on normal images; the baseline finds size 4
    # and marks normal_1 in every run, normal_2 in repeat 1 only
    dice = {}
    for trainer in (PURE, BASELINE):
        for fold in (0, 1):
            for repeat in (0, 1):
                job = Job(trainer, fold, repeat)
                predictions = tmp_path / "pred" / job.name
                size = (5 if trainer == PURE else 4) - fold  # fold 1 a little worse for both
                for case, kind in CASES.items():
                    if kind == "benign":
                        prediction = lesion(size)
                    else:
                        marks = trainer == BASELINE and (case == "normal_1" or repeat == 1)
                        prediction = lesion(1) if marks else lesion(0)
                    write_volume(predictions / f"{case}.nii.gz", prediction)
                dice[job] = 2 * size ** 2 / (size ** 2 + 36)
                out = tmp_path / "study" / "runs" / job.name / "evaluation"
                evaluate_folders(predictions, raw / "labelsTs", out, device="cpu", dataset_json=raw / "dataset.json",
                                 meta=raw / "cases.json", plots=False)
                mark_started(study.study_dir, job, "cpu", tmp_path / "train.log")
                mark_finished(study.study_dir, job, evaluation=str(out), held_out="test", train_s=10.0 + fold)
    return study, dice


def test_the_report_gathers_runs_pairs_them_and_sets_published_numbers_beside_them(busi_like_study):
    study, dice = busi_like_study
    summary = write_study_report(study)
    pure = summary["per_trainer"][PURE]
    assert pure["n_runs"] == 4 and pure["foreground"]["dice"]["n"] == 4
    expected = [dice[job] for job in dice if job.trainer == PURE]
    assert pure["foreground"]["dice"]["mean"] == pytest.approx(np.mean(expected))
    assert pure["foreground"]["dice"]["sd"] == pytest.approx(np.std(expected, ddof=1))
    baseline = summary["per_trainer"][BASELINE]
    # false positives on normal images: normal_1 in 4 runs, normal_2 in the 2 repeat-1 runs, of 8 image-runs;
    # the interval's sample is the 2 images (k = 6 / 4 runs = 1.5 of n = 2), not the 8 image-runs
    rate = baseline["foreground"]["fpr_images"]
    assert (rate["false_positive_cases"], rate["n_reference_empty"], rate["rate"]) == (6, 8, 0.75)
    assert (rate["n_images"], rate["n_runs"], rate["images_flagged_every_run"], rate["images_flagged_some_runs"]) == \
        (2, 4, 1, 1)
    assert (rate["ci_low"], rate["ci_high"]) == pytest.approx((beta.ppf(0.025, 1.5, 1.5), beta.ppf(0.975, 2.5, 0.5)))
    assert baseline["per_class_foreground_fpr"]["normal"]["mean"] == pytest.approx(0.75)
    assert pure["per_class_foreground_fpr"]["normal"]["mean"] == 0.0

    paired = summary["paired"][PURE]
    assert paired["folds"] == [0, 1] and paired["repeats"] == [0, 1] and paired["n_cases_compared"] == 16
    stats = paired["overall"]["foreground"]
    assert stats["dice"]["n"] == 8 and stats["dice"]["b_better"] == 8  # every benign case of every run
    assert stats["dice"]["mean_difference"] == pytest.approx(np.mean(
        [dice[Job(PURE, f, r)] - dice[Job(BASELINE, f, r)] for f in (0, 1) for r in (0, 1)]))
    assert stats["false_positive"]["n"] == 8 and stats["false_positive"]["only_a"] == 6
    # runs pooled: no McNemar over the 8 image-runs; per run McNemar (1 or 2 discordant images) and across
    # runs the sign flip over the 2 images (differences -4 and -2: p = 2 / 2^2)
    clustered = stats["false_positive"]["clustered"]
    assert stats["false_positive"]["mcnemar_p"] is None and clustered["n_images"] == 2 and clustered["n_runs"] == 4
    assert clustered["clustered_p"] == pytest.approx(0.5) and clustered["images_more_a"] == 2
    assert sorted(run["mcnemar_p"] for run in clustered["per_run"]) == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert summary["published"] == {"dice": 0.925, "normal_fpr_baseline": 0.077, "normal_fpr_pu": 0.0}

    report = (study.study_dir / "report.md").read_text()
    assert "Foreground Dice under the four averaging protocols" in report and "(paper 0.925)" in report
    assert "does not state how its Dice is averaged" in report and "0.077" in report
    assert "foreground, class normal" in report and "Finished runs: 8 of 8" in report
    # two labels' Dice tests (lesion, foreground) in the Holm family: the smaller p doubled
    assert stats["dice"]["wilcoxon_p_holm"] == pytest.approx(2 * stats["dice"]["wilcoxon_p"])


def test_run_level_analysis_and_protocols_by_hand(busi_like_study):
    study, dice = busi_like_study
    summary = write_study_report(study)
    run_level = summary["run_level"][PURE]["foreground"]
    differences = {f"fold {f}, repeat {r}": dice[Job(PURE, f, r)] - dice[Job(BASELINE, f, r)]
                   for r in (0, 1) for f in (0, 1)}
    assert {r["run"]: r["difference"] for r in run_level["runs"]} == pytest.approx(differences)
    assert run_level["mean_difference"] == pytest.approx(np.mean(list(differences.values())))
    assert run_level["sd"] == pytest.approx(np.std(list(differences.values()), ddof=1))
    values = list(differences.values())
    half = t.ppf(0.975, 3) * np.std(values, ddof=1) / 2
    assert (run_level["t_low"], run_level["t_high"]) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    assert run_level["two_way_low"] < run_level["mean_difference"] < run_level["two_way_high"]
    # PURe wins every run: the exact sign-flip p is 2 / 2^4; Holm over the 2 labels doubles it; 4 runs
    # cannot reach 0.05, so the conclusion is not "different"
    assert run_level["sign_flip_p"] == pytest.approx(2 / 16) and run_level["sign_flip_p_holm"] == pytest.approx(0.25)
    assert run_level["conclusion"] in ("equivalent", "inconclusive")
    assert run_level["power"]["family_size"] == 2 and run_level["power"]["fewest_runs_for_level"] == 7
    report = (study.study_dir / "report.md").read_text()
    assert "t-interval" in report and "Run-level differences against the baseline (Dice)" in report
    assert "two-way (pigeonhole" in report and "runs for 80% power" in report
    # the baseline's protocols: benign cases Dice d, normal_1 always a false positive (0), normal_2 a false
    # positive in repeat 1 (0) and empty/empty in repeat 0
    protocols = summary["per_trainer"][BASELINE]["dice_protocols"]["foreground"]
    runs = [(dice[Job(BASELINE, f, r)], r) for f in (0, 1) for r in (0, 1)]
    assert protocols["nnunet"]["mean"] == pytest.approx(np.mean([2 * d / (3 if r == 0 else 4) for d, r in runs]))
    assert protocols["per_case_empty_as_one"]["mean"] == pytest.approx(
        np.mean([(2 * d + (1 if r == 0 else 0)) / 4 for d, r in runs]))
    assert protocols["per_case_nonempty"]["mean"] == pytest.approx(np.mean([d for d, _ in runs]))
    record = json.loads((study.study_dir / "provenance.json").read_text())
    assert record["files"]["dataset.json"]["sha256"] and set(record["runs"]) == {job.name for job in dice}
    assert (study.study_dir / "plots" / "per_run_dice.png").stat().st_size > 0


def test_a_partial_study_reports_what_finished_and_lists_the_rest(busi_like_study):
    study, _ = busi_like_study
    study.repeats = 3  # repeat 2 never ran
    summary = write_study_report(study)
    assert summary["n_runs_finished"] == 8 and len(summary["missing_runs"]) == 4
    assert all(name.endswith("(pending)") for name in summary["missing_runs"])
    assert "missing: nnUNetTrainerPURe__fold_0__repeat_2 (pending)" in (study.study_dir / "report.md").read_text()


def test_run_level_pairs_from_compares_paired_csv_equal_those_from_the_runs(busi_like_study):
    """A study kept without its runs (only comparisons/*/per_case_paired.csv) gives the same pairs."""
    from pu_nnunet.study.report import run_level

    study, _ = busi_like_study
    summary = write_study_report(study)
    from_csv = run_level.pairs_from_paired_csv(
        study.study_dir / "comparisons" / "PURe_vs_PUReBaseline" / "per_case_paired.csv")
    analysis = run_level.run_level_analysis({PURE: from_csv})
    for key in ("1", "foreground"):  # the normal images (reference-empty) are left out in both
        assert analysis[PURE][key]["runs"] == summary["run_level"][PURE][key]["runs"]
        assert analysis[PURE][key]["t_low"] == pytest.approx(summary["run_level"][PURE][key]["t_low"])
        assert analysis[PURE][key]["two_way_low"] == pytest.approx(summary["run_level"][PURE][key]["two_way_low"])
