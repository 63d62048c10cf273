"""The PU residual-encoder U-Net: nnU-Net's ResidualEncoderUNet with PU blocks in chosen stages.

The constructor takes ResidualEncoderUNet's arguments one to one (so nnU-Net plans describe it)
plus ``pu_stages`` and the PU options. The network is built as a ResidualEncoderUNet and the
chosen encoder stages are swapped for PU stages of the same shape: stem, skips, decoder, deep
supervision and everything else stay those of the matched baseline, which ``pu_stages=()`` is.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.residual import BasicBlockD
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn

from pu_nnunet.architectures.pu_residual_blocks import PUBasicBlock, StackedPUResidualBlocks
from pu_nnunet.architectures.stage_selection import DEFAULT_PLACEMENT, per_stage, resolve_pu_stages
from pu_nnunet.product_units import EXPONENT_INIT_A, LOG_INPUT_CLIP, LOG_OUTPUT_CLIP

# the slope nnU-Net's LeakyReLU uses, which its He init is matched to
HE_INIT_NEG_SLOPE = 1e-2


class PUResidualEncoderUNet(ResidualEncoderUNet):
    """Residual-encoder U-Net with stable product-unit residual blocks in ``pu_stages``.

    Args (beyond ResidualEncoderUNet's):
        pu_stages: a placement name ("deepest_half" default, "shallowest_half", "all", "none")
            or a list of encoder stage indices (0 = full resolution).
        pu_positivity, pu_log_input_clip, pu_log_output_clip: options of every PU layer
            (see ``pu_nnunet.product_units.ProductUnitConv``).
        pu_nonlin_after_add: keep BasicBlockD's nonlinearity after the residual add (PURe's
            classification nets drop it).
        pu_exponent_init_a: ``a`` of the Kaiming-uniform init of every PU's exponents.
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage, conv_op, kernel_sizes, strides,
                 n_blocks_per_stage, num_classes: int, n_conv_per_stage_decoder, conv_bias: bool = False,
                 norm_op=None, norm_op_kwargs: dict = None, dropout_op=None, dropout_op_kwargs: dict = None,
                 nonlin=None, nonlin_kwargs: dict = None, deep_supervision: bool = False,
                 block=BasicBlockD, bottleneck_channels=None, stem_channels: Optional[int] = None,
                 pu_stages: Union[str, Sequence[int]] = DEFAULT_PLACEMENT, pu_positivity: str = "softplus",
                 pu_log_input_clip: Optional[float] = LOG_INPUT_CLIP,
                 pu_log_output_clip: Optional[float] = LOG_OUTPUT_CLIP, pu_nonlin_after_add: bool = True,
                 pu_exponent_init_a: float = EXPONENT_INIT_A):
        if block is not BasicBlockD:
            raise ValueError(f"block must be BasicBlockD (PU stages replace BasicBlockD stages), got {block!r}")
        # checked before ResidualEncoderUNet's own checks, which are asserts (gone under python -O)
        chosen_stages = resolve_pu_stages(pu_stages, n_stages)
        features = per_stage(features_per_stage, n_stages, "features_per_stage")
        kernels = per_stage(kernel_sizes, n_stages, "kernel_sizes")
        stride_list = per_stage(strides, n_stages, "strides")
        blocks = per_stage(n_blocks_per_stage, n_stages, "n_blocks_per_stage")
        super().__init__(input_channels, n_stages, features_per_stage, conv_op, kernel_sizes, strides,
                         n_blocks_per_stage, num_classes, n_conv_per_stage_decoder, conv_bias, norm_op,
                         norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision,
                         block, bottleneck_channels, stem_channels)
        self.pu_stages = chosen_stages
        pu_options = dict(pu_positivity=pu_positivity, pu_log_input_clip=pu_log_input_clip,
                          pu_log_output_clip=pu_log_output_clip, pu_nonlin_after_add=pu_nonlin_after_add,
                          pu_exponent_init_a=pu_exponent_init_a)

        stage_inputs = [stem_channels or features[0]] + features[:-1]
        for s in self.pu_stages:
            # same shapes as the stage it replaces, so the decoder's skips and sizes still match
            self.encoder.stages[s] = StackedPUResidualBlocks(
                blocks[s], conv_op, stage_inputs[s], features[s], kernels[s], stride_list[s], conv_bias, norm_op,
                norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, **pu_options)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's ResEnc init, and every residual branch (PU ones too) starts at zero."""
        InitWeights_He(HE_INIT_NEG_SLOPE)(module)
        init_last_bn_before_add_to_0(module)
        if isinstance(module, PUBasicBlock):
            nn.init.constant_(module.norm2.weight, 0)
            nn.init.constant_(module.norm2.bias, 0)
