"""The positivity mappings of the product unit: pos(x) > 0 for any real x, before the log.

One registry (:data:`POSITIVITY_MAPPINGS`) names every mapping; the layer, both PU paths, the
trainers' ``pu_positivity``, ``pu-nnunet plans --pu-positivity`` and the model records read it.
A new mapping is one class with ``@register_positivity``: a ``name`` and a ``forward``. The fused
path differentiates that ``forward`` with autograd in its backward (recomputed from the saved
input, so the memory stays a plain conv's); a mapping may give a hand-written ``backward`` instead,
as the two below do to equal the reference bit for bit.
"""

from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn.functional as F

# F.softplus's defaults: beta = 1, and above x * beta = 20 it returns x (gradient 1); a
# hand-written gradient must apply the same rule to equal autograd's.
SOFTPLUS_BETA = 1.0
SOFTPLUS_THRESHOLD = 20.0


class PositivityMapping:
    """pos(x) > 0. Subclasses set ``name`` and implement ``forward``; ``learns_threshold`` gives
    the layer PURe's trainable threshold theta (one per PU layer), passed to both methods."""

    name: ClassVar[str]
    learns_threshold: ClassVar[bool] = False
    # elementwise ops pos(x) costs per input element, for the FLOP count (benchmarks/bench_network.py)
    elementwise_ops: ClassVar[int] = 2

    def forward(self, x: torch.Tensor, eps: float, theta: Optional[torch.Tensor]) -> torch.Tensor:
        """pos(x) as a new tensor, differentiable by autograd (the reference path)."""
        raise NotImplementedError

    def forward_no_grad(self, x: torch.Tensor, eps: float, theta: Optional[torch.Tensor]) -> torch.Tensor:
        """pos(x) where no graph is recorded (the fused path); may save a buffer by working in place
        on its own result."""
        return self.forward(x, eps, theta)

    def backward(self, grad_p: torch.Tensor, x: torch.Tensor, eps: float, theta: Optional[torch.Tensor],
                 need_theta: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(dL/dx, dL/dtheta or None) from dL/dpos(x): by default autograd through ``forward``."""
        with torch.enable_grad():
            x_leaf = x.detach().requires_grad_(True)
            theta_leaf = None if theta is None else theta.detach().requires_grad_(need_theta)
            inputs = [x_leaf] + ([theta_leaf] if need_theta and theta_leaf is not None else [])
            grads = torch.autograd.grad(self.forward(x_leaf, eps, theta_leaf), inputs, grad_p)
        return grads[0], (grads[1] if len(grads) > 1 else None)


POSITIVITY_MAPPINGS: dict[str, PositivityMapping] = {}


def register_positivity(cls: type[PositivityMapping]) -> type[PositivityMapping]:
    """Class decorator: makes ``cls.name`` a positivity every PU layer and trainer accepts."""
    if cls.name in POSITIVITY_MAPPINGS:
        raise ValueError(f"positivity {cls.name!r} is registered already ({type(POSITIVITY_MAPPINGS[cls.name]).__name__})")
    POSITIVITY_MAPPINGS[cls.name] = cls()
    return cls


def positivity_choices() -> tuple[str, ...]:
    return tuple(POSITIVITY_MAPPINGS)


def positivity_mapping(name: str) -> PositivityMapping:
    """The registered mapping called ``name``; a ValueError naming the choices otherwise."""
    try:
        return POSITIVITY_MAPPINGS[name]
    except (KeyError, TypeError):
        raise ValueError(f"positivity must be one of {positivity_choices()}, got {name!r}") from None


def _floor(theta: torch.Tensor, eps: float) -> torch.Tensor:
    return F.softplus(theta) + eps


@register_positivity
class Softplus(PositivityMapping):
    """softplus(x) + eps: smooth, every input keeps a non-zero gradient (PU-UNet's stable choice)."""

    name = "softplus"
    elementwise_ops = 2  # softplus, + eps

    def forward(self, x, eps, theta):
        return F.softplus(x) + eps

    def forward_no_grad(self, x, eps, theta):
        return F.softplus(x).add_(eps)

    def backward(self, grad_p, x, eps, theta, need_theta):
        # in place on grad_p, which the caller hands over
        return torch.ops.aten.softplus_backward.grad_input(grad_p, x, SOFTPLUS_BETA, SOFTPLUS_THRESHOLD,
                                                           grad_input=grad_p), None


@register_positivity
class Threshold(PositivityMapping):
    """PURe's floor max(x, softplus(theta) + eps) with a trainable theta: inputs below it get no gradient."""

    name = "threshold"
    learns_threshold = True
    elementwise_ops = 1  # the maximum (the floor is one number)

    def forward(self, x, eps, theta):
        return torch.maximum(x, _floor(theta, eps))

    def backward(self, grad_p, x, eps, theta, need_theta):
        """torch.maximum's rule: ties split the gradient evenly."""
        floor = _floor(theta, eps)
        shared = torch.where(x == floor, grad_p / 2, grad_p)
        grad_theta = None
        if need_theta:
            grad_floor = shared.masked_fill(x > floor, 0).sum().reshape(floor.shape)
            grad_theta = torch.ops.aten.softplus_backward(grad_floor, theta, SOFTPLUS_BETA, SOFTPLUS_THRESHOLD)
        return shared.masked_fill_(x < floor, 0), grad_theta
