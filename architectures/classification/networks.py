"""The PURe classification networks and their matched ResNets (one class builds both).

PURe: Li, Jaekel, Dellen, "Deep residual learning with product units" (arXiv 2505.04397).
ResNet: He, Zhang, Ren, Sun, "Deep residual learning for image recognition" (CVPR 2016).

Two layouts, as in the paper:
- ``"imagenet"`` (its Table 1): 7x7 conv 64 stride 2 + BN, 3x3 max pool stride 2, stages of
  64/128/256/512 channels, 1x1-conv projection shortcuts where the shape changes.
- ``"cifar"`` (its Tables 5, 6): one 3x3 conv stride 1 + BN, no pooling, stages of 16/32/64
  channels, parameter-free zero-pad shortcuts (He et al.'s option A; the paper's counts).
Both end in global average pooling and one fully connected layer. Attribute names follow
torchvision's ResNet (conv1, bn1, maxpool, layer1.., avgpool, fc).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from pu_nnunet.product_units import EXPONENT_INIT_A
from pu_nnunet.architectures.classification.blocks import PU_FORMS, SHORTCUTS, ClassifierBasicBlock, make_activation

# layout -> (stem channels, default channels per stage, default shortcut)
LAYOUTS = {
    "imagenet": (64, (64, 128, 256, 512), "projection"),
    "cifar": (16, (16, 32, 64), "pad"),
}


def _check_positive_int(name: str, value) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class ResidualClassifier(nn.Module):
    """PURe (``product_unit=True``) or its matched ResNet, for 2D images.

    Args:
        layout: ``"imagenet"`` or ``"cifar"`` (stem, stage widths and shortcut; see the module
            docstring).
        blocks_per_stage: residual blocks in each stage, e.g. (2, 2, 2, 2) for PURe18.
        num_classes: outputs of the final fully connected layer.
        in_channels: image channels (1 for most medical images).
        product_unit: PURe (PU second layer in every block, every ReLU removed, stem included)
            or ResNet.
        pu_form: ``"paper"`` (PURe's threshold positivity, no clipping) or ``"stable"``
            (PU-UNet's softplus positivity with log-domain clips).
        channels_per_stage: overrides the layout's widths (one per stage).
        shortcut: overrides the layout's shortcut, ``"projection"`` or ``"pad"``.
        exponent_init_a: ``a`` of the Kaiming-uniform init of the PU exponents (default 5, the
            paper's "scaling factor 5"; PyTorch's own default is sqrt(5)).

    Init: PU exponents Kaiming-uniform with a = ``exponent_init_a``, PU thresholds 0,
    other convs Kaiming-normal (fan_out, as torchvision), BN weight 1 and bias 0.
    """

    def __init__(self, layout: str, blocks_per_stage: Sequence[int], num_classes: int, in_channels: int = 3,
                 product_unit: bool = True, pu_form: str = "paper",
                 channels_per_stage: Optional[Sequence[int]] = None, shortcut: Optional[str] = None,
                 exponent_init_a: float = EXPONENT_INIT_A):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {tuple(LAYOUTS)}, got {layout!r}")
        stem_channels, default_channels, default_shortcut = LAYOUTS[layout]
        channels_per_stage = tuple(default_channels if channels_per_stage is None else channels_per_stage)
        blocks_per_stage = tuple(blocks_per_stage)
        shortcut = default_shortcut if shortcut is None else shortcut
        if len(blocks_per_stage) != len(channels_per_stage) or not blocks_per_stage:
            raise ValueError(f"blocks_per_stage {blocks_per_stage} needs one entry per stage of "
                             f"channels_per_stage {channels_per_stage}")
        for i, (blocks, channels) in enumerate(zip(blocks_per_stage, channels_per_stage)):
            _check_positive_int(f"blocks_per_stage[{i}]", blocks)
            _check_positive_int(f"channels_per_stage[{i}]", channels)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("in_channels", in_channels)
        if pu_form not in PU_FORMS:
            raise ValueError(f"pu_form must be one of {tuple(PU_FORMS)}, got {pu_form!r}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.layout, self.product_unit, self.pu_form = layout, bool(product_unit), pu_form
        self.exponent_init_a = float(exponent_init_a)
        self.blocks_per_stage, self.channels_per_stage = blocks_per_stage, channels_per_stage

        if layout == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.activation = make_activation(self.product_unit)

        channels = stem_channels
        for index, (blocks, out_channels) in enumerate(zip(blocks_per_stage, channels_per_stage)):
            stride = 1 if index == 0 else 2
            stage = [ClassifierBasicBlock(channels, out_channels, stride, self.product_unit, pu_form, shortcut,
                                          self.exponent_init_a)]
            stage += [ClassifierBasicBlock(out_channels, out_channels, 1, self.product_unit, pu_form, shortcut,
                                           self.exponent_init_a)
                      for _ in range(1, blocks)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
            channels = out_channels
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # ProductUnitConv is no nn.Conv2d: it keeps its own init (exponents a = exponent_init_a, theta 0)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.blocks_per_stage))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector before the classifier, (N, channels of the last stage)."""
        x = self.maxpool(self.activation(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))
