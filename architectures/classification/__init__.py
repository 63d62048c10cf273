"""Classification networks of the PURe paper (PURe18/34, CIFAR PURe20-272) and their matched ResNets."""

from pu_nnunet.architectures.classification.blocks import PU_FORMS, SHORTCUTS, ClassifierBasicBlock, PadShortcut
from pu_nnunet.architectures.classification.factory import (CLASSIFIER_NAMES, PURE_NAMES, create_classifier,
                                                            matched_resnet)
from pu_nnunet.architectures.classification.networks import ResidualClassifier

__all__ = ["create_classifier", "matched_resnet", "CLASSIFIER_NAMES", "PURE_NAMES", "ResidualClassifier",
           "ClassifierBasicBlock", "PadShortcut", "PU_FORMS", "SHORTCUTS"]
