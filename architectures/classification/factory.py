"""create_classifier: the paper's PURe networks and their matched ResNets by name.

| name (ResNet twin)        | layout   | blocks per stage | paper's parameters (PURe) |
| pure18 (resnet18)         | imagenet | 2, 2, 2, 2       | 11,689,520 at 1000 classes |
| pure34 (resnet34)         | imagenet | 3, 4, 6, 3       | 21,797,688 at 1000 classes |
| pure20/32/44/56/110/272   | cifar    | n, n, n with n = (depth - 2) / 6 | 0.27/0.46/0.66/0.85/1.73/4.36 M |
  (resnet20 ... resnet272)
"""

from __future__ import annotations

from typing import Optional

from pu_nnunet.architectures.classification.networks import ResidualClassifier

_IMAGENET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
# He et al.'s CIFAR depth 6n + 2: n blocks of two layers in each of 3 stages, plus stem and fc
_CIFAR_DEPTHS = (20, 32, 44, 56, 110, 272)
# the class counts of the datasets each layout was published on (ImageNet, CIFAR-10)
DEFAULT_NUM_CLASSES = {"imagenet": 1000, "cifar": 10}


def _specs() -> dict[str, tuple[str, tuple[int, ...], bool]]:
    specs = {}
    for depth, blocks in _IMAGENET_BLOCKS.items():
        specs[f"pure{depth}"] = ("imagenet", blocks, True)
        specs[f"resnet{depth}"] = ("imagenet", blocks, False)
    for depth in _CIFAR_DEPTHS:
        n = (depth - 2) // 6
        specs[f"pure{depth}"] = ("cifar", (n, n, n), True)
        specs[f"resnet{depth}"] = ("cifar", (n, n, n), False)
    return specs


# name -> (layout, blocks per stage, product unit)
CLASSIFIER_SPECS = _specs()
CLASSIFIER_NAMES = tuple(CLASSIFIER_SPECS)
PURE_NAMES = tuple(name for name in CLASSIFIER_NAMES if name.startswith("pure"))


def matched_resnet(name: str) -> str:
    """The ResNet twin of a PURe network's name ("pure20" -> "resnet20")."""
    if name not in PURE_NAMES:
        raise ValueError(f"name must be one of {PURE_NAMES}, got {name!r}")
    return "resnet" + name[len("pure"):]


def create_classifier(name: str, num_classes: Optional[int] = None, in_channels: int = 3,
                      pu_form: str = "paper", **kwargs) -> ResidualClassifier:
    """Builds a PURe network or its matched ResNet by name (see CLASSIFIER_NAMES).

    Args:
        name: "pure18", "pure34", "pure20" ... "pure272", or the twin "resnet18" ... "resnet272".
        num_classes: outputs; defaults to the layout's paper dataset (1000 ImageNet, 10 CIFAR-10).
        in_channels: image channels (1 for grey-scale medical images).
        pu_form: "paper" (threshold positivity, no clips) or "stable" (softplus + clips);
            ignored by the ResNets.
        **kwargs: passed on to ResidualClassifier (``channels_per_stage``, ``shortcut``,
            ``exponent_init_a``).
    """
    if name not in CLASSIFIER_SPECS:
        raise ValueError(f"name must be one of {CLASSIFIER_NAMES}, got {name!r}")
    layout, blocks, product_unit = CLASSIFIER_SPECS[name]
    num_classes = DEFAULT_NUM_CLASSES[layout] if num_classes is None else num_classes
    return ResidualClassifier(layout, blocks, num_classes, in_channels, product_unit=product_unit,
                              pu_form=pu_form, **kwargs)
