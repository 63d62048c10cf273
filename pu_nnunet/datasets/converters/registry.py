"""Every converter ``pu-nnunet convert`` offers: one entry each, read by the command line.

An entry names the subcommand, the default dataset name, a one-line description, the function
(imported on use, so listing converters loads no image code) and the options of its own beyond the
common ones (source folder, -d, --name, --overwrite, --skip-bad, -np). A dataset of photographs and
masks in two folders is a :class:`~pu_nnunet.datasets.converters.paired_folders.PairedFolderSpec`
plus :func:`paired_folder_converter`, one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from pu_nnunet.datasets.converters.kvasir import KVASIR
from pu_nnunet.datasets.converters.paired_folders import PairedFolderSpec
from pu_nnunet.datasets.shared.splits import NNUNET_SPLIT_SEED


@dataclass(frozen=True)
class Option:
    """One option of a converter's own: argparse's flags and keywords; its dest is the converter's keyword."""
    flags: tuple[str, ...]
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class Converter:
    key: str                      # the subcommand: pu-nnunet convert KEY
    default_name: str             # DatasetIII_<default_name>
    description: str              # its help line: the dataset and the folder it expects
    load: Callable[[], Callable]  # returns the conversion function (imported on use)
    options: tuple[Option, ...] = field(default=())
    paired_spec: PairedFolderSpec | None = None  # the layout of a paired-folder converter (its contract test reads it)


def _function(module: str, name: str) -> Callable[[], Callable]:
    return lambda: getattr(importlib.import_module(module), name)


SEED = Option(("--seed",), dict(type=int, default=NNUNET_SPLIT_SEED,
                                 help=f"seed of the split (default: {NNUNET_SPLIT_SEED}, nnU-Net's own)"))
FIVE_FOLD = Option(("--five-fold",), dict(action="store_true",
                                          help="write a seeded 5-fold cross-validation instead of the hold-out split"))


def paired_folder_converter(key: str, spec: PairedFolderSpec) -> Converter:
    """The converter of a dataset of images and masks in two folders paired by name."""
    from pu_nnunet.datasets.converters.paired_folders import convert_paired_folders

    return Converter(key, spec.default_name,
                     f"{spec.title} (folder with {spec.images_folder}/ and {spec.masks_folder}/)",
                     lambda: partial(convert_paired_folders, spec), (SEED, FIVE_FOLD), spec)


def _busi_options() -> tuple[Option, ...]:
    from pu_nnunet.datasets.converters.busi import DEFAULT_TEST_FRACTION as test_fraction

    return (Option(("--seed",), dict(type=int, default=NNUNET_SPLIT_SEED,
                                     help=f"seed of the splits (default: {NNUNET_SPLIT_SEED}, nnU-Net's own)")),
            Option(("--test-fraction",), dict(type=float, default=test_fraction,
                                              help=f"share of each class held out as the test set (default: "
                                                   f"{test_fraction})")))


CONVERTERS: dict[str, Converter] = {c.key: c for c in (
    Converter("amos", "AMOS2022CT",
              "AMOS 2022 CT (amos22/ folder: dataset.json, imagesTr, labelsTr, imagesVa, labelsVa, imagesTs)",
              _function("pu_nnunet.datasets.converters.amos", "convert_amos"),
              (Option(("--val-as-test",), dict(action="store_true", help=(
                  "keep the official validation cases aside as imagesTs/labelsTs (default: train on training + "
                  "validation, fold 0 of the split = official training/validation)"))),)),
    Converter("isic2018", "ISIC2018", "ISIC 2018 Task 1 (folder with ISIC2018_Task1-2_Training_Input, "
                                      "ISIC2018_Task1_Training_GroundTruth, ...)",
              _function("pu_nnunet.datasets.converters.isic2018", "convert_isic2018")),
    paired_folder_converter("kvasir", KVASIR),
    Converter("busi", "BUSI", "BUSI (Dataset_BUSI_with_GT/ folder with benign/, malignant/, normal/)",
              _function("pu_nnunet.datasets.converters.busi", "convert_busi"), _busi_options()),
)}
