"""Each stabilisation ablation builds the network its name says: checked on the modules it holds."""

import math

import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from pu_nnunet.architectures import PUBasicBlock
from pu_nnunet.product_units import LOG_INPUT_CLIP, LOG_OUTPUT_CLIP, ProductUnitConv
from pu_nnunet.trainers.pure_trainers import (nnUNetTrainerPURe, nnUNetTrainerPURe_LogClipOnly,
                                              nnUNetTrainerPURe_NoNonlinAfterAdd,
                                              nnUNetTrainerPURe_SmoothPositivityOnly, nnUNetTrainerPURe_Unstabilised)


def build(trainer_class, plans: dict):
    configuration = PlansManager(plans).get_configuration("2d")
    return trainer_class.build_network_architecture(PlansManager(plans), configuration, 1, 4, True)


def pu_stage_indices(network):
    return [i for i, stage in enumerate(network.encoder.stages) if isinstance(stage.blocks[0], PUBasicBlock)]


def pu_layers(network):
    return [m for m in network.modules() if isinstance(m, ProductUnitConv)]


@pytest.mark.parametrize("trainer, positivity, input_clip, output_clip", [
    (nnUNetTrainerPURe, "softplus", LOG_INPUT_CLIP, LOG_OUTPUT_CLIP),  # both parts
    (nnUNetTrainerPURe_SmoothPositivityOnly, "softplus", None, None),
    (nnUNetTrainerPURe_LogClipOnly, "threshold", LOG_INPUT_CLIP, LOG_OUTPUT_CLIP),
    (nnUNetTrainerPURe_Unstabilised, "threshold", None, None),  # neither
])
def test_each_stabilisation_ablation_builds_its_pu(resenc_plans, trainer, positivity, input_clip, output_clip):
    network = build(trainer, resenc_plans)
    pus = pu_layers(network)
    assert len(pus) == 12 and pu_stage_indices(network) == [3, 4]  # placement untouched
    assert {(pu.positivity, pu.log_input_clip, pu.log_output_clip) for pu in pus} == {
        (positivity, input_clip, output_clip)}
    # the threshold positivity learns one theta per PU; the smooth mapping has no parameter
    assert all((pu.theta is not None) == (positivity == "threshold") for pu in pus)


def test_no_nonlin_after_add_removes_only_the_pu_blocks_nonlinearity(resenc_plans):
    with_nonlin, without = build(nnUNetTrainerPURe, resenc_plans), build(nnUNetTrainerPURe_NoNonlinAfterAdd,
                                                                         resenc_plans)
    pu_blocks = [m for m in without.modules() if isinstance(m, PUBasicBlock)]
    assert len(pu_blocks) == 12
    assert all(isinstance(block.nonlin2, nn.Identity) for block in pu_blocks)
    assert all(isinstance(block.nonlin2, nn.LeakyReLU) for block in with_nonlin.modules()
               if isinstance(block, PUBasicBlock))
    # plain stages keep nnU-Net's nonlinearity after their add, and the PU itself is the default's
    plain = [b for s in without.encoder.stages[:3] for b in s.blocks]
    assert plain and all(isinstance(b.nonlin2, nn.LeakyReLU) for b in plain)
    assert {(pu.positivity, pu.log_input_clip) for pu in pu_layers(without)} == {("softplus", LOG_INPUT_CLIP)}


def exponent_bound(pu, a):
    fan_in = pu.weight[0].numel()
    return math.sqrt(6.0 / ((1 + a * a) * fan_in))


@pytest.mark.parametrize("a", [5.0, math.sqrt(5.0)])
def test_exponent_init_reaches_every_pu_from_the_trainer(resenc_plans, a):
    trainer = type("PUReInit", (nnUNetTrainerPURe,), {"pu_exponent_init_a": a})
    pus = pu_layers(build(trainer, resenc_plans))
    for pu in pus:
        bound = exponent_bound(pu, a)
        # uniform on [-bound, bound]: the largest of thousands of draws lies just below the bound
        assert pu.exponent_init_a == a and 0.95 * bound < pu.weight.abs().max().item() <= bound


def test_every_trainer_has_a_50_epoch_variant_that_changes_only_the_schedule():
    from pu_nnunet.trainers import pure_trainers

    bases = [nnUNetTrainerPURe, pure_trainers.nnUNetTrainerPUReBaseline, nnUNetTrainerPURe_Unstabilised,
             nnUNetTrainerPURe_SmoothPositivityOnly, nnUNetTrainerPURe_LogClipOnly, nnUNetTrainerPURe_NoNonlinAfterAdd]
    for base in bases:
        variant = getattr(pure_trainers, f"{base.__name__}_50epochs")
        assert issubclass(variant, base) and variant.__name__ in pure_trainers.__all__
        assert variant.pu_network_options() == base.pu_network_options()
        assert (variant.schedule_num_epochs, variant.schedule_iterations_per_epoch,
                variant.schedule_val_iterations_per_epoch) == (50, 20, 15)
