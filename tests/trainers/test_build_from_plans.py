"""Trainers build the PU network, and its matched baseline, from nnU-Net plans."""

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from pu_nnunet.architectures import PUBasicBlock
from pu_nnunet.product_units import ProductUnitConv
from pu_nnunet.trainers.plans_to_network import UnsupportedPlansError, blocks_for_plain_stage, residual_unet_kwargs
from pu_nnunet.trainers.pure_trainers import (nnUNetTrainerPURe, nnUNetTrainerPURe_AllStages,
                                              nnUNetTrainerPURe_HighResStages, nnUNetTrainerPURe_Unstabilised,
                                              nnUNetTrainerPUReBaseline)


def build(trainer_class, plans: dict, deep_supervision=True):
    configuration = PlansManager(plans).get_configuration("2d")
    return trainer_class.build_network_architecture(PlansManager(plans), configuration, 1, 4, deep_supervision)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def pu_stage_indices(network):
    return [i for i, stage in enumerate(network.encoder.stages) if isinstance(stage.blocks[0], PUBasicBlock)]


def test_baseline_from_resenc_plans_is_nnunets_own_resenc_network(resenc_plans):
    ours = build(nnUNetTrainerPUReBaseline, resenc_plans)
    configuration = PlansManager(resenc_plans).get_configuration("2d")
    nnunets = nnUNetTrainer.build_network_architecture(PlansManager(resenc_plans), configuration, 1, 4, True)
    assert type(nnunets).__name__ == "ResidualEncoderUNet"
    assert n_params(ours) == n_params(nnunets)
    assert list(ours.state_dict()) == list(nnunets.state_dict())
    assert [len(s.blocks) for s in ours.encoder.stages] == [1, 3, 4, 6, 6]


def test_plain_plans_become_one_residual_block_per_two_convs(plain_plans):
    network = build(nnUNetTrainerPUReBaseline, plain_plans)
    assert [len(s.blocks) for s in network.encoder.stages] == [1, 1, 1, 1, 1]
    assert [blocks_for_plain_stage(n) for n in (1, 2, 3, 4)] == [1, 1, 2, 2]
    kwargs = plain_plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    assert network.encoder.output_channels == kwargs["features_per_stage"]
    assert [list(s) for s in network.encoder.strides] == kwargs["strides"]


@pytest.mark.parametrize("trainer, stages", [
    (nnUNetTrainerPURe, [3, 4]), (nnUNetTrainerPUReBaseline, []), (nnUNetTrainerPURe_AllStages, [0, 1, 2, 3, 4]),
    (nnUNetTrainerPURe_HighResStages, [0, 1, 2]), (nnUNetTrainerPURe_Unstabilised, [3, 4]),
])
def test_trainers_differ_only_in_pu_placement(resenc_plans, trainer, stages):
    network = build(trainer, resenc_plans)
    assert pu_stage_indices(network) == stages


def test_pure_vs_baseline_parameters_on_resenc_plans(resenc_plans):
    pure, baseline = build(nnUNetTrainerPURe, resenc_plans), build(nnUNetTrainerPUReBaseline, resenc_plans)
    pus = [m for m in pure.modules() if isinstance(m, ProductUnitConv)]
    assert len(pus) == 12  # 6 + 6 blocks in the two deepest stages
    assert n_params(pure) == n_params(baseline) - sum(m.out_channels for m in pus)  # the dropped conv biases
    assert abs(n_params(pure) / n_params(baseline) - 1) < 0.01


def test_unstabilised_ablation_uses_purest_pu(resenc_plans):
    pu = next(m for m in build(nnUNetTrainerPURe_Unstabilised, resenc_plans).modules()
              if isinstance(m, ProductUnitConv))
    assert (pu.positivity, pu.log_input_clip, pu.log_output_clip) == ("threshold", None, None)


@pytest.mark.parametrize("plans_fixture", ["plain_plans", "resenc_plans"])
def test_network_runs_at_the_plans_patch_size(request, plans_fixture):
    plans = request.getfixturevalue(plans_fixture)
    network = build(nnUNetTrainerPURe, plans, deep_supervision=False)
    with torch.no_grad():
        out = network(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 4, 64, 64)


def test_unsupported_architecture_is_named():
    with pytest.raises(UnsupportedPlansError, match="ResidualUNet"):
        residual_unet_kwargs("dynamic_network_architectures.architectures.unet.ResidualUNet", {}, [])
