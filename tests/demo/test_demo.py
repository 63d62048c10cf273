"""pu-nnunet demo (the study preset "demo"): CPU plans, environment, and the whole pipeline with the
short test schedules."""

import json
import logging
import os

import pytest

from pu_nnunet.study.cpu_plans import CPU_BATCH_SIZE, CPU_PLANS, write_cpu_plans
from pu_nnunet.study.execution.nnunet_commands import nnunet_environment
from pu_nnunet.trainers import EXT_TRAINER_DIR


def test_cpu_plans_narrow_the_network_and_reuse_the_preprocessed_data(tmp_path, plain_plans):
    plain_plans["configurations"]["2d"]["batch_size"] = 33
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(plain_plans))
    written = json.loads(write_cpu_plans(tmp_path).read_text())
    config = written["configurations"]["2d"]
    assert written["plans_name"] == CPU_PLANS
    assert config["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 64, 128, 256]
    assert config["batch_size"] == CPU_BATCH_SIZE
    assert config["data_identifier"] == plain_plans["configurations"]["2d"]["data_identifier"]
    assert json.loads((tmp_path / "nnUNetPlans.json").read_text()) == plain_plans  # the original is untouched


def test_environment_keeps_the_users_folders_and_trainer_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/data/raw")
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)
    monkeypatch.setenv("nnUNet_extTrainer", "/my/trainers")
    env = nnunet_environment(tmp_path)
    assert env["nnUNet_raw"] == "/data/raw"
    assert env["nnUNet_preprocessed"] == str(tmp_path / "nnUNet_preprocessed")
    assert env["nnUNet_results"] == str(tmp_path / "nnUNet_results")
    assert env["nnUNet_extTrainer"].split(os.pathsep) == ["/my/trainers", EXT_TRAINER_DIR]


@pytest.mark.slow
def test_demo_pipeline_runs_end_to_end_and_reuses_finished_steps(tmp_path, monkeypatch, caplog):
    from pu_nnunet.demo.pipeline import Demo, DemoSettings
    from pu_nnunet.demo.summary import format_summary

    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    settings = DemoSettings(workdir=tmp_path / "demo", dataset_id=991, num_cases=8, num_test=2, shape=(16, 48, 48),
                            num_organs=2, runs={"PURe": "nnUNetTrainerPURe_tiny",
                                                "Baseline": "nnUNetTrainerPUReBaseline_tiny"})
    demo = Demo(settings)
    result = demo.run()
    workdir = tmp_path / "demo"
    for name in ("PURe", "Baseline"):
        run = workdir / "runs" / demo.job(name).name
        assert len(list((run / "predictions").glob("*.nii.gz"))) == 2
        metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
        assert metrics["n_reference_cases"] == 2 and metrics["missing_predictions"] == []
        assert (demo.fold_folder(settings.runs[name]) / "checkpoint_final.pth").is_file()
    assert (workdir / "comparisons" / "PURe_tiny_vs_PUReBaseline_tiny" / "report.md").is_file()
    assert (workdir / "report.md").is_file() and json.loads((workdir / "study.json").read_text())["preset"] == "demo"
    assert result["first"]["settings"]["pred_dir"].endswith("nnUNetTrainerPURe_tiny__fold_0__repeat_0/predictions")
    assert set(result["timings"]) == {"train_PURe", "train_Baseline", "predict_PURe", "predict_Baseline"}
    assert result["comparison"]["n_cases_compared"] == 2

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pu_nnunet.study"):
        again = Demo(settings).run()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("reusing" in m for m in messages) == 2  # the dataset and the preprocessed data
    assert sum("done before" in m for m in messages) == 2  # both jobs (training, prediction, evaluation)
    assert again["first"]["aggregates"]["foreground"]["dice_mean"] == result["first"]["aggregates"]["foreground"][
        "dice_mean"]
    assert again["timings"] == result["timings"]
    summary = format_summary(again, demo)
    assert "foreground (all organs)" in summary and "nnUNetTrainerPUReBaseline_tiny" in summary


def test_parameter_count_from_a_checkpoint_counts_each_tensor_once(tmp_path, plain_plans):
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from pu_nnunet.demo.summary import count_parameters
    from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPUReBaseline

    manager = PlansManager(plain_plans)
    network = nnUNetTrainerPUReBaseline.build_network_architecture(manager, manager.get_configuration("2d"), 1, 3)
    torch.save({"network_weights": network.state_dict()}, tmp_path / "checkpoint.pth")
    # the state dict lists the encoder twice and every conv twice; the count must not
    assert count_parameters(tmp_path / "checkpoint.pth") == sum(p.numel() for p in network.parameters())
