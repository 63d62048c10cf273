"""Blocks and networks: PU residual blocks and the PU residual-encoder U-Net."""

from pu_nnunet.architectures.pu_residual_blocks import PUBasicBlock, StackedPUResidualBlocks
from pu_nnunet.architectures.pu_residual_unet import PUResidualEncoderUNet
from pu_nnunet.architectures.stage_selection import DEFAULT_PLACEMENT, PLACEMENTS, resolve_pu_stages

__all__ = ["PUBasicBlock", "StackedPUResidualBlocks", "PUResidualEncoderUNet", "resolve_pu_stages",
           "PLACEMENTS", "DEFAULT_PLACEMENT"]
