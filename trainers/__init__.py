"""nnU-Net trainers, found by nnU-Net through ``nnUNet_extTrainer`` (``pu-nnunet trainer-path``).

The trainer classes live in ``pu_nnunet.trainers.pure_trainers``; this package's import stays
free of torch and nnU-Net so that ``pu-nnunet trainer-path`` answers at once.
"""

from __future__ import annotations

import os

# the folder to list in nnUNet_extTrainer: it holds one re-export module, cheap to import
EXT_TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_ext")
# nnU-Net (>= 2.8.0) looks trainers up in the folders this variable lists (os.pathsep-separated)
EXT_TRAINER_VARIABLE = "nnUNet_extTrainer"


def with_trainer_folder(current: str | None) -> str:
    """A value for nnUNet_extTrainer: the folders of ``current`` (the user's, kept first) plus
    this package's trainer folder, listed once."""
    folders = [folder for folder in (current or "").split(os.pathsep) if folder]
    if EXT_TRAINER_DIR not in folders:
        folders.append(EXT_TRAINER_DIR)
    return os.pathsep.join(folders)
