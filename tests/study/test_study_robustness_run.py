"""study run --robustness end to end on the tiny trained model (tests/conftest.py): a finished
two-repeat study (repeat 1's model a copy of repeat 0's, so nothing trains), the sweep added with
one Gaussian strength, then resumed; scored on imagesTs with pu-nnunet predict."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NNUNET_BIN = Path(sys.executable).parent
TRAINER = "nnUNetTrainerPURe_tiny"
JOBS = [f"{TRAINER}__fold_0__repeat_{r}" for r in (0, 1)]
SWEEP = ["--robustness", "--robustness-corruptions", "gaussian", "--robustness-strengths", "gaussian=0.1",
         "--robustness-disable-tta", "--robustness-keep-inputs"]


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def mtimes(study_dir: Path, pattern: str) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(study_dir.glob(pattern))}


def study(env, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([str(NNUNET_BIN / "pu-nnunet"), "study", *argv], env=env, capture_output=True, text=True,
                          timeout=900)


# session scope: built once even if the xdist group interleaves another module's tests
@pytest.fixture(scope="session")
def swept(tiny_trained_model, tmp_path_factory):
    study_dir = tmp_path_factory.mktemp("robust_study") / "tiny"
    model = tiny_trained_model["fold"].parent
    dataset = tiny_trained_model["dataset"]
    shutil.copytree(model, study_dir / "results" / "repeat_1" / dataset.name / model.name)
    env = dict(tiny_trained_model["env"])  # its nnUNet_results holds repeat 0's finished training
    raw_before = hashes(dataset)
    first = study(env, "run", "-d", "990", "--trainers", TRAINER, "--repeats", "2", "--held-out", "test",
                  "--devices", "cpu", "--cpu-threads", "1", "--no-report", "-o", str(study_dir))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    clean_before = mtimes(study_dir, "runs/*/evaluation/metrics.json") | mtimes(study_dir, "runs/*/predictions/*")
    added = study(env, "run", *SWEEP, "--devices", "cpu", "--cpu-threads", "1", "-o", str(study_dir))
    states = {job: json.loads((study_dir / "jobs" / f"{job}.json").read_text()) for job in JOBS}
    sweep_files = mtimes(study_dir, "runs/*/robustness/**/*.json")
    resumed = study(env, "run", "--devices", "cpu", "-o", str(study_dir))
    return dict(study_dir=study_dir, dataset=dataset, raw_before=raw_before, clean_before=clean_before, added=added,
                states=states, sweep_files=sweep_files, resumed=resumed)


def test_adding_the_sweep_to_a_finished_study_runs_only_the_sweeps(swept):
    added = swept["added"]
    assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-3000:]
    assert all(f"job {job}: done before; running its robustness sweep" in added.stderr + added.stdout for job in JOBS)
    for state in swept["states"].values():  # the job was not started again; its sweep ran once
        assert state["state"] == "done" and state["attempts"] == 1 and "train_s" not in state
        assert state["robustness"]["state"] == "done" and state["robustness"]["attempts"] == 1
    study_dir = swept["study_dir"]
    assert mtimes(study_dir, "runs/*/evaluation/metrics.json") | mtimes(study_dir, "runs/*/predictions/*") \
        == swept["clean_before"]
    assert json.loads((study_dir / "study.json").read_text())["robustness"]["strengths"] == {"gaussian": [0.1]}


def test_each_job_holds_its_sweep_and_both_see_the_same_corrupted_images(swept):
    study_dir, dataset = swept["study_dir"], swept["dataset"]
    inputs = [study_dir / "runs" / job / "robustness" / "inputs" for job in JOBS]
    for job in JOBS:
        folder = study_dir / "runs" / job / "robustness"
        result = json.loads((folder / "robustness.json").read_text())
        assert [c["name"] for c in result["conditions"]] == ["clean", "gaussian_0.1"]
        assert result["settings"] == {"strengths": {"gaussian": [0.1]}, "seed": 0, "mirroring": False}
        for condition in ("clean", "gaussian_0.1"):
            assert len(list((folder / condition / "predictions").glob("*.nii.gz"))) == 2
            assert (folder / condition / "evaluation" / "metrics.json").is_file()
    # test mode's clean condition reads imagesTs itself; the corrupted copies are identical for both jobs
    assert [p.name for p in inputs[0].iterdir()] == ["gaussian_0.1"]
    noisy = hashes(inputs[0] / "gaussian_0.1")
    assert noisy == hashes(inputs[1] / "gaussian_0.1") and len(noisy) == 3  # 2 images and the complete marker
    images = {k: v for k, v in noisy.items() if k.endswith(".nii.gz")}
    assert sorted(images) == sorted(hashes(dataset / "imagesTs"))
    assert not set(images.values()) & set(hashes(dataset / "imagesTs").values())  # corrupted, not copied
    # the same model on the same images: the same segmentations
    predictions = [hashes(study_dir / "runs" / job / "robustness" / "gaussian_0.1" / "predictions") for job in JOBS]
    assert {k: v for k, v in predictions[0].items() if k.endswith(".nii.gz")} == \
        {k: v for k, v in predictions[1].items() if k.endswith(".nii.gz")}


def test_the_report_has_the_robustness_section_and_plot(swept):
    study_dir = swept["study_dir"]
    section = json.loads((study_dir / "summary.json").read_text())["robustness"]
    entry = section["per_trainer"][TRAINER]["gaussian_0.1"]
    assert entry["dice"]["n"] == 2 and 0.0 <= entry["dice"]["mean"] <= 1.0
    assert entry["dice_per_run"][0] == entry["dice_per_run"][1]  # the same model and images
    assert entry["change_from_clean"]["n"] == 2 and section["paired"] == {}  # no baseline in this study
    report = (study_dir / "report.md").read_text()
    assert "## Robustness under image corruptions" in report and "noise seed 0" in report
    assert "intensity model `ct`" in report and "| PURe_tiny | gaussian_0.1 |" in report
    assert (study_dir / "plots" / "robustness_dice_vs_strength.png").stat().st_size > 0


def test_resuming_does_not_redo_a_finished_sweep_and_nothing_reaches_nnunet_raw(swept):
    resumed = swept["resumed"]
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "running its robustness sweep" not in resumed.stdout + resumed.stderr
    study_dir = swept["study_dir"]
    assert mtimes(study_dir, "runs/*/robustness/**/*.json") == swept["sweep_files"]
    assert json.loads((study_dir / "jobs" / f"{JOBS[0]}.json").read_text())["robustness"]["attempts"] == 1
    assert hashes(swept["dataset"]) == swept["raw_before"]
