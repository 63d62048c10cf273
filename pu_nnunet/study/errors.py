"""The exception a study raises for bad input (a contradicting study.json, an unknown trainer,
a missing dataset); the ``pu-nnunet`` command line prints it as one line."""

from pu_nnunet.user_errors import UserInputError


class StudyError(UserInputError):
    """Bad input to ``pu-nnunet study``; the message names the file or the flag at fault."""
