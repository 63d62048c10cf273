"""nnU-Net trainers, found by nnU-Net through ``nnUNet_extTrainer`` (``pu-nnunet trainer-path``).

The trainer classes live in ``pu_nnunet.trainers.pure_trainers``; this package's import stays
free of torch and nnU-Net so that ``pu-nnunet trainer-path`` answers at once.
"""

import os

# the folder to list in nnUNet_extTrainer: it holds one re-export module, cheap to import
EXT_TRAINER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunet_ext")
