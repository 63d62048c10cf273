"""The fused product-unit convolution: the reference's arithmetic with a plain conv's memory.

Autograd on the reference composition (``functional.product_unit_conv``) keeps every
intermediate for backward: x, pos(x), log p, the clipped log, the aggregate and the output,
where a plain conv keeps its input. This autograd Function saves the input x, the output y
and, with an output clip, a bool mask of the clipped aggregates (1 byte per element);
backward recomputes the log-domain input from x, elementwise work that is cheap next to the
convolution it feeds. Forward does its elementwise steps in place on one buffer.

Each step is the reference's torch op on the same values, and backward applies each op's own
derivative formula in the reference's order (the positivity mapping's own backward: softplus_backward
with softplus's threshold, torch.maximum's rule at ties; grad / p for the log; torch's clamp rule),
so the results equal the reference's bit for bit wherever the convolution kernels agree with
themselves. A registered mapping without a hand-written backward is differentiated by autograd
there (pu_nnunet/product_units/positivity.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch.autograd.function import once_differentiable

from pu_nnunet.product_units.clamp_rule import clamp_backward_, clamp_blocked
from pu_nnunet.product_units.constants import POSITIVITY_EPS
from pu_nnunet.product_units.functional import _CONV_BY_DIM, as_tuple, check_positivity
from pu_nnunet.product_units.positivity import positivity_mapping


@dataclass(frozen=True)
class _Spec:
    """Everything about one PU call that is not a tensor."""
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    positivity: str
    eps: float
    log_input_clip: Optional[float]
    log_output_clip: Optional[float]


def _clip_(t: torch.Tensor, bound: Optional[float]) -> torch.Tensor:
    return t if bound is None else t.clamp_(-bound, bound)


def _positive(x: torch.Tensor, spec: _Spec, theta: Optional[torch.Tensor]) -> torch.Tensor:
    """pos(x) as a new tensor (the reference's ``positive``); x already in the compute dtype."""
    return positivity_mapping(spec.positivity).forward_no_grad(x, spec.eps, theta)


def _conv(z: torch.Tensor, weight: torch.Tensor, spec: _Spec) -> torch.Tensor:
    return _CONV_BY_DIM[weight.dim() - 2](z, weight, None, spec.stride, spec.padding, spec.dilation, spec.groups)


def _log_domain_input_(x: torch.Tensor, theta: Optional[torch.Tensor], spec: _Spec, dtype: torch.dtype):
    """clip_in(log(pos(x))) in ``dtype``, computed in place on the one buffer pos(x) allocates."""
    return _clip_(_positive(x.to(dtype), spec, theta).log_(), spec.log_input_clip)


def _forward_without_graph(x: torch.Tensor, weight: torch.Tensor, theta: Optional[torch.Tensor],
                           spec: _Spec) -> torch.Tensor:
    """Inference: two buffers (log input, aggregate), every elementwise step in place, nothing kept."""
    aggregate = _conv(_log_domain_input_(x, theta, spec, weight.dtype), weight, spec)
    return _clip_(aggregate, spec.log_output_clip).exp_()


class _FusedProductUnitConv(torch.autograd.Function):
    """y = exp(clip_out(conv(clip_in(log(pos(x))), W))), saving x, y and the output-clip mask."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, theta: Optional[torch.Tensor], spec: _Spec):
        # the log-domain input is freed here and recomputed from x in backward; x is saved in its
        # own dtype (16 bits under autocast) and cast again there
        aggregate = _conv(_log_domain_input_(x, theta, spec, weight.dtype), weight, spec)
        blocked_out = None
        if spec.log_output_clip is not None:
            blocked_out = clamp_blocked(aggregate, spec.log_output_clip)
        y = _clip_(aggregate, spec.log_output_clip).exp_()
        ctx.spec = spec
        ctx.save_for_backward(x, weight, theta, y, blocked_out)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor):
        saved_x, weight, theta, y, blocked_out = ctx.saved_tensors
        spec = ctx.spec
        need_x, need_weight, need_theta = ctx.needs_input_grad[:3]
        need_grad_z = need_x or need_theta
        # forward ran with autocast off; so must the recomputation (backward may run inside autocast)
        with torch.autocast(device_type=y.device.type, enabled=False):
            x = saved_x.to(weight.dtype)
            grad_aggregate = grad_y * y  # exp' = exp
            if blocked_out is not None:
                grad_aggregate.masked_fill_(blocked_out, 0)

            p = _positive(x, spec, theta)
            if need_grad_z:
                log_p = torch.log(p)  # p and log p stay: log' = 1 / p, and the input clip's rule needs log p
                z = log_p if spec.log_input_clip is None else log_p.clamp(-spec.log_input_clip, spec.log_input_clip)
            else:
                z = _clip_(p.log_(), spec.log_input_clip)

            grad_z, grad_weight, _ = torch.ops.aten.convolution_backward(
                grad_aggregate, z, weight, None, spec.stride, spec.padding, spec.dilation, False,
                [0] * len(spec.stride), spec.groups, [need_grad_z, need_weight, False])
            del z, grad_aggregate
            if not need_grad_z:
                return None, grad_weight, None, None

            if spec.log_input_clip is not None:
                # log p is NaN only where x is; there grad / p is NaN whatever the clip's rule says
                grad_z = clamp_backward_(grad_z, log_p, spec.log_input_clip)
            del log_p
            grad_p = grad_z.div_(p)
            del p
            grad_x, grad_theta = positivity_mapping(spec.positivity).backward(grad_p, x, spec.eps, theta, need_theta)
        return grad_x.to(saved_x.dtype) if need_x else None, grad_weight, grad_theta, None


def fused_product_unit_conv(x: torch.Tensor, weight: torch.Tensor, *, stride: Sequence[int] | int = 1,
                            padding: Sequence[int] | int = 0, dilation: Sequence[int] | int = 1, groups: int = 1,
                            positivity: str = "softplus", eps: float = POSITIVITY_EPS, log_input_clip: Optional[float] = None,
                            log_output_clip: Optional[float] = None,
                            theta: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``functional.product_unit_conv``'s arguments and results, saving only x, y and a bool mask.

    Computes in the dtype of ``weight``; a lower-precision ``x`` is saved as it is and cast on use.
    """
    mapping = check_positivity(positivity, theta)
    ndim = weight.dim() - 2
    spec = _Spec(as_tuple(stride, ndim, "stride"), as_tuple(padding, ndim, "padding"),
                 as_tuple(dilation, ndim, "dilation"), int(groups),
                 positivity, float(eps), log_input_clip, log_output_clip)
    theta = theta if mapping.learns_threshold else None
    inputs = (x, weight) if theta is None else (x, weight, theta)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _FusedProductUnitConv.apply(x, weight, theta, spec)
    with torch.no_grad():
        return _forward_without_graph(x, weight, theta, spec)
