"""Product-unit residual blocks, the PU counterpart of dynamic-network-architectures' BasicBlockD.

BasicBlockD:  conv-norm-nonlin -> conv-norm      (+ skip) -> nonlin
PUBasicBlock: conv-norm        -> PU-norm        (+ skip) -> nonlin (optional)

The first conv carries the stride; the skip is BasicBlockD's (avg-pool + 1x1 conv-norm when the
shape changes). No nonlinearity sits before the PU: the PU is itself the non-linear step, and a
ReLU would send every negative input to the positivity floor (PURe removes all ReLUs).
"""

from __future__ import annotations

from typing import Optional, Type

import numpy as np
import torch
from torch import nn
from dynamic_network_architectures.building_blocks.helper import get_matching_pool_op, maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.regularization import DropPath, SqueezeExcite
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU

from pu_nnunet.product_units import EXPONENT_INIT_A, LOG_INPUT_CLIP, LOG_OUTPUT_CLIP, ProductUnitConv

# BasicBlockD's defaults: squeeze-excitation width = channels / 16, rounded to a multiple of 8
SE_REDUCTION_RATIO = 1.0 / 16
SE_DIVISOR = 8


def _check_channels(**channels: int) -> None:
    for name, value in channels.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


class PUBasicBlock(nn.Module):
    """Residual block whose second convolution is a stable product unit.

    Takes BasicBlockD's arguments one to one, stochastic depth and squeeze-excitation included
    (applied to the residual branch before the add, as BasicBlockD does), then the PU options.
    """

    def __init__(self, conv_op: Type[nn.Module], input_channels: int, output_channels: int, kernel_size, stride,
                 conv_bias: bool = False, norm_op: Optional[Type[nn.Module]] = None, norm_op_kwargs: dict = None,
                 dropout_op: Optional[Type[nn.Module]] = None, dropout_op_kwargs: dict = None,
                 nonlin: Optional[Type[nn.Module]] = None, nonlin_kwargs: dict = None,
                 stochastic_depth_p: float = 0.0, squeeze_excitation: bool = False,
                 squeeze_excitation_reduction_ratio: float = SE_REDUCTION_RATIO,
                 pu_positivity: str = "softplus", pu_log_input_clip: Optional[float] = LOG_INPUT_CLIP,
                 pu_log_output_clip: Optional[float] = LOG_OUTPUT_CLIP, pu_nonlin_after_add: bool = True,
                 pu_exponent_init_a: float = EXPONENT_INIT_A):
        super().__init__()
        _check_channels(input_channels=input_channels, output_channels=output_channels)
        if norm_op is None:
            raise ValueError("norm_op must be a normalisation class (e.g. nn.InstanceNorm2d), got None: "
                             "the PU output has to be renormalised")
        if not 0.0 <= stochastic_depth_p < 1.0:
            raise ValueError(f"stochastic_depth_p must be in [0, 1), got {stochastic_depth_p!r}")
        if squeeze_excitation and not 0.0 < squeeze_excitation_reduction_ratio <= 1.0:
            raise ValueError(f"squeeze_excitation_reduction_ratio must be in (0, 1], got "
                             f"{squeeze_excitation_reduction_ratio!r}")
        norm_op_kwargs = norm_op_kwargs or {}
        nonlin_kwargs = nonlin_kwargs or {}
        self.input_channels, self.output_channels = input_channels, output_channels
        self.stride = maybe_convert_scalar_to_list(conv_op, stride)
        kernel_size = maybe_convert_scalar_to_list(conv_op, kernel_size)

        # no nonlinearity between the conv and the PU (see the module docstring)
        self.conv1 = ConvDropoutNormReLU(conv_op, input_channels, output_channels, kernel_size, self.stride, conv_bias,
                                         norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, None, None)
        self.pu = ProductUnitConv(conv_op, output_channels, output_channels, kernel_size, positivity=pu_positivity,
                                  log_input_clip=pu_log_input_clip, log_output_clip=pu_log_output_clip,
                                  exponent_init_a=pu_exponent_init_a)
        self.norm2 = norm_op(output_channels, **norm_op_kwargs)
        self.nonlin2 = nonlin(**nonlin_kwargs) if (nonlin is not None and pu_nonlin_after_add) else nn.Identity()
        self.drop_path = DropPath(drop_prob=stochastic_depth_p) if stochastic_depth_p > 0 else nn.Identity()
        self.squeeze_excitation = (SqueezeExcite(output_channels, conv_op, rd_ratio=squeeze_excitation_reduction_ratio,
                                                 rd_divisor=SE_DIVISOR) if squeeze_excitation else nn.Identity())

        has_stride = any(s != 1 for s in self.stride)
        skip_ops = []
        if has_stride:
            skip_ops.append(get_matching_pool_op(conv_op=conv_op, adaptive=False, pool_type="avg")(self.stride,
                                                                                                   self.stride))
        if input_channels != output_channels:
            skip_ops.append(ConvDropoutNormReLU(conv_op, input_channels, output_channels, 1, 1, False, norm_op,
                                                norm_op_kwargs, None, None, None, None))
        self.skip = nn.Sequential(*skip_ops) if skip_ops else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.squeeze_excitation(self.drop_path(self.norm2(self.pu(self.conv1(x)))))
        return self.nonlin2(out + self.skip(x))

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        # same accounting as BasicBlockD: conv1 output, PU output, skip projection when present
        size_after_stride = [i // s for i, s in zip(input_size, self.stride)]
        per_map = np.prod([self.output_channels, *size_after_stride], dtype=np.int64)
        has_skip_conv = not isinstance(self.skip, nn.Identity)
        return per_map * (3 if has_skip_conv else 2)


class StackedPUResidualBlocks(nn.Module):
    """n PUBasicBlocks; the first carries the stride and the channel change (as StackedResidualBlocks)."""

    def __init__(self, n_blocks: int, conv_op: Type[nn.Module], input_channels: int, output_channels: int,
                 kernel_size, initial_stride, conv_bias: bool = False, norm_op=None, norm_op_kwargs=None,
                 dropout_op=None, dropout_op_kwargs=None, nonlin=None, nonlin_kwargs=None, **pu_options):
        super().__init__()
        if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or n_blocks < 1:
            raise ValueError(f"n_blocks must be an int of at least 1, got {n_blocks!r}")
        common = dict(conv_bias=conv_bias, norm_op=norm_op, norm_op_kwargs=norm_op_kwargs, dropout_op=dropout_op,
                      dropout_op_kwargs=dropout_op_kwargs, nonlin=nonlin, nonlin_kwargs=nonlin_kwargs, **pu_options)
        self.blocks = nn.Sequential(
            PUBasicBlock(conv_op, input_channels, output_channels, kernel_size, initial_stride, **common),
            *[PUBasicBlock(conv_op, output_channels, output_channels, kernel_size, 1, **common)
              for _ in range(1, n_blocks)])
        self.initial_stride = maybe_convert_scalar_to_list(conv_op, initial_stride)
        self.output_channels = output_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        output = self.blocks[0].compute_conv_feature_map_size(input_size)
        size_after_stride = [i // s for i, s in zip(input_size, self.initial_stride)]
        for block in self.blocks[1:]:
            output += block.compute_conv_feature_map_size(size_after_stride)
        return output
