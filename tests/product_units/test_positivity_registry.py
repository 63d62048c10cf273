"""The positivity registry (pu_nnunet/product_units/positivity.py): one place names every mapping.

Parametrised over the registry, so a mapping added there is tested here with no new test: it maps
every real input above zero, the fused path equals the reference (values and gradients, the
threshold's too where it learns one), and the layer gets a threshold exactly where the mapping
learns one. A mapping registered from outside the package (ELU + 1, as a user would add it) works
through the layer, both paths and `pu-nnunet plans`."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pu_nnunet.product_units import (PositivityMapping, ProductUnitConv, fused_product_unit_conv, positivity_choices,
                                     product_unit_conv, register_positivity)
from pu_nnunet.product_units.positivity import POSITIVITY_MAPPINGS, positivity_mapping

EPS = 1e-7


def _fused_and_reference(name, ndim=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(2, 4, *([6] * ndim), generator=g, dtype=dtype)
    weight = 0.5 * torch.randn(4, 4, *([3] * ndim), generator=g, dtype=dtype)
    theta = torch.tensor([0.2], dtype=dtype)
    grad_y = None
    results = []
    for fn in (fused_product_unit_conv, product_unit_conv):
        leaves = [t.detach().clone().requires_grad_() for t in (x, weight, theta)]
        learns = positivity_mapping(name).learns_threshold
        y = fn(leaves[0], leaves[1], padding=1, positivity=name, eps=EPS, log_input_clip=6.0, log_output_clip=10.0,
               theta=leaves[2] if learns else None)
        grad_y = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype) if grad_y is None else grad_y
        grads = torch.autograd.grad(y, leaves if learns else leaves[:2], grad_y)
        results.append((y, *grads))
    return results


@pytest.mark.parametrize("name", positivity_choices())
def test_every_registered_mapping_is_positive_and_its_fused_path_equals_the_reference(name):
    mapping = positivity_mapping(name)
    x = torch.linspace(-1e4, 1e4, 20001, dtype=torch.float64)
    theta = torch.tensor([0.0], dtype=torch.float64) if mapping.learns_threshold else None
    assert (mapping.forward(x, EPS, theta) > 0).all()
    for ndim in (2, 3):
        fused, reference = _fused_and_reference(name, ndim)
        for a, b in zip(fused, reference):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    layer = ProductUnitConv(nn.Conv3d, 2, 2, 3, positivity=name)
    assert (layer.theta is not None) == mapping.learns_threshold
    assert name in repr(layer)


@pytest.fixture
def elu_plus_one():
    """ELU + 1 registered as a user would, removed again afterwards."""

    @register_positivity
    class EluPlusOne(PositivityMapping):
        name = "user_elu_plus_one"

        def forward(self, x, eps, theta):
            return F.elu(x) + (1 + eps)

    yield "user_elu_plus_one"
    POSITIVITY_MAPPINGS.pop("user_elu_plus_one")


def test_a_mapping_registered_outside_the_package_trains_through_both_paths(elu_plus_one):
    """No hand-written backward: the fused path differentiates the mapping with autograd."""
    fused, reference = _fused_and_reference(elu_plus_one)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    layer = ProductUnitConv(nn.Conv2d, 3, 3, 3, positivity=elu_plus_one)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    layer(x).sum().backward()
    assert layer.theta is None and torch.isfinite(x.grad).all() and torch.isfinite(layer.weight.grad).all()
    from pu_nnunet.cli import COMMANDS, build_parser

    args = build_parser(COMMANDS, only="plans").parse_args(["plans", "-d", "1", "-o", "P",
                                                            "--pu-positivity", elu_plus_one])
    assert args.pu_positivity == elu_plus_one


def test_an_unknown_mapping_is_refused_naming_the_registered_ones():
    with pytest.raises(ValueError, match=r"positivity must be one of \('softplus', 'threshold'.*got 'elu'"):
        ProductUnitConv(nn.Conv2d, 1, 1, 3, positivity="elu")
    with pytest.raises(ValueError, match="registered already"):
        register_positivity(type("Again", (PositivityMapping,), {"name": "softplus"}))
