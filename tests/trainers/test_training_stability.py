"""trainers/stability.py: the counts of non-finite steps and gradient spikes, the train step that
keeps nnU-Net's, and the record a real (interrupted and resumed) training writes."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from pu_nnunet.trainers.stability import (SPIKE_FACTOR, SPIKE_MIN_HISTORY, STABILITY_FILE, RecordsStability,
                                          StabilityRecord)


def test_counts_of_nonfinite_steps_spikes_and_clipping():
    record = StabilityRecord(grad_scaler=True)
    norms = [1.0] * SPIKE_MIN_HISTORY + [13.0, math.nan, 9.0, math.inf]
    losses = [0.5] * SPIKE_MIN_HISTORY + [0.4, 0.3, math.nan, 0.2]
    record.add_epoch(losses, norms)
    content = record.to_json()
    assert (content["steps"], content["epochs"]) == (14, 1)
    assert (content["nonfinite_losses"], content["nonfinite_grad_steps"]) == (1, 2)
    # under a GradScaler the non-finite steps were skipped, not applied
    assert (content["skipped_steps"], content["applied_nonfinite_steps"]) == (2, 0)
    assert content["first_nonfinite_step"] == SPIKE_MIN_HISTORY + 1
    # 13 > 10 x the median 1 is a spike, and above nnU-Net's clipping bound 12; 9 is neither
    assert SPIKE_FACTOR == 10.0
    assert (content["grad_norm_spikes"], content["clipped_steps"], content["max_grad_norm"]) == (1, 1, 13.0)
    assert content["final_loss"] == pytest.approx((0.5 * SPIKE_MIN_HISTORY + 0.4 + 0.3 + 0.2) / 13)
    assert content["last_step_loss"] == 0.2
    json.dumps(content, allow_nan=False)  # strictly valid JSON


def test_no_spike_before_the_history_is_known_and_without_scaler_nonfinite_steps_are_applied():
    record = StabilityRecord(grad_scaler=False)
    record.add_epoch([1.0] * 3, [1.0, 100.0, math.nan])  # 100 is 100x the median, but only 1 norm known
    content = record.to_json()
    assert (content["grad_norm_spikes"], content["clipped_steps"]) == (0, 1)
    assert (content["skipped_steps"], content["applied_nonfinite_steps"]) == (0, 1)


def test_a_resumed_record_counts_as_one_uninterrupted_run():
    rng = np.random.default_rng(0)
    epochs = [(rng.random(30), np.r_[rng.random(29) + 1, 40.0]) for _ in range(3)]
    whole = StabilityRecord(grad_scaler=False)
    for losses, norms in epochs:
        whole.add_epoch(losses, norms)
    first = StabilityRecord(grad_scaler=False)
    first.add_epoch(*epochs[0])
    resumed = StabilityRecord.from_json(json.loads(json.dumps(first.to_json())))
    for losses, norms in epochs[1:]:
        resumed.add_epoch(losses, norms)
    assert resumed.to_json() == whole.to_json()
    assert whole.to_json()["grad_norm_spikes"] == 3


def _fake_trainer(seed: int):
    torch.manual_seed(seed)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv2d(4, 2, 1))
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.99, nesterov=True)
    return SimpleNamespace(network=network, optimizer=optimizer, device=torch.device("cpu"), grad_scaler=None,
                           loss=lambda output, target: torch.nn.functional.cross_entropy(output, target[:, 0].long()),
                           _epoch_grad_norms=[])


def test_the_recording_train_step_updates_the_weights_as_nnunets():
    generator = torch.Generator().manual_seed(1)
    batch = {"data": 100 * torch.randn(2, 1, 8, 8, generator=generator),  # large: the clipping acts
             "target": torch.randint(0, 2, (2, 1, 8, 8), generator=generator)}
    ours, theirs = _fake_trainer(0), _fake_trainer(0)
    for _ in range(3):
        loss_ours = RecordsStability.train_step(ours, batch)["loss"]
        loss_theirs = nnUNetTrainer.train_step(theirs, batch)["loss"]
        assert loss_ours == loss_theirs
    for a, b in zip(ours.network.parameters(), theirs.network.parameters()):
        assert torch.equal(a, b)
    norms = [float(n) for n in ours._epoch_grad_norms]
    assert len(norms) == 3 and max(norms) > 12  # the norm before nnU-Net's clipping, kept per step


@pytest.mark.slow
def test_an_interrupted_and_resumed_training_writes_one_record(tiny_trained_model):
    fold = tiny_trained_model["fold"]
    content = json.loads((fold / STABILITY_FILE).read_text())
    # nnUNetTrainerPURe_tiny: 2 epochs x 10 iterations, killed after epoch 0 and resumed with --c
    assert (content["epochs"], content["steps"], content["finished"]) == (2, 20, True)
    assert content["record_restarted_at_epoch"] is None  # the resumed run continued epoch 0's record
    assert content["trainer"] == tiny_trained_model["trainer"] and content["grad_scaler"] is False
    assert (content["nonfinite_losses"], content["nonfinite_grad_steps"]) == (0, 0)
    assert len(content["epoch_loss"]) == 2 and all(n > 0 for n in content["epoch_median_grad_norm"])
    logged = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["logging"]
    # the final loss is nnU-Net's logged training loss of the last epoch
    assert content["final_loss"] == pytest.approx(float(logged["train_losses"][-1]), rel=1e-5)


def test_cpu_bf16_autocast_runs_the_step_in_bfloat16_and_a_misspelt_value_is_refused(monkeypatch):
    from pu_nnunet.trainers.stability import CPU_AUTOCAST_VARIABLE, autocast_description, cpu_autocast_dtype

    seen = []
    trainer = _fake_trainer(0)
    trainer.network[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    batch = {"data": torch.randn(2, 1, 8, 8), "target": torch.randint(0, 2, (2, 1, 8, 8))}
    monkeypatch.setenv(CPU_AUTOCAST_VARIABLE, "BF16")
    assert autocast_description("cpu") == "bf16 autocast (CPU)"
    RecordsStability.train_step(trainer, batch)
    monkeypatch.delenv(CPU_AUTOCAST_VARIABLE)
    assert autocast_description("cpu") == "none (float32)"
    RecordsStability.train_step(trainer, batch)
    assert seen == [torch.bfloat16, torch.float32]
    monkeypatch.setenv(CPU_AUTOCAST_VARIABLE, "fp16")
    with pytest.raises(ValueError, match="PU_NNUNET_CPU_AUTOCAST='fp16'"):
        cpu_autocast_dtype()


def test_a_damaged_record_is_an_error_naming_it_through_the_one_reader(tmp_path):
    """Issue 28: read by the one user-JSON reader: the file and the problem in one message, a
    ValueError too (the study report shows the run without its counts)."""
    from pu_nnunet.trainers.stability import StabilityRecordError, read_record
    from pu_nnunet.user_errors import UserInputError

    path = tmp_path / "training_stability.json"
    assert read_record(str(path)) is None
    for text, problem in (('{"steps": 3', "stability record is not valid JSON"),
                          ("[1]", r"stability record must hold an object \(\{...\}\), found list")):
        path.write_text(text)
        with pytest.raises(StabilityRecordError, match=f"^{path}: {problem}") as caught:
            read_record(str(path))
        assert isinstance(caught.value, UserInputError) and isinstance(caught.value, ValueError)
    path.write_text('{"steps": 3, "max_grad_norm": NaN}')  # as nnU-Net's own files of a fold folder
    assert read_record(str(path))["steps"] == 3
