"""The study report's operating-point and convergence sections, from hand-made runs (no training):
a PURe that predicts less than its baseline, learning curves from constructed training logs and
the runs' training_stability.json."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from pu_nnunet.evaluation import evaluate_folders
from pu_nnunet.study.jobs import Job, mark_finished, mark_started, run_folder
from pu_nnunet.study.report.study_report import write_study_report
from pu_nnunet.study.spec import Study

PURE, BASELINE = "nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline"
CASES = ("lesion_1", "lesion_2", "normal_1", "normal_2")


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def _square(corner: int, size: int) -> np.ndarray:
    array = np.zeros((1, 12, 12), np.uint8)
    array[0, corner:corner + size, corner:corner + size] = 1
    return array


def _training_log(dice: list[float]) -> str:
    return "".join(f"2026-12-07 01:00:00.{e:06d}: Epoch {e}\n2026-12-07 01:00:00.{e:06d}: train_loss {-d:.4f}\n"
                   f"2026-12-07 01:00:00.{e:06d}: Pseudo dice [np.float32({d})]\n" for e, d in enumerate(dice))


@pytest.fixture
def study(tmp_path):
    raw = tmp_path / "raw" / "Dataset304_BUSI"
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz",
                                                  "channel_names": {"0": "US"}, "numTraining": 4}))
    references = {"lesion_1": _square(1, 6), "lesion_2": _square(8, 2), "normal_1": _square(0, 0),
                  "normal_2": _square(0, 0)}
    for case, array in references.items():
        _write(raw / "labelsTs" / f"{case}.nii.gz", array)
    # fold 0's validation case, where keeping the largest component raises the Dice (as nnU-Net decides)
    _write(raw / "labelsTr" / "val_1.nii.gz", _square(1, 6))
    (tmp_path / "pre" / raw.name).mkdir(parents=True)
    (tmp_path / "pre" / raw.name / "splits_final.json").write_text(json.dumps([{"train": ["tr_1"], "val": ["val_1"]}]))
    study = Study(dataset_id=304, trainers=[PURE, BASELINE], baseline=BASELINE, folds=[0], repeats=2,
                  paths={"study_dir": str(tmp_path / "study"), "nnUNet_raw": str(tmp_path / "raw"),
                         "nnUNet_preprocessed": str(tmp_path / "pre"), "nnUNet_results": str(tmp_path / "res")})
    # the baseline finds both lesions and marks a 2x2 blob in normal_1; PURe predicts less: the
    # small lesion and the blob are gone (a lower FPR bought with a lower sensitivity)
    for trainer in (PURE, BASELINE):
        for repeat in (0, 1):
            job = Job(trainer, 0, repeat)
            predictions = run_folder(study.study_dir, job) / "predictions"
            shy = trainer == PURE
            cases = {"lesion_1": _square(1, 6), "lesion_2": _square(0, 0) if shy else _square(8, 2),
                     "normal_1": _square(0, 0) if shy else _square(4, 2), "normal_2": _square(0, 0)}
            for case, array in cases.items():
                _write(predictions / f"{case}.nii.gz", array)
            out = run_folder(study.study_dir, job) / "evaluation"
            evaluate_folders(predictions, raw / "labelsTs", out, device="cpu", dataset_json=raw / "dataset.json",
                             plots=False)
            mark_started(study.study_dir, job, "cpu", tmp_path / "train.log")
            mark_finished(study.study_dir, job, evaluation=str(out), held_out="test")
            fold = study.model_folder(trainer, repeat) / "fold_0"
            fold.mkdir(parents=True)
            _write(fold / "validation" / "val_1.nii.gz", np.maximum(_square(1, 6), _square(11, 1)))
            # repeat 1 of PURe still rises by 0.01 per epoch: not converged
            dice = [min(0.8, 0.04 * e) for e in range(40)] if not (shy and repeat == 1) else \
                [0.2 + 0.01 * e for e in range(40)]
            (fold / "training_log_2026_12_7_01_00_00.txt").write_text(_training_log(dice))
            (fold / "training_stability.json").write_text(json.dumps(
                {"nonfinite_losses": 0, "nonfinite_grad_steps": 1 if shy else 0, "skipped_steps": 0,
                 "grad_norm_spikes": 2, "max_grad_norm": 3.5, "final_loss": -0.8, "steps": 400, "grad_scaler": False}))
    return study


def test_the_report_shows_operating_points_and_convergence_of_every_run(study):
    summary = write_study_report(study)
    section = summary["operating_points"]
    assert len(section["runs"]) == 4
    pure = next(r for r in section["runs"] if r["trainer"] == PURE)
    baseline = next(r for r in section["runs"] if r["trainer"] == BASELINE)
    # as predicted: PURe 0/2 false positives and 1/2 lesions; the baseline 1/2 and 2/2
    assert (pure["default_point"]["false_positive_cases"], pure["default_point"]["lesions_hit"]) == (0, 1)
    assert (baseline["default_point"]["false_positive_cases"], baseline["default_point"]["lesions_hit"]) == (1, 2)
    # at matched sensitivity 0.5 the baseline drops components under 5 pixels too: FPR 0, no difference
    rows = {row["lesion_sensitivity"]: row for row in section["paired"][PURE]}
    assert rows[0.5]["n_reached"] == 2 and rows[0.5]["mean_fpr_difference"] == 0.0
    assert rows[0.6]["n_reached"] == 0  # PURe never detects more than half of the lesions
    assert (study.study_dir / "runs" / Job(PURE, 0, 0).name / "evaluation" / "operating_points.json").is_file()
    # nnU-Net's postprocessing: decided on fold 0's validation case, applied to the test cases
    assert pure["nnunet_postprocessing"]["source"].startswith("nnU-Net's rule on")
    assert pure["nnunet_postprocessing"]["keep_largest"] is True
    assert pure["nnunet_postprocessing"]["nnunet_dice_keep_largest"] == 1.0
    convergence = summary["convergence"]
    assert (convergence["n_met"], convergence["n_not_met"], convergence["n_not_judged"]) == (3, 1, 0)
    report = (study.study_dir / "report.md").read_text()
    assert "## Operating points: false positives at matched sensitivity" in report
    assert "## Convergence and training stability" in report and report.count("**NOT CONVERGED**") == 1
    for name in ("operating_points.png", "learning_curves.png"):
        assert (study.study_dir / "plots" / name).stat().st_size > 10_000
    json.loads((study.study_dir / "summary.json").read_text())  # still strict JSON
