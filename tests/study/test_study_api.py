"""The study's public API (pu_nnunet/study/api.py) without nnU-Net runs: a study made, saved and
loaded, its folder's layout as the writing modules name it, presets, job states, progress lines."""

import logging
import os

import pytest

from pu_nnunet.study import api
from pu_nnunet.study.jobs import mark_finished, mark_started


@pytest.fixture
def no_nnunet_folders(monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.delenv(name, raising=False)


def test_a_study_is_created_saved_and_loaded_with_its_folders_inside(tmp_path, no_nnunet_folders):
    study = api.create_study(tmp_path / "s", 991, trainers=["nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline"],
                             folds=[0, 1], synthetic=api.preset("demo")["synthetic"])
    assert study.baseline is None
    assert study.paths["nnUNet_results"] == str((tmp_path / "s" / "nnUNet_results").resolve())
    assert api.save_study(study) == api.StudyFolder(study.study_dir).study_file
    loaded = api.load_study(tmp_path / "s")
    assert loaded.identity() == study.identity()
    assert [job.name for job in api.study_jobs(loaded)][:2] == ["nnUNetTrainerPURe__fold_0__repeat_0",
                                                                 "nnUNetTrainerPUReBaseline__fold_0__repeat_0"]
    with pytest.raises(api.StudyError, match="baseline 'nope' is not one of the trainers"):
        api.create_study(tmp_path / "t", 991, baseline="nope")
    with pytest.raises(api.StudyError, match="not a study folder"):
        api.load_study(tmp_path / "t")


def test_the_folder_layout_is_where_the_study_writes(tmp_path, no_nnunet_folders):
    study = api.create_study(tmp_path, 991, trainers=["nnUNetTrainerPURe"], folds=[0])
    folder = api.StudyFolder(study.study_dir)
    (job,) = api.study_jobs(study)
    assert api.job_state(study, job)["state"] == api.PENDING
    run = folder.run(job)
    mark_started(study.study_dir, job, "cpu", run / "train.log")
    mark_finished(study.study_dir, job, evaluation=str(folder.evaluation(job)))
    state = api.job_state(study, job)
    assert state["state"] == api.DONE and state["evaluation"] == str(folder.evaluation(job))
    assert run == tmp_path / "runs" / job.name and folder.predictions(job) == run / "predictions"
    assert folder.train_log(job) == run / "train.log" and folder.evaluation(job) == run / "evaluation"
    assert [p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json")] == [f"jobs/{job.name}.json"]
    assert (folder.jobs / f"{job.name}.json").is_file()
    assert {p.relative_to(tmp_path).as_posix() for p in folder.written()} == {
        "study.json", "jobs", "runs", "comparisons", "plots", "report.md", "summary.json", "logs", ".run.lock",
        "results"}
    assert study.results_root(1).parent in folder.written()


def test_a_preset_is_a_copy_and_an_unknown_one_is_named():
    demo = api.preset("demo")
    demo["trainers"].append("changed")
    assert "changed" not in api.preset("demo")["trainers"]
    with pytest.raises(api.StudyError, match=r"unknown study preset 'nope'; known: \['demo'\]"):
        api.preset("nope")


def test_run_study_refuses_a_bad_device_before_any_work(tmp_path, no_nnunet_folders):
    study = api.create_study(tmp_path, 991)
    from pu_nnunet.user_errors import UserInputError

    with pytest.raises(UserInputError, match="--devices 'gpu' is not a device"):
        api.run_study(study, devices=["gpu"])
    assert list(tmp_path.iterdir()) == []


def test_show_progress_prefixes_this_process_and_the_jobs(monkeypatch, capsys):
    monkeypatch.delenv("PU_NNUNET_LOG_PREFIX", raising=False)
    logger = logging.getLogger("pu_nnunet.study")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    api.show_progress("my tool")
    logger.info("hello")
    assert capsys.readouterr().out == "[my tool] hello\n"
    assert os.environ["PU_NNUNET_LOG_PREFIX"] == "my tool"
