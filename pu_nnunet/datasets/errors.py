"""Errors a user can cause when converting or generating a dataset.

The command-line modules catch ``DatasetError`` and print its message (no traceback), so every
message names the file or folder at fault and says what is wrong with it.
"""

from __future__ import annotations

from pathlib import Path

from pu_nnunet.user_errors import UserInputError


class DatasetError(UserInputError):
    """Base class: the message is meant for the user as it stands."""


class EnvironmentNotSetError(DatasetError):
    """An nnU-Net environment variable (nnUNet_raw, nnUNet_preprocessed) is missing."""


class SourceLayoutError(DatasetError):
    """The source folder is missing, or is not laid out the way the public dataset is."""


class TargetExistsError(DatasetError):
    """The target dataset folder (or another one with the same id) already exists."""


class BadCaseError(DatasetError):
    """One case cannot be converted: unreadable file, size mismatch, unexpected mask values."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # exceptions with several constructor arguments do not pickle by default; workers send these back
        return (BadCaseError, (self.path, self.problem))
