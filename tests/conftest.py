"""Shared fixtures: nnU-Net plans as nnU-Net's planners write them, for in-process tests."""

import copy

import pytest

_COMMON_ARCH = {
    "conv_op": "torch.nn.modules.conv.Conv2d",
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}


def _plans(network_class_name: str, stage_kwargs: dict, plans_name: str) -> dict:
    """A 2d configuration in the layout of nnU-Net 2.8's plans files (5 stages, 64x64 patches)."""
    arch_kwargs = {"n_stages": 5, "features_per_stage": [8, 16, 32, 64, 64],
                   "kernel_sizes": [[3, 3]] * 5, "strides": [[1, 1]] + [[2, 2]] * 4,
                   **stage_kwargs, "n_conv_per_stage_decoder": [1, 1, 1, 1], **_COMMON_ARCH}
    return {
        "dataset_name": "Dataset990_Test", "plans_name": plans_name,
        "original_median_spacing_after_transp": [3.0, 0.8, 0.8], "original_median_shape_after_transp": [16, 64, 64],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {
            "data_identifier": f"{plans_name}_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": [64, 64], "median_image_size_in_voxels": [64.0, 64.0], "spacing": [0.8, 0.8],
            "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": {"network_class_name": network_class_name, "arch_kwargs": arch_kwargs,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"max": 200.0, "mean": 50.0, "median": 50.0, "min": -100.0,
                                                              "percentile_00_5": -90.0, "percentile_99_5": 190.0,
                                                              "std": 40.0}},
    }


@pytest.fixture
def plain_plans() -> dict:
    """Default nnUNetPlans: PlainConvUNet with two convs per encoder stage."""
    return copy.deepcopy(_plans("dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                {"n_conv_per_stage": [2, 2, 2, 2, 2]}, "nnUNetPlans"))


@pytest.fixture
def resenc_plans() -> dict:
    """A ResEnc preset (nnUNetResEncUNetMPlans layout): ResidualEncoderUNet, blocks 1,3,4,6,6."""
    return copy.deepcopy(_plans("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                                {"n_blocks_per_stage": [1, 3, 4, 6, 6]}, "nnUNetResEncUNetMPlans"))
