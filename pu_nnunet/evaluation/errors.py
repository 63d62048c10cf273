"""The one exception evaluation raises for bad input (missing folder, unreadable file, geometry
mismatch, existing results), and how the command line reports it and warnings.
"""

from pu_nnunet.user_errors import UserInputError, call_for_command_line

__all__ = ["EvaluationError", "call_for_command_line"]


class EvaluationError(UserInputError):
    """Bad input to ``evaluate`` or ``compare``; the message names the case or file."""
