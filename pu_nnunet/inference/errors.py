"""The one exception prediction raises for bad input (unreadable image, empty folder, incomplete
model folder, wrong channel count, existing output), and how the command line reports it.
"""

from pu_nnunet.user_errors import UserInputError, call_for_command_line

__all__ = ["PredictionError", "call_for_command_line"]


class PredictionError(UserInputError):
    """Bad input to ``pu-nnunet predict``; the message names the file or folder at fault."""
