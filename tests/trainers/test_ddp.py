"""Multi-GPU training wraps the network in DistributedDataParallel: PURe must train under it.

On the CPU, 2 processes with the gloo backend run the same wrapper (tests/trainers/ddp_train_steps.py);
with 2 GPUs nnU-Net's own ``nnUNetv2_train -num_gpus 2`` runs.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe

SCRIPT = Path(__file__).with_name("ddp_train_steps.py")


@pytest.mark.slow  # over 8 s on 2 cores: the full suite runs it, the quick lane does not
def test_ddp_with_gloo_keeps_ranks_identical_and_every_parameter_gets_a_gradient(small_plans, tmp_path):
    plans = small_plans("2d")
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "plans.json"), str(tmp_path)],
                            capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    torch.manual_seed(0)  # rank 0's initial weights, which DDP broadcasts
    manager = PlansManager(plans)
    initial = dict(nnUNetTrainerPURe.build_network_architecture(
        manager, manager.get_configuration("2d"), 1, 3, True).named_parameters())
    for positivity in ("softplus", "threshold"):
        first, second = ranks[0][positivity], ranks[1][positivity]
        assert first["pu_layers"] > 0
        assert first["without_gradient"] == [] and second["without_gradient"] == [], positivity
        assert first["parameters"].keys() == second["parameters"].keys()
        for name, value in first["parameters"].items():
            assert torch.equal(value, second["parameters"][name]), f"{positivity}: {name} differs between ranks"
        if positivity == "softplus":
            assert any(not torch.equal(value, initial[name]) for name, value in first["parameters"].items()
                       if name.endswith("pu.weight")), "the optimiser steps did not change the PU weights"
    assert any(name.endswith("pu.theta") for name in ranks[0]["threshold"]["parameters"])


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs for nnUNetv2_train -num_gpus 2")
def test_nnunetv2_train_with_two_gpus(tiny_trained_model, tmp_path):
    """nnU-Net's own DDP run (NCCL, compiled network, fp16 autocast) of the tiny PURe trainer."""
    model = tiny_trained_model
    env = dict(model["env"], nnUNet_results=str(tmp_path / "results"), nnUNet_n_proc_DA="2")
    command = [str(model["bin"] / "nnUNetv2_train"), str(model["dataset_id"]), "2d", "0", "-tr", model["trainer"],
               "-num_gpus", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fold = tmp_path / "results" / model["fold"].parent.parent.name / model["fold"].parent.name / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == model["trainer"]
    assert all(torch.isfinite(torch.tensor(checkpoint["logging"]["train_losses"])))
