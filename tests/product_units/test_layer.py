"""The stable product-unit layer: values against a naive product, gradients, stability, errors."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pu_nnunet.product_units import LOG_OUTPUT_CLIP, POSITIVITY_EPS, ProductUnitConv, product_unit_conv

CONV_OPS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def naive_product_unit(p: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """prod over the receptive field of p ** w, padding with ones (the multiplicative identity)."""
    ndim = weight.dim() - 2
    padded = F.pad(p, [padding] * (2 * ndim), value=1.0)
    kernel = weight.shape[2:]
    out_size = [(s + 2 * padding - k) // stride + 1 for s, k in zip(p.shape[2:], kernel)]
    y = torch.ones(p.shape[0], weight.shape[0], *out_size, dtype=p.dtype)
    for c in range(p.shape[1]):
        for offset in itertools.product(*[range(k) for k in kernel]):
            window = padded[(slice(None), c) + tuple(
                slice(o, o + stride * (n - 1) + 1, stride) for o, n in zip(offset, out_size))]
            w = weight[(slice(None), c) + offset].view(1, -1, *([1] * ndim))
            y = y * window.unsqueeze(1) ** w
    return y


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
def test_threshold_pu_equals_naive_product_for_inputs_above_the_floor(ndim, stride, padding):
    torch.manual_seed(0)
    layer = ProductUnitConv(CONV_OPS[ndim], 3, 4, 3, stride=stride, padding=padding, positivity="threshold",
                            log_input_clip=None, log_output_clip=None).double()
    # inputs in [1, 3] sit above the floor softplus(0) + eps ~ 0.693, where pos(x) = x
    x = 1 + 2 * torch.rand(2, 3, *([7] * ndim), dtype=torch.float64)
    torch.testing.assert_close(layer(x), naive_product_unit(x, layer.weight.detach(), stride, padding))


@pytest.mark.parametrize("ndim", [2, 3])
def test_softplus_pu_equals_naive_product_of_softplus(ndim):
    torch.manual_seed(1)
    layer = ProductUnitConv(CONV_OPS[ndim], 2, 3, 3, log_input_clip=None, log_output_clip=None).double()
    x = torch.randn(2, 2, *([6] * ndim), dtype=torch.float64)
    expected = naive_product_unit(F.softplus(x) + POSITIVITY_EPS, layer.weight.detach(), 1, 1)
    torch.testing.assert_close(layer(x), expected)


def test_clips_bound_the_log_domain():
    layer = ProductUnitConv(nn.Conv2d, 1, 1, 1, padding=0, log_input_clip=2.0, log_output_clip=3.0).double()
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.tensor([[[[1e4, 1.0], [-1e4, 0.0]]]], dtype=torch.float64)
    y = layer(x)
    # log(softplus(1e4)) = 9.2 -> clipped to 2; exp(2) < exp(3) so the output clip is inactive
    assert y[0, 0, 0, 0].item() == pytest.approx(torch.e ** 2)
    assert y[0, 0, 0, 1].item() == pytest.approx(F.softplus(torch.tensor(1.0, dtype=torch.float64)).item())
    assert y[0, 0, 1, 0].item() == pytest.approx(torch.e ** -2)  # softplus(-1e4) = 0 -> log eps -> -2
    with torch.no_grad():
        layer.weight.fill_(5.0)  # aggregate 5 * 2 = 10 > 3
    assert layer(x)[0, 0, 0, 0].item() == pytest.approx(torch.e ** 3)


def test_padding_is_the_multiplicative_identity():
    layer = ProductUnitConv(nn.Conv2d, 1, 1, 3, positivity="threshold", log_input_clip=None,
                            log_output_clip=None).double()
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.full((1, 1, 3, 3), 2.0, dtype=torch.float64)
    y = layer(x)
    # a corner sees 4 inputs of 2 and 5 padded ones: 2**4; the centre sees 9 inputs: 2**9
    assert y[0, 0, 0, 0].item() == pytest.approx(2.0 ** 4)
    assert y[0, 0, 1, 1].item() == pytest.approx(2.0 ** 9)


@pytest.mark.parametrize("positivity", ["softplus", "threshold"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_gradcheck_float64(positivity, ndim):
    torch.manual_seed(2)
    layer = ProductUnitConv(CONV_OPS[ndim], 2, 2, 3, stride=(2 if ndim == 2 else 1), positivity=positivity).double()
    # keep inputs away from the threshold's kink (floor ~0.693) and from the clip bounds
    x = (1.0 + torch.rand(1, 2, *([5] * ndim), dtype=torch.float64)).requires_grad_()
    if positivity == "softplus":
        x = torch.randn(1, 2, *([5] * ndim), dtype=torch.float64).requires_grad_()

    def fn(inp, weight, *theta):
        return product_unit_conv(inp, weight, stride=layer.stride, padding=layer.padding, positivity=positivity,
                                 eps=layer.eps, log_input_clip=layer.log_input_clip,
                                 log_output_clip=layer.log_output_clip, theta=theta[0] if theta else None)

    params = [layer.weight.detach().clone().requires_grad_()]
    if positivity == "threshold":
        params.append(torch.zeros(1, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(fn, (x, *params))


def test_threshold_gets_gradient_from_inputs_below_the_floor():
    layer = ProductUnitConv(nn.Conv2d, 1, 1, 1, padding=0, positivity="threshold")
    layer(torch.full((1, 1, 2, 2), -5.0)).sum().backward()
    assert layer.theta.grad is not None and layer.theta.grad.abs().item() > 0


def _extreme_inputs(dtype=torch.float32):
    values = torch.linspace(-1e4, 1e4, 2 * 4 * 8 * 8, dtype=dtype).view(2, 4, 8, 8)
    values[:, :, ::3, ::3] = 0.0  # exact zeros
    return values[torch.randperm(2)]


@pytest.mark.parametrize("positivity", ["softplus", "threshold"])
def test_finite_outputs_and_gradients_for_extreme_inputs_float32(positivity):
    torch.manual_seed(3)
    layer = ProductUnitConv(nn.Conv2d, 4, 4, 3, positivity=positivity)
    x = _extreme_inputs().requires_grad_()
    y = layer(x)
    assert torch.isfinite(y).all() and y.max().item() <= torch.exp(torch.tensor(LOG_OUTPUT_CLIP)).item() * 1.0001
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()


def test_without_clipping_extreme_inputs_overflow():
    # why the clips exist: the unclipped PU turns 1e4 inputs into inf
    torch.manual_seed(3)
    layer = ProductUnitConv(nn.Conv2d, 4, 4, 3, log_input_clip=None, log_output_clip=None)
    with torch.no_grad():
        layer.weight.abs_().mul_(50)
    assert not torch.isfinite(layer(_extreme_inputs())).all()


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_bf16_autocast_on_cpu_stays_finite_and_keeps_the_input_dtype(input_dtype):
    torch.manual_seed(4)
    layer = ProductUnitConv(nn.Conv2d, 4, 4, 3)
    x = _extreme_inputs().to(input_dtype).requires_grad_()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == input_dtype
    assert torch.isfinite(y.float()).all()
    y.float().sum().backward()
    assert torch.isfinite(x.grad.float()).all() and torch.isfinite(layer.weight.grad).all()
    assert layer.weight.grad.dtype == torch.float32


def test_autocast_computes_in_float32():
    # under autocast a plain conv would run in bf16; the PU must match its float32 result closely
    torch.manual_seed(5)
    layer = ProductUnitConv(nn.Conv2d, 8, 8, 3)
    x = torch.randn(2, 8, 10, 10)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y_autocast = layer(x)
    torch.testing.assert_close(y_autocast, layer(x), rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU for fp16 autocast")
def test_fp16_autocast_on_cuda_is_finite():
    torch.manual_seed(6)
    layer = ProductUnitConv(nn.Conv2d, 4, 4, 3).cuda()
    x = _extreme_inputs().cuda().half().requires_grad_()
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        y = layer(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    y.float().sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()


def test_exponents_start_kaiming_uniform_a5_and_theta_at_zero():
    layer = ProductUnitConv(nn.Conv3d, 16, 8, 3, positivity="threshold")
    fan_in = 16 * 27
    bound = (6 / ((1 + 5 ** 2) * fan_in)) ** 0.5
    assert layer.weight.abs().max().item() <= bound
    assert layer.weight.abs().max().item() > 0.9 * bound
    assert layer.theta.item() == 0.0
    assert sum(p.numel() for p in layer.parameters()) == 8 * 16 * 27 + 1


@pytest.mark.parametrize("kwargs, name", [
    (dict(conv_op=nn.Linear), "conv_op"),
    (dict(positivity="relu"), "positivity"),
    (dict(log_input_clip=-1.0), "log_input_clip"),
    (dict(log_output_clip=0), "log_output_clip"),
    (dict(eps=0.0), "eps"),
    (dict(groups=3), "groups"),
    (dict(kernel_size=(3, 3, 3)), "kernel_size"),
    (dict(stride=0), "stride"),
    (dict(in_channels=0), "in_channels"),
])
def test_invalid_options_raise_value_error_naming_the_argument(kwargs, name):
    args = dict(conv_op=nn.Conv2d, in_channels=4, out_channels=4, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=name):
        ProductUnitConv(**args)
