"""PUBasicBlock and StackedPUResidualBlocks: BasicBlockD's full signature, and argument checks
that raise (and so hold under ``python -O``) naming the argument and its value."""

import pytest
import torch
from dynamic_network_architectures.building_blocks.regularization import DropPath, SqueezeExcite
from torch import nn

from pu_nnunet.architectures import PUBasicBlock, StackedPUResidualBlocks

BLOCK = dict(conv_op=nn.Conv2d, input_channels=4, output_channels=8, kernel_size=3, stride=2,
             norm_op=nn.InstanceNorm2d, norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU)


def test_stochastic_depth_and_squeeze_excitation_as_basic_block_d():
    torch.manual_seed(0)
    plain = PUBasicBlock(**BLOCK)
    block = PUBasicBlock(**BLOCK, stochastic_depth_p=0.5, squeeze_excitation=True,
                         squeeze_excitation_reduction_ratio=0.25)
    assert isinstance(block.drop_path, DropPath) and isinstance(block.squeeze_excitation, SqueezeExcite)
    # BasicBlockD's squeeze-excitation: 8 channels * 0.25 rounded up to the divisor 8 -> 8 hidden
    se_params = sum(p.numel() for p in block.squeeze_excitation.parameters())
    assert se_params == 8 * 8 + 8 + 8 * 8 + 8
    assert sum(p.numel() for p in block.parameters()) == sum(p.numel() for p in plain.parameters()) + se_params
    # both off: the same module as before (no parameters, no effect), so existing checkpoints load
    assert isinstance(plain.drop_path, nn.Identity) and isinstance(plain.squeeze_excitation, nn.Identity)

    block.train()
    x = torch.rand(16, 4, 8, 8) + 0.1
    # stochastic depth drops the whole residual branch of some samples: those are nonlin(skip(x))
    dropped = block.nonlin2(block.skip(x))
    out = block(x)
    same_as_skip = [torch.allclose(out[i], dropped[i]) for i in range(len(x))]
    assert 0 < sum(same_as_skip) < len(x)
    block.eval()  # and none at inference
    assert not any(torch.allclose(a, b) for a, b in zip(block(x), dropped))


@pytest.mark.parametrize("changes, error, match", [
    (dict(norm_op=None), ValueError, "norm_op must be a normalisation class"),
    (dict(input_channels=0), ValueError, "input_channels must be at least 1, got 0"),
    (dict(output_channels=2.0), TypeError, "output_channels must be an int, got float 2.0"),
    (dict(stochastic_depth_p=1.0), ValueError, r"stochastic_depth_p must be in \[0, 1\), got 1.0"),
    (dict(stochastic_depth_p=-0.1), ValueError, "stochastic_depth_p .* got -0.1"),
    (dict(squeeze_excitation=True, squeeze_excitation_reduction_ratio=0), ValueError,
     r"squeeze_excitation_reduction_ratio must be in \(0, 1\], got 0"),
    (dict(pu_positivity="relu"), ValueError, "relu"),
])
def test_block_rejects_bad_arguments(changes, error, match):
    with pytest.raises(error, match=match):
        PUBasicBlock(**{**BLOCK, **changes})


def test_unknown_options_are_refused_by_name():
    with pytest.raises(TypeError, match="stochastic_depth"):
        PUBasicBlock(**BLOCK, stochastic_depth=0.1)


@pytest.mark.parametrize("n_blocks", [0, -1, 1.5, True])
def test_stack_rejects_bad_block_counts(n_blocks):
    with pytest.raises(ValueError, match=f"n_blocks must be an int of at least 1, got {n_blocks!r}"):
        StackedPUResidualBlocks(n_blocks, nn.Conv2d, 4, 8, 3, 2, norm_op=nn.InstanceNorm2d)


def test_stack_passes_basic_block_d_options_to_every_block():
    stack = StackedPUResidualBlocks(2, nn.Conv2d, 4, 8, 3, 2, norm_op=nn.InstanceNorm2d, squeeze_excitation=True)
    assert all(isinstance(block.squeeze_excitation, SqueezeExcite) for block in stack.blocks)
