"""Stage selection and per-stage arguments: bad values raise (not assert) with name and value."""

import pytest
from dynamic_network_architectures.building_blocks.residual import BottleneckD
from torch import nn

from pu_nnunet.architectures import PUResidualEncoderUNet, resolve_pu_stages
from pu_nnunet.architectures.stage_selection import per_stage

UNET = dict(input_channels=1, n_stages=3, features_per_stage=[4, 8, 8], conv_op=nn.Conv2d, kernel_sizes=3,
            strides=[1, 2, 2], n_blocks_per_stage=1, num_classes=2, n_conv_per_stage_decoder=1,
            norm_op=nn.InstanceNorm2d)


def test_per_stage_broadcasts_scalars_and_keeps_lists():
    assert per_stage(3, 4) == [3, 3, 3, 3]
    assert per_stage((1, 2), 2) == [1, 2]
    assert per_stage([[3, 3], [1, 3]], 2) == [[3, 3], [1, 3]]


def test_per_stage_rejects_a_list_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"strides must have one entry per stage \(3\), got 2: \[1, 2\]"):
        per_stage([1, 2], 3, "strides")


@pytest.mark.parametrize("spec, n_stages, error, match", [
    ("lowres", 7, ValueError, "pu_stages must be one of .* got 'lowres'"),
    ([0, 7], 7, ValueError, r"pu_stages \[7\] out of range .* 7 stages"),
    ([-8], 7, ValueError, r"pu_stages \[-8\] out of range .* -7..-1 from the bottleneck"),
    (3, 7, TypeError, "pu_stages must be one of .* got int 3"),
    ({1, 2}, 7, TypeError, "got set"),
    ([1.0, 2], 7, TypeError, r"pu_stages must list int stage indices, got \[1.0\]"),
    ([True], 7, TypeError, r"got \[True\]"),
    ("all", 0, ValueError, "n_stages must be an int of at least 1, got 0"),
])
def test_resolve_pu_stages_rejects_bad_arguments(spec, n_stages, error, match):
    with pytest.raises(error, match=match):
        resolve_pu_stages(spec, n_stages)


def test_negative_indices_count_from_the_bottleneck():
    """Issue 28: "bottleneck only" is (-1,) whatever the number of stages."""
    assert resolve_pu_stages((-1,), 7) == (6,) and resolve_pu_stages([-1], 5) == (4,)
    assert resolve_pu_stages([0, -1, 6], 7) == (0, 6)
    assert resolve_pu_stages([-2, -1], 4) == resolve_pu_stages("deepest_half", 4)


@pytest.mark.parametrize("changes, match", [
    (dict(block=BottleneckD), "block must be BasicBlockD"),
    (dict(pu_stages=[3]), r"pu_stages \[3\] out of range"),
    (dict(features_per_stage=[4, 8]), r"features_per_stage must have one entry per stage \(3\), got 2"),
])
def test_unet_rejects_bad_arguments(changes, match):
    with pytest.raises(ValueError, match=match):
        PUResidualEncoderUNet(**{**UNET, **changes})
