"""What a study sets up for nnU-Net before any job: plans sized for a CPU (the demo preset's) and
the environment of its nnU-Net commands."""

import json
import os

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
