"""nnU-Net trainers for the PU residual-encoder U-Net and its matched plain baseline.

nnU-Net finds them by class name through ``nnUNet_extTrainer`` (see ``trainer-path``); apart
from the network they are nnU-Net's own nnUNetTrainer: data, augmentation, loss, optimiser,
schedule, checkpoints, validation and prediction are untouched. Every trainer here builds the
same residual-encoder U-Net from the plans; they differ only in where PU blocks sit and how the
PU is stabilised, so ``nnUNetTrainerPURe`` vs ``nnUNetTrainerPUReBaseline`` isolates the PU.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import nn

from pu_nnunet.architectures import DEFAULT_PLACEMENT, PUResidualEncoderUNet
from pu_nnunet.product_units import EXPONENT_INIT_A, LOG_INPUT_CLIP, LOG_OUTPUT_CLIP
from pu_nnunet.trainers.plans_to_network import residual_unet_kwargs
from pu_nnunet.trainers.preemption import SaveOnSignal
from pu_nnunet.trainers.stability import RecordsStability

# torch threads of a CPU training when set (nnUNetv2_train otherwise uses every logical CPU)
CPU_THREADS_VARIABLE = "PU_NNUNET_CPU_THREADS"


class nnUNetTrainerPURe(SaveOnSignal, RecordsStability, nnUNetTrainer):
    """Stable PU residual blocks in the deepest half of the encoder (PU-UNet's placement).

    SaveOnSignal: SIGUSR1/SIGUSR2/SIGTERM save checkpoint_latest.pth and exit 75 (trainers/preemption.py).
    RecordsStability: fold_F/training_stability.json, non-finite steps and gradient spikes (trainers/stability.py)."""

    pu_stages = DEFAULT_PLACEMENT
    pu_positivity = "softplus"
    pu_log_input_clip: Optional[float] = LOG_INPUT_CLIP
    pu_log_output_clip: Optional[float] = LOG_OUTPUT_CLIP
    pu_nonlin_after_add = True
    pu_exponent_init_a: float = EXPONENT_INIT_A

    # Schedule overrides for short variants; None keeps nnU-Net's (1000 epochs x 250 iterations).
    schedule_num_epochs: Optional[int] = None
    schedule_iterations_per_epoch: Optional[int] = None
    schedule_val_iterations_per_epoch: Optional[int] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # nnU-Net records __init__'s parameters by name: this signature must stay nnUNetTrainer's
        super().__init__(plans, configuration, fold, dataset_json, device)
        threads = os.environ.get(CPU_THREADS_VARIABLE)
        if threads and self.device.type == "cpu":
            # nnUNetv2_train -device cpu gives torch every logical CPU; on a machine shared with
            # other jobs each op then waits for busy cores (one conv step: 0.56 s with 2 threads,
            # 0.07 s with 1 under load), so a study may ask for fewer (pu-nnunet study --cpu-threads)
            torch.set_num_threads(int(threads))
        if self.schedule_num_epochs is not None:
            self.num_epochs = self.schedule_num_epochs
            # short runs would otherwise write their first checkpoint_latest only at epoch 50
            self.save_every = 1
        if self.schedule_iterations_per_epoch is not None:
            self.num_iterations_per_epoch = self.schedule_iterations_per_epoch
        if self.schedule_val_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = self.schedule_val_iterations_per_epoch

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        # a classmethod (nnU-Net declares a staticmethod) so that variants only set class attributes;
        # nnU-Net calls it on the class at inference and on the instance in training: both bind cls
        kwargs = residual_unet_kwargs(configuration_manager.network_arch_class_name,
                                      configuration_manager.network_arch_init_kwargs,
                                      configuration_manager.network_arch_init_kwargs_req_import)
        network = PUResidualEncoderUNet(
            input_channels=num_input_channels, num_classes=num_output_channels,
            deep_supervision=enable_deep_supervision, **kwargs, **cls.pu_network_options())
        network.apply(network.initialize)
        return network

    @classmethod
    def pu_network_options(cls) -> dict:
        return dict(pu_stages=cls.pu_stages, pu_positivity=cls.pu_positivity,
                    pu_log_input_clip=cls.pu_log_input_clip, pu_log_output_clip=cls.pu_log_output_clip,
                    pu_nonlin_after_add=cls.pu_nonlin_after_add, pu_exponent_init_a=cls.pu_exponent_init_a)


class nnUNetTrainerPUReBaseline(nnUNetTrainerPURe):
    """The matched baseline: the same residual-encoder U-Net with plain residual blocks everywhere."""

    pu_stages = "none"


# --- ablations -------------------------------------------------------------------------------

class nnUNetTrainerPURe_AllStages(nnUNetTrainerPURe):
    """Ablation: PU blocks in every encoder stage."""

    pu_stages = "all"


class nnUNetTrainerPURe_HighResStages(nnUNetTrainerPURe):
    """Ablation: PU blocks only in the high-resolution stages (those the default leaves plain)."""

    pu_stages = "shallowest_half"


class nnUNetTrainerPURe_Unstabilised(nnUNetTrainerPURe):
    """Ablation: PURe's original PU (hard threshold positivity, no log-domain clipping)."""

    pu_positivity = "threshold"
    pu_log_input_clip = None
    pu_log_output_clip = None


# --- short schedules (tests, demo) ---------------------------------------------------------
# nnU-Net's _1epoch variants still run 250 training + 50 validation iterations per epoch.

class _TinySchedule:
    """2 epochs x 10 iterations: proves the pipeline runs (tests), learns little."""

    schedule_num_epochs = 2
    schedule_iterations_per_epoch = 10
    schedule_val_iterations_per_epoch = 2


class nnUNetTrainerPURe_tiny(_TinySchedule, nnUNetTrainerPURe):
    pass


class nnUNetTrainerPUReBaseline_tiny(_TinySchedule, nnUNetTrainerPUReBaseline):
    pass


class _DemoSchedule:
    """12 epochs x 20 iterations: enough for the synthetic CT demo to learn, minutes on a CPU."""

    schedule_num_epochs = 12
    schedule_iterations_per_epoch = 20
    schedule_val_iterations_per_epoch = 4


class nnUNetTrainerPURe_demo(_DemoSchedule, nnUNetTrainerPURe):
    pass


class nnUNetTrainerPUReBaseline_demo(_DemoSchedule, nnUNetTrainerPUReBaseline):
    pass


class nnUNetTrainerPURe_HighResStages_demo(_DemoSchedule, nnUNetTrainerPURe_HighResStages):
    pass


class nnUNetTrainerPURe_Unstabilised_demo(_DemoSchedule, nnUNetTrainerPURe_Unstabilised):
    """The unstabilised PU at the demo schedule: training under CPU bf16 autocast (about 7x slower
    than float32 on 2 cores) fits a session only this short (issue 27)."""


# --- stabilisation ablations (issue 20) ----------------------------------------------------
# PU-UNet stabilises PURe's PU with two parts: a smooth positivity mapping and log-domain
# clipping. With nnUNetTrainerPURe (both) and nnUNetTrainerPURe_Unstabilised (neither), these
# two make the 2x2 design; the last one removes the nonlinearity PURe's classifiers do not have.

class nnUNetTrainerPURe_SmoothPositivityOnly(nnUNetTrainerPURe):
    """Ablation: only the smooth positivity mapping (softplus), no log-domain clipping."""

    pu_positivity = "softplus"
    pu_log_input_clip = None
    pu_log_output_clip = None


class nnUNetTrainerPURe_LogClipOnly(nnUNetTrainerPURe):
    """Ablation: only the log-domain clipping, with PURe's hard threshold positivity."""

    pu_positivity = "threshold"
    pu_log_input_clip = LOG_INPUT_CLIP
    pu_log_output_clip = LOG_OUTPUT_CLIP


class nnUNetTrainerPURe_NoNonlinAfterAdd(nnUNetTrainerPURe):
    """Ablation: PURe without the LeakyReLU after the residual addition of its PU blocks (as PURe's classifiers)."""

    pu_nonlin_after_add = False




# --- a CPU-scale schedule long enough to converge (issue 27) ---------------------------------
# nnU-Net's poly learning rate falls to 0 over num_epochs, so a shorter schedule anneals fully
# too; 50 epochs x 20 iterations is 1000 steps: minutes per run on 64x64 synthetic ultrasound
# with nnUNetPlansCPU on 2 cores, where the _demo schedule's 240 steps leave the learning curves
# still rising. Whether a run converged is measured (pu_nnunet/study/report/convergence.py), not assumed:
# 15 validation iterations per epoch (45 patches at batch 3) because with 5 the epoch-to-epoch
# noise of the pseudo-Dice (window standard error about 0.01) hid a 0.005 plateau tolerance.

class _Converge50Schedule:
    """50 epochs x 20 iterations (validation 15 iterations per epoch)."""

    schedule_num_epochs = 50
    schedule_iterations_per_epoch = 20
    schedule_val_iterations_per_epoch = 15


class nnUNetTrainerPURe_50epochs(_Converge50Schedule, nnUNetTrainerPURe):
    pass


class nnUNetTrainerPUReBaseline_50epochs(_Converge50Schedule, nnUNetTrainerPUReBaseline):
    pass


class nnUNetTrainerPURe_Unstabilised_50epochs(_Converge50Schedule, nnUNetTrainerPURe_Unstabilised):
    pass


class nnUNetTrainerPURe_SmoothPositivityOnly_50epochs(_Converge50Schedule, nnUNetTrainerPURe_SmoothPositivityOnly):
    pass


class nnUNetTrainerPURe_LogClipOnly_50epochs(_Converge50Schedule, nnUNetTrainerPURe_LogClipOnly):
    pass


class nnUNetTrainerPURe_NoNonlinAfterAdd_50epochs(_Converge50Schedule, nnUNetTrainerPURe_NoNonlinAfterAdd):
    pass



# --- the same at twice the length (issue 27) ---------------------------------------------------
# At 50 epochs 8 of the first 12 synthetic-ultrasound runs still gained more than 0.005 validation
# pseudo-Dice over their last 10 % of epochs (the plateau criterion); 100 epochs x 20 iterations
# for PURe and its baseline, the comparison the papers' claims rest on.

class _Converge100Schedule(_Converge50Schedule):
    """100 epochs x 20 iterations (validation 15 iterations per epoch)."""

    schedule_num_epochs = 100


class nnUNetTrainerPURe_100epochs(_Converge100Schedule, nnUNetTrainerPURe):
    pass


class nnUNetTrainerPUReBaseline_100epochs(_Converge100Schedule, nnUNetTrainerPUReBaseline):
    pass

# Every trainer class defined above, computed: a new class is registered by being written
# (nnU-Net's lookup, transfer-weights and the contract tests read this; trainers/registry.py).
__all__ = sorted(name for name, value in list(globals().items())
                 if isinstance(value, type) and issubclass(value, nnUNetTrainer)
                 and value.__module__ == __name__ and not name.startswith("_"))
