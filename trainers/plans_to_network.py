"""From nnU-Net plans to the keyword arguments of the PU residual-encoder U-Net.

Two families of plans are understood:
- ResEnc presets (``nnUNetResEncUNet{M,L,XL}Plans``): ResidualEncoderUNet, taken as they are.
- Default ``nnUNetPlans``: PlainConvUNet. Each encoder stage's ``n_conv_per_stage`` convs
  become ceil(n / 2) residual blocks (a BasicBlockD holds two convs, so the default 2 convs ->
  1 block); stages, features, kernels, strides, norm, nonlinearity and the decoder are kept.
  The residual encoder adds its stem conv in front, as nnU-Net's ResEnc networks do.
"""

from __future__ import annotations

import math
import pydoc

from pu_nnunet.architectures.stage_selection import per_stage
from pu_nnunet.user_errors import UserInputError

RESIDUAL_ENCODER_UNET = "ResidualEncoderUNet"
PLAIN_CONV_UNET = "PlainConvUNet"

# ResidualEncoderUNet's constructor arguments that plans may carry (everything but the
# channels in/out and deep supervision, which the trainer passes)
_RESENC_KWARGS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_blocks_per_stage",
                  "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
                  "dropout_op_kwargs", "nonlin", "nonlin_kwargs", "block", "bottleneck_channels", "stem_channels")


class UnsupportedPlansError(UserInputError, ValueError):
    """The plans describe an architecture the PU network cannot mirror (a ValueError too, as
    nnU-Net's own checks of plans raise)."""


def blocks_for_plain_stage(n_conv: int) -> int:
    """Residual blocks replacing a PlainConvUNet stage of ``n_conv`` convolutions."""
    return max(1, math.ceil(n_conv / 2))


def residual_unet_plans_kwargs(network_arch_class_name: str, arch_kwargs: dict) -> dict:
    """ResidualEncoderUNet keyword arguments as plans store them (class names as strings) for the
    architecture in the plans: a ResidualEncoderUNet's as they are, a PlainConvUNet's stages as
    residual blocks."""
    kwargs = dict(arch_kwargs)
    class_name = network_arch_class_name.rsplit(".", 1)[-1]
    if class_name == PLAIN_CONV_UNET:
        n_conv = per_stage(kwargs.pop("n_conv_per_stage"), kwargs["n_stages"], "n_conv_per_stage")
        kwargs["n_blocks_per_stage"] = [blocks_for_plain_stage(n) for n in n_conv]
    elif class_name != RESIDUAL_ENCODER_UNET:
        raise UnsupportedPlansError(
            f"plans use {network_arch_class_name}; the PU trainers build from PlainConvUNet plans (nnUNetPlans) "
            f"or ResidualEncoderUNet plans (nnUNetResEncUNet{{M,L,XL}}Plans)")
    return {k: v for k, v in kwargs.items() if k in _RESENC_KWARGS}


def residual_unet_kwargs(network_arch_class_name: str, arch_kwargs: dict, arch_kwargs_req_import) -> dict:
    """ResidualEncoderUNet keyword arguments (classes imported) for the architecture in the plans."""
    kwargs = residual_unet_plans_kwargs(network_arch_class_name, arch_kwargs)
    for key in arch_kwargs_req_import:
        if kwargs.get(key) is not None:
            located = pydoc.locate(kwargs[key])
            if located is None:
                raise UnsupportedPlansError(f"plans name {key}={kwargs[key]!r}, which cannot be imported")
            kwargs[key] = located
    return kwargs
