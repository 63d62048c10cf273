"""The product unit as a plain composition of torch ops: the reference formulation.

    y = exp( clip_out( conv( clip_in( log(pos(x)) ), W ) ) )

A product unit prod_i x_i ** w_i is a convolution in the log domain. Zero padding of the log
input is padding with the multiplicative identity (x = 1), as a product unit needs.
Every other implementation (a fused autograd path, a compiled one) is tested against this.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from pu_nnunet.product_units.constants import POSITIVITY_EPS
from pu_nnunet.product_units.positivity import PositivityMapping, positivity_mapping

_CONV_BY_DIM = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def as_tuple(value: Sequence[int] | int, ndim: int, name: str) -> tuple[int, ...]:
    """An int or ``ndim`` ints (stride, padding, ...) as a tuple of ``ndim`` non-negative ints."""
    values = (int(value),) * ndim if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != ndim or any(v < 0 for v in values):
        raise ValueError(f"{name} must be a non-negative int or {ndim} of them, got {value!r}")
    return values


def check_positivity(positivity: str, theta: Optional[torch.Tensor]) -> PositivityMapping:
    """The registered mapping called ``positivity`` (pu_nnunet/product_units/positivity.py), with
    the threshold it learns where it learns one."""
    mapping = positivity_mapping(positivity)
    if mapping.learns_threshold and theta is None:
        raise ValueError(f"positivity={positivity!r} needs the trainable threshold theta")
    return mapping


def positive(x: torch.Tensor, positivity: str, eps: float, theta: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Maps any real input to (0, inf) with the registered mapping ``positivity``: ``softplus``
    (smooth, every input keeps a non-zero gradient: the stable choice), ``threshold`` (PURe's floor
    max(x, softplus(theta) + eps); inputs below it get no gradient), or any other registered one."""
    return check_positivity(positivity, theta).forward(x, eps, theta)


def _clip(z: torch.Tensor, bound: Optional[float]) -> torch.Tensor:
    return z if bound is None else torch.clamp(z, -bound, bound)


def log_input(x: torch.Tensor, positivity: str, eps: float, log_input_clip: Optional[float],
              theta: Optional[torch.Tensor] = None) -> torch.Tensor:
    """clip_in(log(pos(x))): the log-domain input of the product unit."""
    return _clip(torch.log(positive(x, positivity, eps, theta)), log_input_clip)


def product_unit_conv(x: torch.Tensor, weight: torch.Tensor, *, stride: Sequence[int] | int = 1,
                      padding: Sequence[int] | int = 0, dilation: Sequence[int] | int = 1, groups: int = 1,
                      positivity: str = "softplus", eps: float = POSITIVITY_EPS, log_input_clip: Optional[float] = None,
                      log_output_clip: Optional[float] = None, theta: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference product-unit convolution in the dtype of ``weight`` (callers pick float32/float64);
    a lower-precision ``x`` is cast to it first."""
    ndim = weight.dim() - 2
    conv = _CONV_BY_DIM[ndim]
    z = log_input(x.to(weight.dtype), positivity, eps, log_input_clip, theta)
    aggregate = conv(z, weight, None, stride, padding, dilation, groups)
    return torch.exp(_clip(aggregate, log_output_clip))
