"""A job's robustness sweep without a model (pu-nnunet predict replaced): its state beside the
job's, the scratch images removed, a failure recorded while the job stays done, the runner's rule."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from pu_nnunet.study.jobs import Job, mark_finished, mark_started, read_state
from pu_nnunet.robustness.study_sweep import finished_sweep, run_sweep, sweep_folder, sweep_pending
from pu_nnunet.study.spec import Study

JOB = Job("nnUNetTrainerPURe", 0, 0)
SETTINGS = {"strengths": {"gaussian": [0.1, 0.2]}, "seed": 0, "mirroring": False, "keep_inputs": False}


@pytest.fixture
def done_study(tmp_path):
    raw = tmp_path / "raw" / "Dataset302_KvasirSEG"
    (raw / "imagesTs").mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz", "channel_names": {"0": "RGB"}}))
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(1, 8, 8)),
                    str(raw / "imagesTs" / "a_0000.nii.gz"))
    study = Study(dataset_id=302, trainers=[JOB.trainer], robustness=SETTINGS,
                  paths={"study_dir": str(tmp_path / "s"), "nnUNet_raw": str(tmp_path / "raw"),
                         "nnUNet_preprocessed": str(tmp_path / "pre"), "nnUNet_results": str(tmp_path / "res")})
    mark_started(study.study_dir, JOB, "cpu", "train.log")
    mark_finished(study.study_dir, JOB, evaluation="runs/x/evaluation")
    return study, raw


def test_a_sweep_records_its_state_and_removes_its_scratch_images(done_study, monkeypatch):
    study, raw = done_study
    seen = []

    def fake_predict(inputs, folder, model_folder, folds, device, mirroring, evaluate, log, label):
        seen.append((inputs, sorted(p.name for p in inputs.glob("*.nii.gz")), folds, mirroring))
        return {}

    monkeypatch.setattr("pu_nnunet.robustness.sweep.predict_condition", fake_predict)
    assert sweep_pending(study, JOB)
    state = run_sweep(study, JOB, "cpu", raw / "imagesTs", None, lambda p, o: None)
    folder = sweep_folder(study.study_dir, JOB)
    assert [s[0] for s in seen] == [raw / "imagesTs", folder / "inputs" / "gaussian_0.1", folder / "inputs" / "gaussian_0.2"]
    assert all(s[1] == ["a_0000.nii.gz"] and s[2] == [0] and s[3] is False for s in seen)
    assert not (folder / "inputs").exists()  # scratch removed (keep_inputs false)
    assert state["state"] == "done" and state["robustness"]["state"] == "done" and state["robustness"]["attempts"] == 1
    assert finished_sweep(study, JOB)["description"]["intensity_model"] == "intensity"
    assert not sweep_pending(study, JOB)
    study.robustness = {**SETTINGS, "seed": 1}  # reconfigured: the sweep on disk is another one
    assert sweep_pending(study, JOB)


def test_a_failed_sweep_leaves_the_job_done_and_counts_a_failure(done_study, monkeypatch):
    study, raw = done_study

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr("pu_nnunet.robustness.sweep.predict_condition", broken)
    state = run_sweep(study, JOB, "cpu", raw / "imagesTs", None, lambda p, o: None)
    assert state["state"] == "done" and read_state(study.study_dir, JOB)["state"] == "done"
    assert state["robustness"]["state"] == "failed" and state["robustness"]["failures"] == 1
    assert "RuntimeError: out of memory" in state["robustness"]["error"]
    assert sweep_pending(study, JOB) and not (sweep_folder(study.study_dir, JOB) / "inputs").exists()


def test_a_png_dataset_is_refused_with_the_file_named(done_study):
    from pu_nnunet.study.errors import StudyError
    from pu_nnunet.robustness.study_sweep import dataset_channel

    study, raw = done_study
    (raw / "dataset.json").write_text(json.dumps({"file_ending": ".png", "channel_names": {"0": "R"}}))
    with pytest.raises(StudyError, match=r"--robustness: .*dataset.json has file_ending '.png'; the sweep reads NIfTI"):
        dataset_channel(study)


def test_a_sweep_after_the_checkpoint_was_replaced_is_refused_naming_it(done_study, monkeypatch):
    """Issue 30, class 4: the sweep is reported beside the job's clean evaluation, so both must be
    of one model's weights (on main the sweep ran with the new weights beside the old results)."""
    from pu_nnunet.provenance import model_record
    from pu_nnunet.study.jobs import run_folder

    study, raw = done_study
    model = study.model_folder(JOB.trainer, JOB.repeat)
    (model / "fold_0").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"old weights")
    evaluated = model_record(model, [0], "checkpoint_final.pth")
    metrics = run_folder(study.study_dir, JOB) / "evaluation" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"provenance": {"model": evaluated}}))
    ran = []
    monkeypatch.setattr("pu_nnunet.robustness.sweep.predict_condition", lambda *a, **k: ran.append(a))
    assert run_sweep(study, JOB, "cpu", raw / "imagesTs", None, lambda p, o: None)["robustness"]["state"] == "done"
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"new weights")  # replaced after the job
    ran.clear()
    study.robustness = {**SETTINGS, "seed": 2}  # a sweep to run again
    state = run_sweep(study, JOB, "cpu", raw / "imagesTs", None, lambda p, o: None)
    assert state["robustness"]["state"] == "failed" and ran == []
    assert f"{metrics}: {JOB.name} was evaluated with other weights" in state["robustness"]["error"]
    assert "checkpoint_sha256 differ" in state["robustness"]["error"]
