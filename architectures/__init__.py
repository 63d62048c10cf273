"""Blocks and networks: PU residual blocks, the PU residual-encoder U-Net, and the PURe
classification networks with their matched ResNets."""

from pu_nnunet.architectures.classification import (CLASSIFIER_NAMES, PURE_NAMES, ResidualClassifier,
                                                    create_classifier, matched_resnet)
from pu_nnunet.architectures.pu_residual_blocks import PUBasicBlock, StackedPUResidualBlocks
from pu_nnunet.architectures.pu_residual_unet import PUResidualEncoderUNet
from pu_nnunet.architectures.stage_selection import DEFAULT_PLACEMENT, PLACEMENTS, resolve_pu_stages

__all__ = ["PUBasicBlock", "StackedPUResidualBlocks", "PUResidualEncoderUNet", "resolve_pu_stages",
           "PLACEMENTS", "DEFAULT_PLACEMENT", "create_classifier", "matched_resnet", "CLASSIFIER_NAMES", "PURE_NAMES",
           "ResidualClassifier"]
