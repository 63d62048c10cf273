"""The one exception ``pu-nnunet export-model`` raises for bad input; the command line reports it
(pu_nnunet.user_errors.run_command)."""

from pu_nnunet.user_errors import UserInputError

__all__ = ["ExportError"]


class ExportError(UserInputError):
    """A model folder or output that ``pu-nnunet export-model`` cannot use; the message names it."""
