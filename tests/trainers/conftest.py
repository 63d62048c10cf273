"""Small nnU-Net plans for the trainer tests that compile, train or spawn processes."""

import copy

import pytest
import torch


def _small_plans(plain_plans: dict, configuration: str) -> dict:
    """nnU-Net's PlainConvUNet plans cut to 3 small stages and small patches (2d or 3d_fullres)."""
    plans = copy.deepcopy(plain_plans)
    config = plans["configurations"].pop("2d")
    arch = config["architecture"]["arch_kwargs"]
    arch.update(n_stages=3, features_per_stage=[4, 8, 8], n_conv_per_stage=[2] * 3, n_conv_per_stage_decoder=[1] * 2,
                kernel_sizes=[[3, 3]] * 3, strides=[[1, 1]] + [[2, 2]] * 2)
    config.update(patch_size=[32, 32])
    if configuration == "3d_fullres":
        # an anisotropic CT's 3d_fullres: in-plane kernels and strides first, as nnU-Net's planner makes them
        arch.update(conv_op="torch.nn.modules.conv.Conv3d", norm_op="torch.nn.modules.instancenorm.InstanceNorm3d",
                    kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 2, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
        config.update(data_identifier="nnUNetPlans_3d_fullres", patch_size=[8, 16, 16], spacing=[3.0, 0.8, 0.8])
    plans["configurations"][configuration] = config
    return plans


@pytest.fixture
def small_plans(plain_plans):
    """``small_plans("2d")`` / ``small_plans("3d_fullres")``: plans dicts small enough to compile and train fast."""
    return lambda configuration: _small_plans(plain_plans, configuration)


@pytest.fixture
def one_torch_thread():
    """Tiny networks gain nothing from a second thread, and on a shared machine each op's wait for it
    costs more than the op (40x per training step, measured); restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
