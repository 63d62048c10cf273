"""Errors a user causes and can fix (a missing folder, an unreadable file, existing results), and
how the ``pu-nnunet`` subcommands report them.

Each part raises its own subclass (``DatasetError``, ``EvaluationError``, ``PredictionError``)
whose message names the file, folder or case at fault. The command line prints it as one line
and exits 1; anything else escaping the library is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable


class UserInputError(Exception):
    """Bad input; the message is meant for the user as it stands."""


def call_for_command_line(command: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any | None:
    """Runs ``function``; warnings become one line each on stderr, a UserInputError a one-line
    error. Returns the function's value, or None after a UserInputError."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = function(*args, **kwargs)
        except UserInputError as error:
            result, failure = None, error
        else:
            failure = None
    for warning in caught:
        print(f"pu-nnunet {command}: warning: {warning.message}", file=sys.stderr)
    if failure is not None:
        print(f"pu-nnunet {command}: error: {failure}", file=sys.stderr)
    return result
