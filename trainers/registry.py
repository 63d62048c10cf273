"""The one way to find a trainer by name, for every command: nnU-Net's own lookup.

``nnUNetv2_train -tr NAME`` finds a trainer with ``recursive_find_trainer_class_by_name``: nnU-Net's
trainer folder, then the folders of ``nnUNet_extTrainer``. Every pu-nnunet command that takes a
trainer name (study, transfer-weights, predict through nnU-Net's predictor, export-model) asks
:func:`find_trainer_class`, which is that lookup with this package's trainer folder listed, so they
accept exactly the trainers ``nnUNetv2_train`` accepts, including a user's trainer made by
assignment (``MyTrainer = make_variant(...)``) that no source-reading check could see.

This package's trainers are answered first, from :func:`pu_trainer_classes` (the same classes
nnU-Net's lookup returns, without its import of every module in its own trainer folder, seconds on
a small CPU); nnU-Net has no trainer of these names.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Iterator, Optional

from pu_nnunet.trainers import EXT_TRAINER_VARIABLE, with_trainer_folder


def pu_trainer_classes() -> dict[str, type]:
    """Every trainer this package defines, by name (``pure_trainers.__all__`` is computed from
    the module, so a new class is registered by being written)."""
    from pu_nnunet.trainers import pure_trainers

    return {name: getattr(pure_trainers, name) for name in pure_trainers.__all__}


@contextlib.contextmanager
def trainer_lookup_path() -> Iterator[None]:
    """While nnU-Net looks a trainer up, ``nnUNet_extTrainer`` lists this package's trainer folder
    (the user's folders kept first); afterwards the variable is as it was."""
    before = os.environ.get(EXT_TRAINER_VARIABLE)
    os.environ[EXT_TRAINER_VARIABLE] = with_trainer_folder(before)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(EXT_TRAINER_VARIABLE, None)
        else:
            os.environ[EXT_TRAINER_VARIABLE] = before


def nnunet_lookup(name: str) -> type:
    """nnU-Net's own ``recursive_find_trainer_class_by_name`` (its narration on stdout kept
    quiet); raises RuntimeError or AssertionError as nnU-Net does."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    with contextlib.redirect_stdout(io.StringIO()), trainer_lookup_path():
        return recursive_find_trainer_class_by_name(name)


def find_trainer_class(name: str) -> Optional[type]:
    """The trainer class ``nnUNetv2_train -tr name`` would use, or None when nnU-Net finds none
    (or what it finds is no nnUNetTrainer)."""
    ours = pu_trainer_classes().get(name)
    if ours is not None:
        return ours
    try:
        return nnunet_lookup(name)
    except (RuntimeError, AssertionError, TypeError):
        return None
