"""Residual blocks of the PURe classification networks and of their matched ResNets.

ResNet basic block:  conv3x3-BN-ReLU -> conv3x3-BN (+ shortcut) -> ReLU
PURe block:          conv3x3-BN      -> PU3x3-BN   (+ shortcut)

One class builds both, so a PURe network and its ResNet twin differ only in the second layer
of each block and in the ReLUs (an ``nn.Identity`` in PURe). Module names follow torchvision's
``BasicBlock`` (conv1, bn1, conv2, bn2, downsample), so a ResNet's state_dict loads into
torchvision's and back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pu_nnunet.product_units import EXPONENT_INIT_A, LOG_INPUT_CLIP, LOG_OUTPUT_CLIP, ProductUnitConv

# The PU of the paper (PURe: hard floor max(x, softplus(theta) + eps), theta trainable, no clip)
# and the stable PU of PU-UNet (smooth positivity, log-domain clips), as ProductUnitConv options.
PU_FORMS = {
    "paper": dict(positivity="threshold", log_input_clip=None, log_output_clip=None),
    "stable": dict(positivity="softplus", log_input_clip=LOG_INPUT_CLIP, log_output_clip=LOG_OUTPUT_CLIP),
}

# "projection": 1x1 conv (with the stride) + BN where the shape changes (ResNet option B, the
# ImageNet networks). "pad": take every stride-th pixel and zero-pad the new channels, no
# parameters (ResNet option A, He et al.'s CIFAR networks, whose counts the paper quotes).
SHORTCUTS = ("projection", "pad")


class PadShortcut(nn.Module):
    """Parameter-free shortcut: subsample by the stride, zero-pad the channels (ResNet option A)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"PadShortcut cannot drop channels: in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_channels - self.in_channels
        # the new channels split evenly before and after the old ones, as in He et al.'s option A
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_shortcut(kind: str, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity where the shape is kept, else the shortcut ``kind`` (one of SHORTCUTS)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "projection":
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                             nn.BatchNorm2d(out_channels))
    if kind == "pad":
        return PadShortcut(in_channels, out_channels, stride)
    raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {kind!r}")


def make_activation(product_unit: bool) -> nn.Module:
    """ReLU in a ResNet; nothing in PURe, which removes every ReLU (the PU is the non-linearity)."""
    return nn.Identity() if product_unit else nn.ReLU(inplace=True)


class ClassifierBasicBlock(nn.Module):
    """The basic residual block, with a product unit as second layer when ``product_unit``.

    Args:
        in_channels, out_channels: channels in and out; the first conv changes them.
        stride: stride of the first conv and of the shortcut.
        product_unit: PURe block (PU second layer, no ReLU) or ResNet block.
        pu_form: a key of PU_FORMS; used only with ``product_unit``.
        shortcut: a value of SHORTCUTS, used where the shape changes.
        exponent_init_a: ``a`` of the Kaiming-uniform init of the PU exponents.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, product_unit: bool,
                 pu_form: str = "paper", shortcut: str = "projection",
                 exponent_init_a: float = EXPONENT_INIT_A):
        super().__init__()
        if pu_form not in PU_FORMS:
            raise ValueError(f"pu_form must be one of {tuple(PU_FORMS)}, got {pu_form!r}")
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.activation = make_activation(product_unit)
        if product_unit:
            self.conv2 = ProductUnitConv(nn.Conv2d, out_channels, out_channels, 3, **PU_FORMS[pu_form],
                                         exponent_init_a=exponent_init_a)
        else:
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = make_shortcut(shortcut, in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.activation(out + self.downsample(x))
