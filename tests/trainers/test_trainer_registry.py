"""The trainer registry's contract (issue 28), over every trainer this package defines: nnU-Net's
own lookup finds it through nnUNet_extTrainer, its network builds from ResEnc plans and gives a
finite output, and the PU stages it holds are the ones it declares. A new trainer class is
covered by being written: ``pure_trainers.__all__`` is computed."""

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from pu_nnunet.architectures import PUBasicBlock, resolve_pu_stages
from pu_nnunet.trainers import pure_trainers
from pu_nnunet.trainers.registry import find_trainer_class, nnunet_lookup, pu_trainer_classes

TRAINERS = sorted(pu_trainer_classes())


def test_every_trainer_class_of_the_module_is_registered():
    defined = {name for name, value in vars(pure_trainers).items()
               if isinstance(value, type) and issubclass(value, nnUNetTrainer) and value.__module__ == pure_trainers.__name__
               and not name.startswith("_")}
    assert set(TRAINERS) == defined and len(TRAINERS) >= 19
    # nnU-Net's external-trainer module re-exports exactly them
    from pu_nnunet.trainers.nnunet_ext import pu_nnunet_trainers

    assert {name for name in TRAINERS if getattr(pu_nnunet_trainers, name, None) is pure_trainers.__dict__[name]} \
        == set(TRAINERS)


@pytest.mark.parametrize("name", TRAINERS)
def test_nnunets_lookup_finds_it_and_its_network_is_what_it_declares(name, resenc_plans, one_torch_thread):
    trainer = find_trainer_class(name)
    assert trainer is getattr(pure_trainers, name)
    # what nnUNetv2_train -tr NAME does (nnUNet_extTrainer listing this package's trainer folder)
    assert nnunet_lookup(name).__qualname__ == name
    manager = PlansManager(resenc_plans)
    configuration = manager.get_configuration("2d")
    network = trainer.build_network_architecture(manager, configuration, 1, 3, False).eval()
    n_stages = len(network.encoder.stages)
    declared = [] if getattr(trainer, "pu_stages", None) is None else resolve_pu_stages(trainer.pu_stages, n_stages)
    held = [i for i, stage in enumerate(network.encoder.stages) if isinstance(stage.blocks[0], PUBasicBlock)]
    assert held == sorted(declared)
    with torch.no_grad():
        output = network(torch.randn(1, 1, *configuration.patch_size[-2:]) * 3)
    assert output.shape[1] == 3 and torch.isfinite(output).all()


def test_unknown_names_are_none_not_errors():
    assert find_trainer_class("nnUNetTrainerPURe_nope") is None
    assert find_trainer_class("nnUNetTrainer_5epochs").__name__ == "nnUNetTrainer_5epochs"
