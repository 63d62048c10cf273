"""The one exception robustness raises for bad input (``pu-nnunet robustness``, and the sweep
settings of ``study run --robustness``); the command line reports it
(pu_nnunet.user_errors.run_command) as one line naming the file or option."""

from pu_nnunet.user_errors import UserInputError

__all__ = ["RobustnessError"]


class RobustnessError(UserInputError):
    """Bad input to a robustness sweep: a missing folder, an unknown corruption, an unusable model."""
