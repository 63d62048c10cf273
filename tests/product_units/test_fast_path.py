"""The fused PU path against the reference composition: values, gradients, ties, memory, dispatch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pu_nnunet.product_units import ProductUnitConv, fused_product_unit_conv, product_unit_conv
from pu_nnunet.product_units import clamp_rule
from pu_nnunet.product_units.autograd_memory import SavedTensorMeter
from pu_nnunet.product_units.functional import log_input

CONV_OPS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
EPS = 1e-7
# clips tight enough that the test inputs and weights below push values past both of them
IN_CLIP, OUT_CLIP = 2.0, 1.5

GEOMETRIES = {  # name: (stride, padding, dilation, groups)
    "plain": (1, 1, 1, 1),
    "stride2": (2, 1, 1, 1),
    "groups2": (1, 1, 1, 2),
    "dilation2": (1, 2, 2, 1),
    "no_padding": (1, 0, 1, 1),
}
# every geometry in 2D, a spread of them in 1D and 3D (each case runs in both dtypes, both positivities)
CASES = [(2, g) for g in GEOMETRIES] + [(1, "plain"), (1, "dilation2"), (3, "stride2"), (3, "groups2")]


def _inputs(ndim, dtype, seed=0, channels=4, size=7, batch=2):
    """Normal inputs plus far-out ones on both sides, so the input clip binds at +c and -c."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(batch, channels, *([size] * ndim), generator=g, dtype=dtype)
    flat = x.view(-1)
    flat[::7] = 1e4    # log(softplus(1e4)) = 9.2 > IN_CLIP
    flat[3::11] = -1e4  # log(softplus(-1e4) + eps) = log(1e-7) < -IN_CLIP
    return x


def _weight(ndim, dtype, groups, seed=1, channels=4):
    g = torch.Generator().manual_seed(seed)
    return 0.6 * torch.randn(channels, channels // groups, *([3] * ndim), generator=g, dtype=dtype)


def _kwargs(stride, padding, dilation, groups, positivity, clipped):
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups, positivity=positivity, eps=EPS,
                log_input_clip=IN_CLIP if clipped else None, log_output_clip=OUT_CLIP if clipped else None)


def _outputs_and_grads(fn, x, weight, theta, kwargs, grad_seed=2):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, theta)]
    y = fn(leaves[0], leaves[1], theta=leaves[2], **kwargs)
    grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=y.dtype).to(y.device)
    grads = torch.autograd.grad(y, leaves if kwargs["positivity"] == "threshold" else leaves[:2], grad_y)
    return (y, *grads)


def _clips_bind(x, weight, theta, kwargs):
    """The reference's log input exceeds the input clip (below it too, where the positivity lets it:
    the threshold's floor keeps log p >= log floor), and its aggregate exceeds the output clip."""
    log_p = log_input(x, kwargs["positivity"], EPS, None, theta)
    z = log_p.clamp(-IN_CLIP, IN_CLIP)
    aggregate = CONVS[weight.dim() - 2](z, weight, None, kwargs["stride"], kwargs["padding"], kwargs["dilation"],
                                        kwargs["groups"])
    below = (log_p < -IN_CLIP).any() or kwargs["positivity"] == "threshold"
    return (log_p > IN_CLIP).any() and below and (aggregate.abs() > OUT_CLIP).any()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("positivity", ["softplus", "threshold"])
@pytest.mark.parametrize("ndim, geometry, clipped", [(n, g, True) for n, g in CASES] + [(2, "plain", False),
                                                                                      (3, "plain", False)])
def test_fused_equals_reference_outputs_and_gradients(dtype, ndim, geometry, positivity, clipped):
    stride, padding, dilation, groups = GEOMETRIES[geometry]
    kwargs = _kwargs(stride, padding, dilation, groups, positivity, clipped)
    x, weight = _inputs(ndim, dtype), _weight(ndim, dtype, groups)
    if not clipped:  # without clips, far-out inputs overflow exp: keep them moderate
        x = x.clamp(-8, 8)
    theta = torch.tensor([0.3], dtype=dtype)
    if clipped:
        assert _clips_bind(x, weight, theta, kwargs), "test data must reach into the clipped regions"
    expected = _outputs_and_grads(product_unit_conv, x, weight, theta, kwargs)
    actual = _outputs_and_grads(fused_product_unit_conv, x, weight, theta, kwargs)
    for name, a, e in zip(("y", "grad_x", "grad_weight", "grad_theta"), actual, expected):
        torch.testing.assert_close(a, e, msg=lambda m: f"{name}: {m}")
        assert torch.isfinite(a).all(), name


@pytest.mark.parametrize("positivity", ["softplus", "threshold"])
def test_fused_is_bitwise_the_reference_on_cpu_float64(positivity):
    # the same torch ops on the same values in the same order: not merely close, identical
    kwargs = _kwargs(2, 1, 1, 2, positivity, clipped=True)
    x, weight, theta = _inputs(2, torch.float64), _weight(2, torch.float64, 2), torch.tensor([0.3], dtype=torch.float64)
    for a, e in zip(_outputs_and_grads(fused_product_unit_conv, x, weight, theta, kwargs),
                    _outputs_and_grads(product_unit_conv, x, weight, theta, kwargs)):
        assert torch.equal(a, e)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("positivity", ["softplus", "threshold"])
def test_gradients_at_exact_ties_follow_torchs_rules(dtype, positivity):
    """Inputs sitting exactly on the input clip, aggregates exactly on the output clip, and (threshold)
    inputs exactly on the floor: where clamp's and maximum's tie rules decide the gradient."""
    x_tie = torch.tensor(2.0, dtype=dtype)
    log_p_tie = log_input(x_tie.view(1), positivity, EPS, None, torch.zeros(1, dtype=dtype)).item()
    in_clip = abs(log_p_tie)  # x_tie's log input lies exactly on the bound
    weight = torch.full((1, 1, 1, 1), 2.0, dtype=dtype)  # 1x1 conv: aggregate = 2 * z exactly
    x = torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(3), dtype=dtype).abs() + 0.8
    x[0, 0, ::2, ::2] = x_tie
    theta = torch.zeros(1, dtype=dtype)
    if positivity == "threshold":
        x[0, 0, 1, ::2] = F.softplus(theta) + EPS  # exactly on the floor: maximum splits the gradient
    kwargs = dict(positivity=positivity, eps=EPS, log_input_clip=in_clip, log_output_clip=2 * in_clip)
    z = log_input(x, positivity, EPS, in_clip, theta)
    aggregate = F.conv2d(z, weight)
    assert (z == in_clip).any() and (aggregate == 2 * in_clip).any(), "the ties must be exact"
    expected = _outputs_and_grads(product_unit_conv, x, weight, theta, kwargs)
    actual = _outputs_and_grads(fused_product_unit_conv, x, weight, theta, kwargs)
    for a, e in zip(actual, expected):
        assert torch.equal(a, e)


@pytest.mark.parametrize("ndim, geometry", [(2, "stride2"), (2, "groups2"), (3, "dilation2"), (1, "plain")])
@pytest.mark.parametrize("positivity", ["softplus", "threshold"])
def test_gradcheck_float64_of_the_fused_path(ndim, geometry, positivity):
    stride, padding, dilation, groups = GEOMETRIES[geometry]
    # the clips bind on the far-out inputs, which sit far from every kink
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, positivity=positivity, eps=EPS,
                  log_input_clip=IN_CLIP, log_output_clip=4.0)
    x = _inputs(ndim, torch.float64, channels=2, size={1: 6, 2: 4, 3: 3}[ndim], batch=1)
    if positivity == "threshold":  # keep inputs off the floor's kink (softplus(0.3) ~ 0.85)
        x = torch.where((x - 0.85).abs() < 0.1, x + 0.3, x)
    x.requires_grad_()
    weight = _weight(ndim, torch.float64, groups, channels=2).requires_grad_()
    theta = torch.tensor([0.3], dtype=torch.float64, requires_grad=positivity == "threshold")

    def fn(inp, w, th):
        return fused_product_unit_conv(inp, w, theta=th, **kwargs)

    assert torch.autograd.gradcheck(fn, (x, weight, theta))


@pytest.mark.parametrize("needs", ["x", "weight"])
def test_backward_with_only_one_input_requiring_grad(needs):
    kwargs = _kwargs(1, 1, 1, 1, "softplus", clipped=True)
    x, weight = _inputs(2, torch.float64), _weight(2, torch.float64, 1)
    grads = []
    for fn in (product_unit_conv, fused_product_unit_conv):
        leaf = (x if needs == "x" else weight).clone().requires_grad_()
        args = (leaf, weight) if needs == "x" else (x, leaf)
        grads.append(torch.autograd.grad(fn(*args, **kwargs).sum(), leaf)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


def _activation_bytes(fn, x, weight, **kwargs):
    with SavedTensorMeter(exclude=[x, weight]) as meter:
        y = fn(x, weight, **kwargs)
    return meter.saved_bytes, meter.saved_tensors, y


def test_fused_saves_x_y_and_a_bool_mask_where_the_reference_saves_every_intermediate():
    x = _inputs(2, torch.float32, channels=8, size=16).requires_grad_()
    weight = _weight(2, torch.float32, 1, channels=8).requires_grad_()
    kwargs = _kwargs(1, 1, 1, 1, "softplus", clipped=True)
    fused_bytes, fused_count, y = _activation_bytes(fused_product_unit_conv, x, weight, **kwargs)
    reference_bytes, _, _ = _activation_bytes(product_unit_conv, x, weight, **kwargs)
    # beyond x (the caller's, counted for neither): the output and its clip mask, 1 byte an element
    assert fused_count == 2
    assert fused_bytes == y.numel() * (y.element_size() + 1)
    # the reference: pos(x), log p, the clipped log, the aggregate and the output, all float
    assert reference_bytes >= 5 * y.numel() * y.element_size()


def test_a_16_bit_input_is_saved_in_16_bits():
    # under autocast the PU's input arrives in 16 bits; the reference keeps a float32 copy of it
    x = _inputs(2, torch.float32, channels=8, size=16).to(torch.bfloat16).requires_grad_()
    weight = _weight(2, torch.float32, 1, channels=8).requires_grad_()
    kwargs = _kwargs(1, 1, 1, 1, "softplus", clipped=True)
    with SavedTensorMeter(exclude=[weight]) as meter:
        y = fused_product_unit_conv(x, weight, **kwargs)
    assert y.dtype == torch.float32
    assert meter.saved_bytes == x.numel() * 2 + y.numel() * (4 + 1)
    (grad_x,) = torch.autograd.grad(y.sum(), x)
    assert grad_x.dtype == torch.bfloat16


def test_no_grad_inference_saves_nothing_and_equals_the_reference():
    x, weight = _inputs(3, torch.float32), _weight(3, torch.float32, 1).requires_grad_()
    kwargs = _kwargs(1, 1, 1, 1, "softplus", clipped=True)
    with torch.no_grad(), SavedTensorMeter() as meter:
        y = fused_product_unit_conv(x, weight, **kwargs)
    assert meter.saved_tensors == 0 and y.grad_fn is None
    torch.testing.assert_close(y, product_unit_conv(x, weight, **kwargs).detach(), rtol=0, atol=0)


def test_the_layer_uses_the_fused_path_by_default_and_keeps_the_reference_selectable():
    torch.manual_seed(4)
    layer = ProductUnitConv(nn.Conv2d, 4, 4, 3)
    reference = ProductUnitConv(nn.Conv2d, 4, 4, 3, implementation="reference")
    reference.load_state_dict(layer.state_dict())
    assert layer.implementation == "fused"
    x = _inputs(2, torch.float32).requires_grad_()
    y_fused, y_reference = layer(x), reference(x)
    assert "FusedProductUnitConv" in y_fused.grad_fn.name()
    assert "FusedProductUnitConv" not in y_reference.grad_fn.name()
    torch.testing.assert_close(y_fused, y_reference)
    y_fused.sum().backward()
    y_reference.sum().backward()
    torch.testing.assert_close(layer.weight.grad, reference.weight.grad)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16])
def test_layer_under_cpu_autocast_equals_the_reference(input_dtype):
    torch.manual_seed(5)
    fused = ProductUnitConv(nn.Conv2d, 4, 4, 3, positivity="threshold")
    reference = ProductUnitConv(nn.Conv2d, 4, 4, 3, positivity="threshold", implementation="reference")
    reference.load_state_dict(fused.state_dict())
    x = _inputs(2, torch.float32).to(input_dtype)
    grads = []
    for layer in (fused, reference):
        leaf = x.clone().requires_grad_()
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            y = layer(leaf)
            y.float().sum().backward()  # backward inside autocast, as some training loops do
        assert y.dtype == input_dtype
        grads.append((y, leaf.grad, layer.weight.grad, layer.theta.grad))
    for a, e in zip(*grads):
        torch.testing.assert_close(a, e)


def test_invalid_implementation_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="implementation"):
        ProductUnitConv(nn.Conv2d, 4, 4, 3, implementation="compiled")


def test_clamp_rule_helpers_equal_autograds_clamp_gradient():
    t = torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, float("nan")], requires_grad=True)
    (autograd_grad,) = torch.autograd.grad(t.clamp(-2.0, 2.0), t, torch.ones(8))
    assert torch.equal(clamp_rule.clamp_blocked(t.detach(), 2.0), autograd_grad == 0)
    by_hand = clamp_rule.clamp_backward_(torch.ones(8), t.detach(), 2.0)
    assert torch.equal(by_hand[:-1], autograd_grad[:-1])  # NaN: see clamp_backward_'s docstring


@pytest.mark.parametrize("passes_at_bounds", [True, False])
def test_clamp_rule_helpers_follow_either_rule_at_the_bounds(monkeypatch, passes_at_bounds):
    monkeypatch.setattr(clamp_rule, "CLAMP_PASSES_GRADIENT_AT_BOUNDS", passes_at_bounds)
    t = torch.tensor([-3.0, -2.0, 0.5, 2.0, 3.0, float("nan")])
    at_bound = torch.tensor([False, True, False, True, False, False])
    expected_blocked = torch.tensor([True, False, False, False, True, True]) | (at_bound & (not passes_at_bounds))
    assert torch.equal(clamp_rule.clamp_blocked(t, 2.0), expected_blocked)
    by_hand = clamp_rule.clamp_backward_(torch.ones(6), t, 2.0)
    assert torch.equal(by_hand[:-1], (~expected_blocked).float()[:-1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("positivity", ["softplus", "threshold"])
def test_fused_equals_reference_on_cuda_and_under_fp16_autocast(positivity):
    kwargs = _kwargs(2, 1, 1, 2, positivity, clipped=True)
    x, weight = _inputs(2, torch.float32).cuda(), _weight(2, torch.float32, 2).cuda()
    theta = torch.tensor([0.3], device="cuda")
    for a, e in zip(_outputs_and_grads(fused_product_unit_conv, x, weight, theta, kwargs),
                    _outputs_and_grads(product_unit_conv, x, weight, theta, kwargs)):
        torch.testing.assert_close(a, e)
    layer = ProductUnitConv(nn.Conv2d, 4, 4, 3, positivity=positivity).cuda()
    leaf = x.half().requires_grad_()
    with torch.autocast(device_type="cuda", dtype=torch.float16):
        y = layer(leaf)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    y.float().sum().backward()
    assert torch.isfinite(leaf.grad).all() and torch.isfinite(layer.weight.grad).all()
