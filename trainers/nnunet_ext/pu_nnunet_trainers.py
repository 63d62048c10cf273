"""pu-nnunet's trainers, re-exported for nnU-Net's external-trainer lookup.

nnU-Net imports every module of each folder in ``nnUNet_extTrainer`` as a top-level module.
This folder holds only this module, which hands nnU-Net the package's own classes.

A model zip or an ``nnUNet_extTrainer`` setting can reach a Python without pu-nnunet. nnU-Net's
lookup skips a module only when the module itself cannot be found and re-raises any other import
error with its traceback, so a missing package surfaces here: as one ImportError that says what
to install instead of a bare ``ModuleNotFoundError: No module named 'pu_nnunet'``.
"""

try:
    import pu_nnunet  # noqa: F401
except ImportError:
    # ImportError, not ModuleNotFoundError: nnU-Net's lookup would skip the latter silently
    # and then only report that the trainer cannot be found
    raise ImportError("nnUNet_extTrainer lists pu-nnunet's trainer folder, but this Python cannot import pu_nnunet: "
                      "run `pip install pu-nnunet` in the environment that runs nnU-Net") from None

from pu_nnunet.trainers.pure_trainers import *  # noqa: F401,F403,E402
