"""transfer-weights with the trained tiny model: PURe -> baseline -> PURe, then
``nnUNetv2_train -pretrained_weights`` starts from the file, and at step 0 the network nnU-Net
built and loaded holds the source's tensors."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from pu_nnunet.cli import main
from pu_nnunet.trainers.transfer_weights import NETWORK_WEIGHTS_KEY, TRANSFER_RECORD_KEY

pytestmark = pytest.mark.slow

# nnU-Net's own path from `nnUNetv2_train -pretrained_weights` to the first training step:
# get_trainer_from_args builds the trainer, maybe_load_checkpoint initialises it and calls
# load_pretrained_weights; the network is saved as it would enter epoch 0
STEP_ZERO_SCRIPT = """
import sys, torch
from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint
dataset, trainer, weights, output = sys.argv[1:]
nnunet_trainer = get_trainer_from_args(dataset, "2d", 0, trainer, "nnUNetPlans", device=torch.device("cpu"))
maybe_load_checkpoint(nnunet_trainer, False, False, weights)
torch.save(nnunet_trainer.network.state_dict(), output)
"""


def transfer(source, plans, trainer, output) -> None:
    assert main(["transfer-weights", str(source), "--plans", str(plans), "--configuration", "2d", "--to", trainer,
                 "-o", str(output)]) == 0


def start_training(model, env, weights) -> str:
    """nnUNetv2_train with -pretrained_weights, stopped once epoch 0 has begun."""
    command = [str(model["bin"] / "nnUNetv2_train"), str(model["dataset_id"]), "2d", "0", "-tr", model["trainer"],
               "-device", "cpu", "-pretrained_weights", str(weights)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "Epoch 0" in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return "".join(seen)


def test_pure_to_baseline_to_pure_and_nnunet_trains_from_it(tiny_trained_model, tmp_path):
    model = tiny_trained_model
    plans = model["fold"].parent / "plans.json"
    trained = torch.load(model["fold"] / "checkpoint_final.pth", weights_only=False)[NETWORK_WEIGHTS_KEY]

    transfer(model["fold"] / "checkpoint_final.pth", plans, "nnUNetTrainerPUReBaseline_tiny", tmp_path / "baseline.pth")
    baseline_file = torch.load(tmp_path / "baseline.pth", weights_only=False)
    baseline = baseline_file[NETWORK_WEIGHTS_KEY]
    assert all(torch.equal(baseline[key], trained[key]) for key in baseline_file[TRANSFER_RECORD_KEY]["copied"])
    assert any(".pu." in key for key in baseline_file[TRANSFER_RECORD_KEY]["dropped"])

    transfer(tmp_path / "baseline.pth", plans, model["trainer"], tmp_path / "pure.pth")
    record = torch.load(tmp_path / "pure.pth", weights_only=False)[TRANSFER_RECORD_KEY]
    # the encoder's stem, the decoder and every plain block come back as trained
    assert any(key.startswith("encoder.stem.") for key in record["copied"])

    env = dict(model["env"], nnUNet_results=str(tmp_path / "results"), nnUNet_n_proc_DA="0", nnUNet_compile="f")
    step_zero = tmp_path / "step_zero.pth"
    subprocess.run([sys.executable, "-c", STEP_ZERO_SCRIPT, str(model["dataset_id"]), model["trainer"],
                    str(tmp_path / "pure.pth"), str(step_zero)], env=env, check=True, capture_output=True, timeout=600)
    loaded = torch.load(step_zero, weights_only=False)
    for key in record["copied"]:
        assert torch.equal(loaded[key], baseline[key]), key
    assert set(loaded) == set(record["copied"]) | set(record["initialised"])

    output = start_training(model, env, tmp_path / "pure.pth")
    assert "Loading pretrained weights from file" in output and "Epoch 0" in output, output[-3000:]
