"""Training a PURe network under autocast stays finite, also on inputs a thousand times too large.

nnU-Net trains on CUDA under fp16 autocast with a GradScaler; the PU layer computes its log,
conv and exp in float32 whatever autocast says, and clips the log domain, so neither large
inputs nor 16-bit activations around it may give NaN or Inf. CPU autocast runs bfloat16.
"""

import numpy as np
import pytest
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from pu_nnunet.product_units import ProductUnitConv
from pu_nnunet.trainers.pure_trainers import (nnUNetTrainerPURe, nnUNetTrainerPURe_LogClipOnly,
                                              nnUNetTrainerPURe_NoNonlinAfterAdd,
                                              nnUNetTrainerPURe_SmoothPositivityOnly, nnUNetTrainerPURe_Unstabilised)
from pu_nnunet.trainers.stability import StabilityRecord

STEPS = 36
# every third batch is scaled by this (an unnormalised CT in Hounsfield units is of this order)
LARGE_INPUT_SCALE = 1e3
NUM_CLASSES = 3
# nnUNetTrainer's optimiser and gradient clipping
LR, MOMENTUM, WEIGHT_DECAY, GRAD_CLIP_NORM = 1e-2, 0.99, 3e-5, 12


def _network_and_loss(plans: dict, trainer, device: str):
    manager = PlansManager(plans)
    configuration = manager.get_configuration("2d")
    network = trainer.build_network_architecture(manager, configuration, 1, NUM_CLASSES, True).to(device)
    # nnUNetTrainer._build_loss: Dice + CE over the deep-supervision outputs (the lowest one weighted 0)
    loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    weights = np.array([1 / 2 ** i for i in range(len(configuration.pool_op_kernel_sizes))])
    weights[-1] = 0
    return network, DeepSupervisionWrapper(loss, weights / weights.sum())


def _batch(step: int, patch: list, device: str):
    generator = torch.Generator().manual_seed(step)
    x = torch.randn(2, 1, *patch, generator=generator)
    if step % 3 == 2:
        x = x * LARGE_INPUT_SCALE
    target = torch.randint(0, NUM_CLASSES, (2, 1, *patch), generator=generator).float()
    targets = [target[..., ::2 ** i, ::2 ** i] for i in range(3)]
    return x.to(device), [t.to(device) for t in targets]


def _train(plans: dict, trainer, device: str, dtype: torch.dtype, scaler=None) -> dict:
    torch.manual_seed(0)
    network, loss_fn = _network_and_loss(plans, trainer, device)
    pu_weights = [m.weight for m in network.modules() if isinstance(m, ProductUnitConv)]
    assert pu_weights
    initial = [w.detach().clone() for w in pu_weights]
    optimizer = torch.optim.SGD(network.parameters(), LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, nesterov=True)
    patch = plans["configurations"]["2d"]["patch_size"]
    record = dict(losses=[], nonfinite_grad_steps=[], output_dtypes=set(), grad_norms=[])
    for step in range(STEPS):
        x, targets = _batch(step, patch, device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype):
            outputs = network(x)
            loss = loss_fn(outputs, targets)
        record["output_dtypes"].add(outputs[0].dtype)
        record["losses"].append(loss.item())
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        if not all(torch.isfinite(p.grad).all() for p in network.parameters() if p.grad is not None):
            record["nonfinite_grad_steps"].append(step)
        record["grad_norms"].append(torch.nn.utils.clip_grad_norm_(network.parameters(), GRAD_CLIP_NORM).item())
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    record["pu_weights_moved"] = all(not torch.equal(w, w0) for w, w0 in zip(pu_weights, initial))
    stability = StabilityRecord(grad_scaler=scaler is not None)
    stability.add_epoch(record["losses"], record["grad_norms"])  # as trainers/stability.py counts a run
    record["stability"] = stability.to_json()
    return record


@pytest.mark.parametrize("trainer", [nnUNetTrainerPURe, nnUNetTrainerPURe_Unstabilised,
                                     nnUNetTrainerPURe_SmoothPositivityOnly, nnUNetTrainerPURe_LogClipOnly,
                                     nnUNetTrainerPURe_NoNonlinAfterAdd],
                         ids=["stable", "unstabilised", "smooth_only", "logclip_only", "no_nonlin_after_add"])
def test_bf16_autocast_training_stays_finite_on_large_inputs(small_plans, one_torch_thread, trainer):
    record = _train(small_plans("2d"), trainer, "cpu", torch.bfloat16)
    assert record["output_dtypes"] == {torch.bfloat16}  # autocast was on around the PU layers
    assert np.isfinite(record["losses"]).all(), record["losses"]
    assert record["nonfinite_grad_steps"] == []
    stability = record["stability"]
    assert (stability["nonfinite_losses"], stability["nonfinite_grad_steps"], stability["steps"]) == (0, 0, STEPS)
    assert record["pu_weights_moved"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for fp16 autocast")
def test_fp16_autocast_with_grad_scaler_as_nnunet_trains(small_plans):
    scaler = torch.amp.GradScaler("cuda")
    record = _train(small_plans("2d"), nnUNetTrainerPURe, "cuda", torch.float16, scaler)
    assert record["output_dtypes"] == {torch.float16}
    assert np.isfinite(record["losses"]).all(), record["losses"]
    # GradScaler starts at 2**16 and halves after each step whose scaled gradients overflow: a few
    # skipped steps at the start are its calibration, any later one an fp16 overflow in the network
    assert all(step < 8 for step in record["nonfinite_grad_steps"]), record["nonfinite_grad_steps"]
    assert record["pu_weights_moved"]
