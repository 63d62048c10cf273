"""The stable product-unit layer, for any convolution dimension (1D, 2D, 3D)."""

from __future__ import annotations

from typing import Optional, Sequence, Type, Union

import torch
from torch import nn

from pu_nnunet.product_units import constants as C
from pu_nnunet.product_units.functional import as_tuple, product_unit_conv
from pu_nnunet.product_units.fused import fused_product_unit_conv
from pu_nnunet.product_units.positivity import positivity_mapping

_DIM_BY_CONV_OP = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_FUNCTION_BY_IMPLEMENTATION = {"fused": fused_product_unit_conv, "reference": product_unit_conv}

IntOrSeq = Union[int, Sequence[int]]


def _check_clip(name: str, bound: Optional[float]) -> Optional[float]:
    if bound is None:
        return None
    if not (isinstance(bound, (int, float)) and bound > 0):
        raise ValueError(f"{name} must be a positive number or None (no clipping), got {bound!r}")
    return float(bound)


class ProductUnitConv(nn.Module):
    """Stable product-unit convolution: y = exp(clip_out(conv(clip_in(log(pos(x))), W))).

    Each output is a product of its receptive field's (positive-mapped) inputs raised to learned
    exponents, as in PURe (Li, Jaekel, Dellen, arXiv 2505.04397) and its stabilised form in
    PU-UNet (Li, Sufyan, Jaekel, Dellen, arXiv 2606.20035). No bias: a bias is a constant
    factor, which the norm that follows the PU removes anyway.

    Args:
        conv_op: ``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Conv3d``; fixes the dimension, as in
            dynamic-network-architectures.
        in_channels, out_channels, kernel_size, stride, dilation, groups: as for ``conv_op``.
        padding: ``None`` pads to keep the size for odd kernels; pads with x = 1, the
            multiplicative identity (0 in the log domain).
        positivity: a registered mapping (pu_nnunet/product_units/positivity.py): ``"softplus"``
            (smooth, default), ``"threshold"`` (PURe's floor softplus(theta) + eps with a trainable
            theta, initialised to 0), or one of your own.
        log_input_clip: bound c of clamp(log p, -c, c); ``None`` switches the clip off.
        log_output_clip: bound of the aggregate before exp; ``None`` switches it off.
        eps: added to the positive input before the log.
        exponent_init_a: ``a`` of the Kaiming-uniform init of the exponents.
        implementation: ``"fused"`` (default: an autograd Function saving x, y and a bool mask,
            equal to the reference) or ``"reference"`` (autograd on the plain composition).

    The log, conv and exp run in float32 (float64 for float64 inputs) with autocast disabled;
    the output has the input's dtype.
    """

    def __init__(self, conv_op: Type[nn.Module], in_channels: int, out_channels: int, kernel_size: IntOrSeq,
                 stride: IntOrSeq = 1, padding: Optional[IntOrSeq] = None, dilation: IntOrSeq = 1, groups: int = 1,
                 positivity: str = "softplus", log_input_clip: Optional[float] = C.LOG_INPUT_CLIP,
                 log_output_clip: Optional[float] = C.LOG_OUTPUT_CLIP, eps: float = C.POSITIVITY_EPS,
                 exponent_init_a: float = C.EXPONENT_INIT_A, implementation: str = C.DEFAULT_IMPLEMENTATION):
        super().__init__()
        if conv_op not in _DIM_BY_CONV_OP:
            raise ValueError(f"conv_op must be nn.Conv1d, nn.Conv2d or nn.Conv3d, got {conv_op!r}")
        ndim = _DIM_BY_CONV_OP[conv_op]
        mapping = positivity_mapping(positivity)  # a ValueError naming the registered choices
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        if implementation not in C.IMPLEMENTATION_CHOICES:
            raise ValueError(f"implementation must be one of {C.IMPLEMENTATION_CHOICES}, got {implementation!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")

        self.conv_op = conv_op
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = as_tuple(kernel_size, ndim, "kernel_size")
        if any(k == 0 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be positive, got {kernel_size!r}")
        self.stride = as_tuple(stride, ndim, "stride")
        if any(s == 0 for s in self.stride):
            raise ValueError(f"stride must be positive, got {stride!r}")
        self.dilation = as_tuple(dilation, ndim, "dilation")
        if padding is None:
            padding = tuple((k - 1) // 2 * d for k, d in zip(self.kernel_size, self.dilation))
        self.padding = as_tuple(padding, ndim, "padding")
        self.positivity = positivity
        self.log_input_clip = _check_clip("log_input_clip", log_input_clip)
        self.log_output_clip = _check_clip("log_output_clip", log_output_clip)
        self.eps = float(eps)
        self.exponent_init_a = float(exponent_init_a)
        self.implementation = implementation

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        # PURe learns one threshold per PU layer; the smooth mapping has nothing to learn
        self.theta = nn.Parameter(torch.empty(1)) if mapping.learns_threshold else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=self.exponent_init_a)
        if self.theta is not None:
            nn.init.constant_(self.theta, C.THRESHOLD_INIT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 (or float64) math whatever autocast says: exp() of an fp16 aggregate overflows
        compute_dtype = torch.promote_types(x.dtype, torch.float32)
        with torch.autocast(device_type=x.device.type, enabled=False):
            theta = None if self.theta is None else self.theta.to(compute_dtype)
            # x goes in as it is: both paths compute in the weight's dtype, and the fused one then
            # keeps a 16-bit x for backward in 16 bits
            y = _FUNCTION_BY_IMPLEMENTATION[self.implementation](
                x, self.weight.to(compute_dtype), stride=self.stride, padding=self.padding,
                dilation=self.dilation, groups=self.groups, positivity=self.positivity, eps=self.eps,
                log_input_clip=self.log_input_clip, log_output_clip=self.log_output_clip, theta=theta)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"positivity={self.positivity!r}, log_input_clip={self.log_input_clip}, "
                f"log_output_clip={self.log_output_clip}, implementation={self.implementation!r}")
