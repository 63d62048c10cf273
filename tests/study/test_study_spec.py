"""pu-nnunet study without nnU-Net runs: study.json, flags against it, TOML, devices, job states, status."""

import argparse
import json
import os

import pytest
import torch

from pu_nnunet.study.cli_study import add_arguments, format_status, resolve_study
from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.execution.local import parse_devices
from pu_nnunet.study.jobs import DONE, FAILED, Job, mark_finished, mark_started, read_state, study_jobs
from pu_nnunet.study.spec import Study, load_study


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    (tmp_path / "nnUNet_raw" / "Dataset302_KvasirSEG").mkdir(parents=True)
    return tmp_path


def test_a_new_study_is_written_with_defaults_and_resumed_without_flags(nnunet_folders):
    out = nnunet_folders / "study"
    study, _ = resolve_study(parse("run", "-d", "302", "--folds", "0", "1", "--repeats", "2", "-o", str(out)))
    stored = json.loads((out / "study.json").read_text())
    assert stored["trainers"] == ["nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline"]
    assert stored["baseline"] == "nnUNetTrainerPUReBaseline" and stored["folds"] == [0, 1] and stored["repeats"] == 2
    assert stored["paths"]["nnUNet_results"] == str(nnunet_folders / "nnUNet_results")
    # repeat 0 trains where nnU-Net would; later repeats each in their own results root
    assert study.results_root(0) == nnunet_folders / "nnUNet_results"
    assert study.results_root(1) == out.resolve() / "results" / "repeat_1"
    assert study.model_folder("nnUNetTrainerPURe", 1).name == "nnUNetTrainerPURe__nnUNetPlans__2d"
    assert study.dataset_folder_name() == "Dataset302_KvasirSEG"
    assert len(study_jobs(study)) == 2 * 2 * 2
    resumed, _ = resolve_study(parse("run", "-o", str(out)))
    assert resumed.identity() == study.identity()
    same, _ = resolve_study(parse("run", "-d", "302", "--repeats", "2", "-o", str(out)))  # agreeing flags are fine
    assert same.identity() == study.identity()


def test_flags_that_contradict_study_json_are_refused_unless_reconfigured(nnunet_folders):
    out = nnunet_folders / "study"
    resolve_study(parse("run", "-d", "302", "-o", str(out)))
    with pytest.raises(StudyError, match=r"contradict .*study.json \(repeats: stored 1, requested 3"):
        resolve_study(parse("run", "--repeats", "3", "-o", str(out)))
    assert load_study(out).repeats == 1
    study, _ = resolve_study(parse("run", "--repeats", "3", "--reconfigure", "-o", str(out)))
    assert study.repeats == 3 and load_study(out).repeats == 3


def test_bad_studies_are_refused_with_the_reason(nnunet_folders):
    out = str(nnunet_folders / "study")
    with pytest.raises(StudyError, match="needs -d"):
        resolve_study(parse("run", "-o", out))
    with pytest.raises(StudyError, match="repeats must be a positive integer"):
        resolve_study(parse("run", "-d", "302", "--repeats", "0", "-o", out))
    with pytest.raises(StudyError, match="baseline 'X' is not one of the trainers"):
        resolve_study(parse("run", "-d", "302", "--baseline", "X", "-o", out))
    (nnunet_folders / "study" / "study.json").parent.mkdir(exist_ok=True)
    (nnunet_folders / "study" / "study.json").write_text('{"format": "pu-nnunet-study/1", "dataset_id"')
    with pytest.raises(StudyError, match="study.json is not valid JSON"):
        resolve_study(parse("run", "-o", out))


def test_a_toml_study_file_sets_the_study_and_flags_override_it(nnunet_folders):
    config = nnunet_folders / "study.toml"
    config.write_text('dataset = 302\nconfiguration = "2d"\nfolds = [0, 1, 2]\nrepeats = 2\n'
                      'trainers = ["nnUNetTrainerPURe", "nnUNetTrainerPUReBaseline"]\n'
                      '[executor]\nkind = "slurm"\npartition = "gpu"\n')
    study, executor = resolve_study(parse("run", "--config", str(config), "--repeats", "3",
                                          "-o", str(nnunet_folders / "s")))
    assert (study.folds, study.repeats, executor["partition"]) == ([0, 1, 2], 3, "gpu")
    config.write_text("dataset = 302\nfold = 1\n")
    with pytest.raises(StudyError, match=r"unknown key\(s\) \['fold'\]"):
        resolve_study(parse("run", "--config", str(config), "-o", str(nnunet_folders / "t")))


def test_mid_and_equivalence_margin_from_toml_and_flags_are_stored_and_checked(nnunet_folders):
    from pu_nnunet.evaluation.metrics.run_stats import DEFAULT_EQUIVALENCE_MARGIN, DEFAULT_MID

    config = nnunet_folders / "stats.toml"
    config.write_text("dataset = 302\nmid = 0.02\nequivalence_margin = 0.005\n")
    out = nnunet_folders / "stats"
    study, _ = resolve_study(parse("run", "--config", str(config), "-o", str(out)))
    assert (study.mid, study.equivalence_margin) == (0.02, 0.005)
    # not identity fields: a flag changes them on a stored study without --reconfigure, and they are kept
    study, _ = resolve_study(parse("run", "--mid", "0.03", "-o", str(out)))
    assert (study.mid, study.equivalence_margin) == (0.03, 0.005)
    assert json.loads((out / "study.json").read_text())["mid"] == 0.03
    defaults, _ = resolve_study(parse("run", "-d", "302", "-o", str(nnunet_folders / "defaults")))
    assert (defaults.mid, defaults.equivalence_margin) == (DEFAULT_MID, DEFAULT_EQUIVALENCE_MARGIN) == (0.01, 0.01)
    with pytest.raises(StudyError, match="equivalence_margin must be a number between 0 and 1"):
        resolve_study(parse("run", "-d", "302", "--equivalence-margin", "0", "-o", str(nnunet_folders / "bad")))


def test_devices_are_cpu_or_numbered_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert parse_devices(["cpu"]) == ["cpu"]
    assert parse_devices(["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1"]
    assert parse_devices(["cuda"]) == ["cuda:0"]
    assert parse_devices(None) == parse_devices(["auto"]) == ["cuda:0", "cuda:1"]
    for bad, message in ((["cuda:0", "cuda:0"], "listed twice"), (["auto", "cuda:1"], "cuda:1 listed twice"),
                         (["cpu", "cuda:0"], "cannot be mixed")):
        with pytest.raises(StudyError, match=message):
            parse_devices(bad)


def test_job_states_and_status_say_what_happened(tmp_path):
    study = Study(dataset_id=900, trainers=["nnUNetTrainerPURe_tiny", "nnUNetTrainerPUReBaseline_tiny"],
                  baseline="nnUNetTrainerPUReBaseline_tiny", synthetic={"name": "SynthCT"},
                  paths={"study_dir": str(tmp_path), "nnUNet_raw": str(tmp_path / "raw"),
                         "nnUNet_preprocessed": str(tmp_path / "pre"), "nnUNet_results": str(tmp_path / "res")})
    done, failed, cut_off, pending = (Job("nnUNetTrainerPURe_tiny", 0, 0), Job("nnUNetTrainerPUReBaseline_tiny", 0, 0),
                                      Job("nnUNetTrainerPURe_tiny", 1, 0), Job("nnUNetTrainerPUReBaseline_tiny", 1, 0))
    study.folds = [0, 1]
    for job in (done, failed, cut_off):
        mark_started(tmp_path, job, "cpu", tmp_path / job.name / "train.log")
    metrics = tmp_path / "runs" / done.name / "evaluation" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text('{"cases": [], "labels": [], "missing_predictions": [], "label_names": {}, "settings": {"min_size": 1}}')
    mark_finished(tmp_path, done, foreground_dice=0.91, evaluation="runs/" + done.name + "/evaluation")
    mark_finished(tmp_path, failed, error="StepFailed: train failed (exit code 1)")
    assert read_state(tmp_path, done)["state"] == DONE and read_state(tmp_path, done)["duration_s"] >= 0
    assert read_state(tmp_path, failed)["state"] == FAILED and read_state(tmp_path, pending)["state"] == "pending"
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "jobs"))  # atomic writes leave no temp file
    status = format_status(study)
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in status.splitlines()
             if line.startswith("| ")]
    rows = {row[0] + row[1]: row for row in cells[1:]}  # cells[0] is the header
    assert len(rows) == 4
    assert rows["PURe_tiny0"][3] == "done" and "0.910" in rows["PURe_tiny0"]
    assert rows["PUReBaseline_tiny0"][3] == "failed"
    assert rows["PURe_tiny1"][3] == "interrupted"  # left running, and no run holds the study
    assert rows["PUReBaseline_tiny1"][3] == "pending"
    assert "StepFailed: train failed" in status and "resume" in status
    assert rows["PUReBaseline_tiny0"][4:6] == ["1", "0"]  # attempts, preemptions
    # status and report share one rule for a finished run: done, with its evaluation
    from pu_nnunet.study.report.study_report import _finished_runs

    assert list(_finished_runs(study)[0]) == [done]
    metrics.unlink()
    status = format_status(study)
    assert "| evaluation missing |" in status
    assert _finished_runs(study)[0] == {} and f"{done.name} (evaluation missing)" in _finished_runs(study)[2]
