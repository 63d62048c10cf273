"""The one exception evaluation raises for bad input (missing folder, unreadable file, geometry
mismatch, existing results); the command line reports it (pu_nnunet.user_errors.run_command).
"""

from pu_nnunet.user_errors import UserInputError

__all__ = ["EvaluationError"]


class EvaluationError(UserInputError):
    """Bad input to ``evaluate`` or ``compare``; the message names the case or file."""
