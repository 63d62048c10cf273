"""pu-nnunet's trainers, re-exported for nnU-Net's external-trainer lookup.

nnU-Net imports every module of each folder in ``nnUNet_extTrainer`` as a top-level module.
This folder holds only this module, which hands nnU-Net the package's own classes.
"""

from pu_nnunet.trainers.pure_trainers import *  # noqa: F401,F403
