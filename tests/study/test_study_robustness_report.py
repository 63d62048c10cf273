"""The study report's Robustness section from hand-made sweeps (no training): Dice over runs, the
change from each run's clean Dice, the pooled false-positive rate with its exact interval, and the
run-level and pooled paired differences against the baseline, checked against hand-computed values."""

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.stats import binomtest

from pu_nnunet.evaluation import evaluate_folders
from pu_nnunet.study.jobs import Job, mark_finished, mark_started
from pu_nnunet.study.report.study_report import write_study_report
from pu_nnunet.robustness.study_sweep import sweep_folder, write_sweep_result
from pu_nnunet.study.spec import Study

PURE, BASELINE = "nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline"
NOISY = "gaussian_0.1"
SETTINGS = {"strengths": {"gaussian": [0.1]}, "seed": 0, "mirroring": False, "keep_inputs": False}
# reference: two cases with a 6x6 lesion, one normal (empty) case
REFERENCE = {"lesion_a": 6, "lesion_b": 6, "normal": 0}
# predicted lesion side per trainer and condition (repeat r predicts one pixel less); the
# baseline marks the normal case under noise
SIDE = {(PURE, "clean"): 6, (PURE, NOISY): 5, (BASELINE, "clean"): 6, (BASELINE, NOISY): 4}


def square(side: int) -> np.ndarray:
    array = np.zeros((1, 12, 12), dtype=np.uint8)
    array[0, 1:1 + side, 1:1 + side] = 1
    return array


def dice(side: int) -> float:
    return 2 * side ** 2 / (side ** 2 + 36)


def save(folder, case, array):
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{case}.nii.gz"))


def evaluate(tmp_path, raw, name, side, marks_normal, out):
    predictions = tmp_path / "predictions" / name
    for case, reference in REFERENCE.items():
        save(predictions, case, square(side) if reference else square(1 if marks_normal else 0))
    evaluate_folders(predictions, raw / "labelsTs", out, device="cpu", dataset_json=raw / "dataset.json", plots=False)


@pytest.fixture(scope="module")
def swept_study(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("robustness_report")
    raw = tmp_path / "raw" / "Dataset303_BUSI"
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz",
                                                  "channel_names": {"0": "US"}, "numTraining": 3}))
    for case, side in REFERENCE.items():
        save(raw / "labelsTs", case, square(side))
    study = Study(dataset_id=303, trainers=[PURE, BASELINE], baseline=BASELINE, folds=[0], repeats=2,
                  robustness=SETTINGS, paths={"study_dir": str(tmp_path / "study"), "nnUNet_raw": str(tmp_path / "raw"),
                                              "nnUNet_preprocessed": str(tmp_path / "pre"),
                                              "nnUNet_results": str(tmp_path / "res")})
    for trainer in (PURE, BASELINE):
        for repeat in (0, 1):
            job = Job(trainer, 0, repeat)
            clean_out = study.study_dir / "runs" / job.name / "evaluation"
            evaluate(tmp_path, raw, job.name, 6, False, clean_out)
            mark_started(study.study_dir, job, "cpu", tmp_path / "train.log")
            mark_finished(study.study_dir, job, evaluation=str(clean_out), held_out="test")
            evaluations = {}
            for condition in ("clean", NOISY):
                out = sweep_folder(study.study_dir, job) / condition / "evaluation"
                evaluate(tmp_path, raw, f"{job.name}_{condition}", SIDE[(trainer, condition)] - repeat,
                         trainer == BASELINE and condition == NOISY, out)
                evaluations[condition] = str(out)
            write_sweep_result(study, job, {"intensity_model": "intensity"}, evaluations)
    return study, write_study_report(study)


def test_per_trainer_dice_change_and_false_positive_rate(swept_study):
    study, summary = swept_study
    section = summary["robustness"]
    assert [c["name"] for c in section["conditions"]] == ["clean", NOISY]
    assert section["runs"][PURE] == [Job(PURE, 0, r).name for r in (0, 1)] and section["missing_runs"] == []
    baseline = section["per_trainer"][BASELINE][NOISY]
    runs = [dice(4), dice(3)]
    assert baseline["dice_per_run"] == pytest.approx(runs)
    assert baseline["dice"]["mean"] == pytest.approx(np.mean(runs))
    assert baseline["dice"]["sd"] == pytest.approx(np.std(runs, ddof=1))
    changes = [dice(4) - dice(6), dice(3) - dice(5)]
    assert baseline["change_from_clean"]["mean"] == pytest.approx(np.mean(changes))
    assert baseline["change_from_clean"]["sd"] == pytest.approx(np.std(changes, ddof=1))
    # the normal case of both runs marked: 2 of 2 image-runs, but one image: the exact interval of 1 of 1
    rate = baseline["false_positive_rate"]
    interval = binomtest(1, 1).proportion_ci(0.95, method="exact")
    assert (rate["false_positive_cases"], rate["n_reference_empty"], rate["rate"]) == (2, 2, 1.0)
    assert (rate["n_images"], rate["n_runs"]) == (1, 2)
    assert (rate["ci_low"], rate["ci_high"]) == pytest.approx((interval.low, interval.high))
    assert section["per_trainer"][PURE][NOISY]["false_positive_rate"]["false_positive_cases"] == 0
    assert "change_from_clean" not in section["per_trainer"][PURE]["clean"]


def test_paired_differences_against_the_baseline_run_level_and_pooled(swept_study):
    study, summary = swept_study
    paired = summary["robustness"]["paired"][PURE][NOISY]
    differences = [dice(5) - dice(4), dice(4) - dice(3)]  # repeat 0, repeat 1
    run_level = paired["run_level"]
    assert run_level["n_runs"] == 2 and [r["difference"] for r in run_level["runs"]] == pytest.approx(differences)
    assert run_level["mean_difference"] == pytest.approx(np.mean(differences))
    # 2 runs: no interval (not informative), the sign-flip p at its floor 2 / 2^2 or 1, nothing concluded
    assert run_level["t_low"] is None and "not informative" in run_level["interval_note"]
    assert run_level["sign_flip_p"] == pytest.approx(0.5 if differences[0] * differences[1] > 0 else 1.0)
    assert run_level["conclusion"] in ("inconclusive", "equivalent") and run_level["min_attainable_p"] == 0.5
    pooled = paired["pooled"]
    assert pooled["n_cases_compared"] == 6 and pooled["dice"]["n"] == 4
    assert pooled["dice"]["mean_difference"] == pytest.approx(np.mean(differences))
    assert (pooled["false_positive"]["cases_a"], pooled["false_positive"]["cases_b"]) == (2, 0)
    # one normal image in 2 runs: the images are the sample (one image, flagged twice by the baseline only)
    clustered = pooled["false_positive"]["clustered"]
    assert pooled["false_positive"]["mcnemar_p"] is None and (clustered["n_images"], clustered["n_runs"]) == (1, 2)
    assert clustered["clustered_p"] == pytest.approx(1.0) and clustered["images_more_a"] == 1
    assert summary["robustness"]["paired"][PURE]["clean"]["run_level"]["mean_difference"] == pytest.approx(0.0)


def test_the_report_section_plot_and_summary_file(swept_study):
    study, summary = swept_study
    report = (study.study_dir / "report.md").read_text()
    section = report[report.index("## Robustness under image corruptions"):]
    assert "intensity model `intensity`" in section and "noise seed 0" in section and "mirroring off" in section
    assert "Clopper-Pearson" in section and "t-interval" in section and "gaussian 0.1" in section
    assert "hierarchical" not in report
    assert f"1.0000 (2/2; 1 images x 2 runs) [{binomtest(1, 1).proportion_ci(0.95, method='exact').low:.4f}, " \
           "1.0000]" in section
    assert not re.search(r"\bnan\b", report, re.IGNORECASE)
    assert (study.study_dir / "plots" / "robustness_dice_vs_strength.png").stat().st_size > 0
    stored = json.loads((study.study_dir / "summary.json").read_text())["robustness"]
    assert stored["per_trainer"][BASELINE][NOISY]["dice"]["mean"] == pytest.approx(np.mean([dice(4), dice(3)]))


def test_a_sweep_with_other_settings_is_not_reported(swept_study):
    study, _ = swept_study
    # the study reconfigured to another seed: the sweeps on disk are another sweep's
    other = Study(dataset_id=study.dataset_id, trainers=study.trainers, baseline=study.baseline, folds=study.folds,
                  repeats=study.repeats, paths=study.paths, robustness={**SETTINGS, "seed": 1})
    assert write_study_report(other)["robustness"] is None
    assert "## Robustness" not in (study.study_dir / "report.md").read_text()
    write_study_report(study)  # leave the module's study as it was


def _without(value, keys=("comparison_dir", "run")):
    """The summary without what names where it was made (folders, run ids)."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def test_pu_nnunet_robustness_reports_the_same_statistics_and_tables(swept_study, tmp_path):
    """Issue 28: the command's summary of the same evaluations (repeat k of a NAME paired with
    repeat k of the baseline) holds the study section's numbers, in the same tables."""
    from pu_nnunet.evaluation.compare import load_evaluation
    from pu_nnunet.robustness.report import report_markdown, summarize
    from pu_nnunet.robustness.study_sweep import conditions
    from pu_nnunet.robustness.sweep import ModelRun

    study, summary = swept_study
    section = summary["robustness"]
    models = [ModelRun(trainer, repeat, tmp_path / f"{trainer}_{repeat}") for trainer in (PURE, BASELINE)
              for repeat in (0, 1)]
    metrics = {m.label: {c: load_evaluation(sweep_folder(study.study_dir, Job(m.name, 0, m.index)) / c / "evaluation"
                                            / "metrics.json")[0] for c in ("clean", NOISY)} for m in models}
    command = summarize(models, conditions(study), metrics, BASELINE, tmp_path / "out")
    assert _without(command["per_trainer"]) == _without(section["per_trainer"])
    assert _without(command["paired"]) == _without(section["paired"])
    assert command["paired"][PURE][NOISY]["run_level"]["mean_difference"] == pytest.approx(
        np.mean([dice(5) - dice(4), dice(4) - dice(3)]))
    report = report_markdown(command, {"images": "imagesTs", "seed": 0, "mirroring": False,
                                       "intensity_model": "intensity", "corruption_notes": ""}, [])
    study_report = (study.study_dir / "report.md").read_text()
    def headers(text):
        return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
                if line.startswith("| trainer ") and "| condition " in line]

    assert headers(report) == headers(study_report[study_report.index("## Robustness"):])
    assert len(headers(report)) == 2 and "change, pooled [95% bootstrap CI]" in headers(report)[0]
    assert "95% t-interval" in headers(report)[1]
