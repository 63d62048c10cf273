"""Datasets: converters for public datasets and built-in synthetic datasets, in nnU-Net's raw format.

Public API (imported on first use, so ``import pu_nnunet.datasets`` stays cheap for the CLI):

- ``generate_synthetic_ct``, ``generate_synthetic_ultrasound``: synthetic datasets, no download.
- ``convert_amos``, ``convert_isic2018``, ``convert_kvasir``, ``convert_busi``: public downloads.
- ``install_splits``: copy a dataset's ``splits_final.json`` into nnUNet_preprocessed after planning.
- ``DatasetError`` and its subclasses: problems a user can cause, with a message naming the file.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "generate_synthetic_ct": "pu_nnunet.datasets.synthetic.ct",
    "generate_synthetic_ultrasound": "pu_nnunet.datasets.synthetic.ultrasound",
    "convert_amos": "pu_nnunet.datasets.converters.amos",
    "convert_isic2018": "pu_nnunet.datasets.converters.isic2018",
    "convert_kvasir": "pu_nnunet.datasets.converters.kvasir",
    "convert_busi": "pu_nnunet.datasets.converters.busi",
    "install_splits": "pu_nnunet.datasets.shared.splits",
    "ConversionSummary": "pu_nnunet.datasets.shared.conversion",
    "DatasetError": "pu_nnunet.datasets.errors",
    "BadCaseError": "pu_nnunet.datasets.errors",
    "SourceLayoutError": "pu_nnunet.datasets.errors",
    "TargetExistsError": "pu_nnunet.datasets.errors",
    "EnvironmentNotSetError": "pu_nnunet.datasets.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
