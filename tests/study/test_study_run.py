"""pu-nnunet study run end to end on the tiny generated CT (tests/conftest.py): 2 trainers x 2
folds through nnU-Net's console scripts, stopped with SIGTERM in the middle of a training,
resumed, reported (scored on each fold's validation cases, nnU-Net's own fold_F/validation
predictions); and one job through submitit's local executor (the SLURM path), scored on the
held-out imagesTs with pu-nnunet predict."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow

NNUNET_BIN = Path(sys.executable).parent
TINY_DATASET_ID = 990  # tests/conftest.py's tiny_trained_model
TRAINERS = ["nnUNetTrainerPURe_tiny", "nnUNetTrainerPUReBaseline_tiny"]
INTERRUPTED_JOB = "nnUNetTrainerPUReBaseline_tiny__fold_0__repeat_0"  # the second job of four


def study_command(*argv) -> list[str]:
    return [str(NNUNET_BIN / "pu-nnunet"), "study", *argv]


def study_env(model: dict, study_dir: Path) -> dict:
    # raw and preprocessed data of the tiny model fixture; the study trains into its own results root
    assert model["dataset_id"] == TINY_DATASET_ID
    return dict(model["env"], nnUNet_results=str(study_dir / "nnUNet_results"))


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"study run exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def resumed_study(tiny_trained_model, tmp_path_factory):
    study_dir = tmp_path_factory.mktemp("study") / "tiny"
    env = study_env(tiny_trained_model, study_dir)
    # the first job (PURe_tiny, fold 0) is the tiny model's own training: its finished model is
    # reused, as a study reuses any finished training; the other three train (one is interrupted)
    model = tiny_trained_model["fold"].parent
    shutil.copytree(model, study_dir / "nnUNet_results" / tiny_trained_model["dataset"].name / model.name,
                    ignore=shutil.ignore_patterns("fold_[1-9]*"))
    argv = ["run", "-d", str(TINY_DATASET_ID), "-c", "2d", "--trainers", *TRAINERS, "--folds", "0", "1",
            "--held-out", "validation", "--devices", "cpu", "--cpu-threads", "1", "-o", str(study_dir)]
    first_log = study_dir.parent / "first_run.log"
    with open(first_log, "w") as output:
        proc = subprocess.Popen(study_command(*argv), env=env, stdout=output, stderr=subprocess.STDOUT)
        train_log = study_dir / "runs" / INTERRUPTED_JOB / "train.log"
        # epoch 0 of the second training is checkpointed once nnU-Net announces epoch 1
        wait_for(lambda: train_log.is_file() and "Epoch 1" in train_log.read_text(), 1200,
                 "the second training's epoch 1", proc)
        proc.send_signal(signal.SIGTERM)
        interrupted_code = proc.wait(timeout=120)
    status = subprocess.run(study_command("status", str(study_dir)), env=env, capture_output=True, text=True)
    states_after_interrupt = {p.stem: json.loads(p.read_text()) for p in (study_dir / "jobs").glob("*.json")}
    checkpoint_after_interrupt = sorted(p.name for p in (study_dir / "nnUNet_results").rglob("fold_0/*.pth"))
    refused = subprocess.run(study_command("run", "--repeats", "2", "-o", str(study_dir)), env=env,
                             capture_output=True, text=True)
    resumed = subprocess.run(study_command("run", "-o", str(study_dir)), env=env, capture_output=True, text=True,
                             timeout=900)
    return dict(study_dir=study_dir, env=env, interrupted_code=interrupted_code, first_output=first_log.read_text(),
                status=status, states_after_interrupt=states_after_interrupt,
                checkpoints_after_interrupt=checkpoint_after_interrupt, refused=refused, resumed=resumed)


def test_sigterm_stops_the_run_and_records_the_interrupted_job(resumed_study):
    assert resumed_study["interrupted_code"] == 143, resumed_study["first_output"][-3000:]
    states = resumed_study["states_after_interrupt"]
    assert states["nnUNetTrainerPURe_tiny__fold_0__repeat_0"]["state"] == "done"
    assert states[INTERRUPTED_JOB]["state"] == "failed" and states[INTERRUPTED_JOB]["error"] == "interrupted"
    assert len(states) == 2  # the fold-1 jobs never started
    assert "-device cpu --c" in (resumed_study["study_dir"] / "runs" / INTERRUPTED_JOB / "train.log").read_text()
    # the interrupted training left nnU-Net's checkpoint of epoch 0 to resume from
    assert "checkpoint_latest.pth" in resumed_study["checkpoints_after_interrupt"]
    status = resumed_study["status"].stdout
    assert resumed_study["status"].returncode == 0
    status = re.sub(r"\s*\|\s*", " ", status)  # the table's cells, space-separated
    assert re.search(r"PUReBaseline_tiny\s+0\s+0\s+failed\s+1\s", status), status
    assert re.search(r"PURe_tiny\s+1\s+0\s+pending", status), status
    assert str(resumed_study["study_dir"] / "runs" / INTERRUPTED_JOB / "train.log") in status


def test_flags_contradicting_the_stored_study_are_refused(resumed_study):
    refused = resumed_study["refused"]
    assert refused.returncode == 1
    assert "contradict" in refused.stderr and "study.json" in refused.stderr and "repeats" in refused.stderr


def test_the_resumed_run_finishes_every_job_and_resumes_the_interrupted_training(resumed_study):
    resumed = resumed_study["resumed"]
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "nnUNetTrainerPURe_tiny__fold_0__repeat_0: done before" in resumed.stdout  # skipped, not retrained
    study_dir = resumed_study["study_dir"]
    states = {p.stem: json.loads(p.read_text()) for p in (study_dir / "jobs").glob("*.json")}
    assert len(states) == 4 and {s["state"] for s in states.values()} == {"done"}
    assert states[INTERRUPTED_JOB]["attempts"] == 2 and states["nnUNetTrainerPURe_tiny__fold_0__repeat_0"]["attempts"] == 1
    # the log keeps both attempts; the second continued from the checkpoint (no epoch 0 again)
    attempts = (study_dir / "runs" / INTERRUPTED_JOB / "train.log").read_text().split("$ nnUNetv2_train")[1:]
    assert len(attempts) == 2 and all(" --c" in a.splitlines()[0] for a in attempts)
    assert re.search(r"Epoch 0\s*$", attempts[0], re.M) and not re.search(r"Epoch 0\s*$", attempts[1], re.M)
    assert re.search(r"Epoch 1\s*$", attempts[1], re.M)
    status = subprocess.run(study_command("status", str(study_dir)), env=resumed_study["env"], capture_output=True,
                            text=True).stdout
    assert "4 done" in status


def test_the_report_pairs_both_folds_against_the_baseline(resumed_study):
    study_dir = resumed_study["study_dir"]
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["n_runs_finished"] == 4 and summary["missing_runs"] == []
    assert summary["held_out"] == "validation"
    for trainer in TRAINERS:
        entry = summary["per_trainer"][trainer]
        assert entry["n_runs"] == 2 and entry["foreground"]["dice"]["n"] == 2
        assert entry["foreground"]["dice"]["sd"] is not None
    paired = summary["paired"]["nnUNetTrainerPURe_tiny"]
    assert paired["folds"] == [0, 1] and paired["repeats"] == [0]
    splits = json.loads((Path(resumed_study["env"]["nnUNet_preprocessed"]) / f"Dataset{TINY_DATASET_ID}_SynthCT" /
                         "splits_final.json").read_text())
    n_validation = len(splits[0]["val"]) + len(splits[1]["val"])
    assert paired["n_cases_compared"] == n_validation  # each fold's validation cases
    dice = paired["overall"]["foreground"]["dice"]
    assert dice["n"] == n_validation and dice["a_better"] + dice["ties"] + dice["b_better"] == n_validation
    assert dice["ci_low"] <= dice["mean_difference"] <= dice["ci_high"]
    # the paired differences are those of the per-run evaluations, case by case
    runs = {(r["trainer"], r["fold"]): json.loads((Path(r["evaluation"]) / "metrics.json").read_text())
            for r in summary["runs"]}
    differences = [b["labels"]["foreground"]["dice"] - a["labels"]["foreground"]["dice"]
                   for fold in (0, 1) for a, b in zip(runs[(TRAINERS[1], fold)]["cases"],
                                                       runs[(TRAINERS[0], fold)]["cases"])]
    assert len(differences) == n_validation
    assert dice["mean_difference"] == pytest.approx(sum(differences) / n_validation)
    report = (study_dir / "report.md").read_text()
    assert "PURe_tiny - PUReBaseline_tiny" in report and "folds [0, 1]" in report
    assert (study_dir / "plots" / "per_run_dice.png").stat().st_size > 0
    assert (Path(paired["comparison_dir"]) / "report.md").is_file()
    assert "report:" in resumed_study["resumed"].stdout and "PURe_tiny" in resumed_study["resumed"].stdout


def test_a_job_runs_through_the_slurm_executor_with_submitits_local_executor(resumed_study, tmp_path):
    """One job through submitit's LocalExecutor (the SLURM code path without a cluster). To stay
    within the test budget it uses the module study's results root, so the job finds fold 1's
    finished training and runs the prediction of imagesTs and the evaluation on the SLURM side."""
    pytest.importorskip("submitit")
    study_dir = tmp_path / "slurm_study"
    env = dict(resumed_study["env"])  # nnUNet_results: the module study's
    result = subprocess.run(study_command("run", "-d", str(TINY_DATASET_ID), "--trainers", "nnUNetTrainerPURe_tiny",
                                          "--folds", "1", "--executor", "slurm", "--slurm-backend", "local",
                                          "--gpus-per-job", "0", "--time-limit", "20", "-o", str(study_dir)),
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    job = "nnUNetTrainerPURe_tiny__fold_1__repeat_0"
    state = json.loads((study_dir / "jobs" / f"{job}.json").read_text())
    assert state["state"] == "done" and state["executor"] == "slurm" and state["device"] == "cpu"
    assert "train_s" not in state and state["predict_s"] > 0  # training reused, prediction run by the job
    # submitit ran it: its job folder holds the pickled call, the result and the job's own output
    job_folder = study_dir / "slurm" / state["submitted_job_id"]
    assert any(job_folder.glob("*_submitted.pkl")) and any(job_folder.glob("*_result.pkl"))
    assert f"{job}: training finished before" in "".join(p.read_text() for p in job_folder.glob("*.out"))
    assert len(list((study_dir / "runs" / job / "predictions").glob("*.nii.gz"))) == 2
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["per_trainer"]["nnUNetTrainerPURe_tiny"]["n_runs"] == 1 and summary["paired"] == {}
    assert state["held_out"] == "test" and summary["runs"][0]["dice"] == pytest.approx(state["foreground_dice"])


def test_each_runs_validation_predictions_carry_the_model_record(resumed_study):
    """--held-out validation scores nnU-Net's own fold_F/validation predictions: the study writes
    the model record beside them, as pu-nnunet predict does into its output folder."""
    from pu_nnunet.provenance import MODEL_RECORD_FILE, model_record

    records = sorted((resumed_study["study_dir"] / "nnUNet_results").rglob(f"fold_*/validation/{MODEL_RECORD_FILE}"))
    assert len(records) == 4  # 2 trainers x 2 folds
    for path in records:
        fold = path.parent.parent.name[len("fold_"):]
        record = json.loads(path.read_text())
        assert record == model_record(path.parent.parent.parent, [fold], "checkpoint_final.pth")
        assert record["trainer"] in TRAINERS and record["checkpoint_sha256"][fold] is not None
