"""The one exception ``pu-nnunet robustness`` raises for bad input; the command line reports it
(pu_nnunet.user_errors.run_command) as one line naming the file or option."""

from pu_nnunet.user_errors import UserInputError

__all__ = ["RobustnessError"]


class RobustnessError(UserInputError):
    """Bad input to ``robustness``: a missing folder, an unknown corruption, an unusable model."""
