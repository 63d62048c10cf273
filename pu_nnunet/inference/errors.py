"""The one exception prediction raises for bad input (unreadable image, empty folder, incomplete
model folder, wrong channel count, existing output); the command line reports it
(pu_nnunet.user_errors.run_command).
"""

from pu_nnunet.user_errors import UserInputError

__all__ = ["PredictionError"]


class PredictionError(UserInputError):
    """Bad input to ``pu-nnunet predict``; the message names the file or folder at fault."""
