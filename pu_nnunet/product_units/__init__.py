"""The stable product-unit (PU) layer: a convolution in the log domain, for 1D, 2D and 3D."""

from pu_nnunet.product_units.constants import (EXPONENT_INIT_A, IMPLEMENTATION_CHOICES, LOG_INPUT_CLIP,
                                               LOG_OUTPUT_CLIP, POSITIVITY_EPS)
from pu_nnunet.product_units.functional import product_unit_conv
from pu_nnunet.product_units.fused import fused_product_unit_conv
from pu_nnunet.product_units.layer import ProductUnitConv
from pu_nnunet.product_units.positivity import PositivityMapping, positivity_choices, register_positivity

__all__ = ["ProductUnitConv", "product_unit_conv", "fused_product_unit_conv", "POSITIVITY_EPS", "LOG_INPUT_CLIP",
           "LOG_OUTPUT_CLIP", "EXPONENT_INIT_A", "IMPLEMENTATION_CHOICES", "PositivityMapping", "positivity_choices",
           "register_positivity"]
