"""The PU residual-encoder U-Net against nnU-Net's ResidualEncoderUNet, its matched baseline."""

import pytest
import torch
from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from torch import nn

from pu_nnunet.architectures import PUBasicBlock, PUResidualEncoderUNet, resolve_pu_stages
from pu_nnunet.product_units import ProductUnitConv


def unet_kwargs(ndim=2, conv_bias=True):
    conv_op, norm_op = {2: (nn.Conv2d, nn.InstanceNorm2d), 3: (nn.Conv3d, nn.InstanceNorm3d)}[ndim]
    return dict(input_channels=1, n_stages=4, features_per_stage=[4, 8, 16, 16], conv_op=conv_op, kernel_sizes=3,
                strides=[1, 2, 2, 2], n_blocks_per_stage=[1, 2, 2, 2], num_classes=3, n_conv_per_stage_decoder=1,
                conv_bias=conv_bias, norm_op=norm_op, norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=True)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("ndim", [2, 3])
def test_no_pu_stages_is_exactly_the_residual_encoder_unet(ndim):
    torch.manual_seed(0)
    baseline = ResidualEncoderUNet(**unet_kwargs(ndim))
    baseline.apply(baseline.initialize)
    pu_free = PUResidualEncoderUNet(**unet_kwargs(ndim), pu_stages=())
    assert n_params(pu_free) == n_params(baseline)
    pu_free.load_state_dict(baseline.state_dict(), strict=True)
    for p in baseline.parameters():  # non-zero residual branches, so the comparison means something
        p.data.add_(0.1 * torch.randn_like(p))
    pu_free.load_state_dict(baseline.state_dict(), strict=True)
    x = torch.randn(2, 1, *([16] * ndim))
    for a, b in zip(baseline(x), pu_free(x)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("conv_bias", [True, False])
@pytest.mark.parametrize("positivity, extra_per_pu", [("softplus", 0), ("threshold", 1)])
def test_parameter_count_is_baseline_plus_pu_scalars(conv_bias, positivity, extra_per_pu):
    kwargs = unet_kwargs(conv_bias=conv_bias)
    baseline = PUResidualEncoderUNet(**kwargs, pu_stages="none")
    pu_net = PUResidualEncoderUNet(**kwargs, pu_stages=(2, 3), pu_positivity=positivity)
    n_pu_layers = sum(isinstance(m, ProductUnitConv) for m in pu_net.modules())
    assert n_pu_layers == 4  # 2 blocks in each of stages 2 and 3
    # the PU has no bias: the conv bias it replaces sat right before a norm, which cancels it
    replaced_biases = sum(m.out_channels for m in pu_net.modules() if isinstance(m, ProductUnitConv)) * conv_bias
    assert n_params(pu_net) == n_params(baseline) - replaced_biases + extra_per_pu * n_pu_layers


@pytest.mark.parametrize("ndim", [2, 3])
def test_forward_shapes_deep_supervision_and_backward(ndim):
    torch.manual_seed(1)
    net = PUResidualEncoderUNet(**unet_kwargs(ndim))
    net.apply(net.initialize)
    x = torch.randn(2, 1, *([16] * ndim))
    outputs = net(x)
    assert [tuple(o.shape[2:]) for o in outputs] == [(16,) * ndim, (8,) * ndim, (4,) * ndim]
    sum(o.mean() for o in outputs).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.decoder.deep_supervision = False
    single = net(x)
    assert torch.is_tensor(single) and single.shape == (2, 3, *([16] * ndim))


def test_default_places_pu_blocks_in_the_deepest_half():
    net = PUResidualEncoderUNet(**unet_kwargs())
    assert net.pu_stages == (2, 3)
    kinds = [type(stage.blocks[0]).__name__ for stage in net.encoder.stages]
    assert kinds == ["BasicBlockD", "BasicBlockD", "PUBasicBlock", "PUBasicBlock"]


def test_fresh_pu_network_behaves_like_its_plain_twin():
    # residual branches start at zero (init_last_bn_before_add_to_0 and its PU counterpart)
    torch.manual_seed(2)
    baseline = PUResidualEncoderUNet(**unet_kwargs(), pu_stages="none")
    baseline.apply(baseline.initialize)
    pu_net = PUResidualEncoderUNet(**unet_kwargs())
    pu_net.apply(pu_net.initialize)
    shared = {k: v for k, v in baseline.state_dict().items() if k in pu_net.state_dict()
              and v.shape == pu_net.state_dict()[k].shape}
    pu_net.load_state_dict(shared, strict=False)
    for block in pu_net.modules():
        if isinstance(block, PUBasicBlock):
            assert block.norm2.weight.abs().sum() == 0
    x = torch.randn(2, 1, 16, 16)
    for a, b in zip(baseline(x), pu_net(x)):
        torch.testing.assert_close(a, b)


def test_feature_map_size_accounting_matches_the_baseline():
    baseline = PUResidualEncoderUNet(**unet_kwargs(), pu_stages="none")
    pu_net = PUResidualEncoderUNet(**unet_kwargs(), pu_stages="all")
    assert pu_net.compute_conv_feature_map_size((32, 32)) == baseline.compute_conv_feature_map_size((32, 32))


def test_nonlinearity_after_the_add_is_optional():
    with_nonlin = PUResidualEncoderUNet(**unet_kwargs(), pu_stages=(3,))
    without = PUResidualEncoderUNet(**unet_kwargs(), pu_stages=(3,), pu_nonlin_after_add=False)
    assert isinstance(with_nonlin.encoder.stages[3].blocks[0].nonlin2, nn.LeakyReLU)
    assert isinstance(without.encoder.stages[3].blocks[0].nonlin2, nn.Identity)


@pytest.mark.parametrize("spec, expected", [
    ("deepest_half", (4, 5, 6)), ("shallowest_half", (0, 1, 2, 3)), ("all", tuple(range(7))), ("none", ()),
    ([6, 5, 5], (5, 6)),
])
def test_resolve_pu_stages(spec, expected):
    assert resolve_pu_stages(spec, 7) == expected


@pytest.mark.parametrize("spec, match", [("lowres", "pu_stages"), ([0, 7], r"\[7\]")])
def test_resolve_pu_stages_rejects_bad_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_pu_stages(spec, 7)
