"""The one exception evaluation raises for bad input (missing folder, unreadable file, geometry
mismatch, existing results), and how the command line reports it and warnings.

The command-line modules turn EvaluationError into a one-line message and exit code 1; anything
else escaping the library is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable


class EvaluationError(Exception):
    """Bad input to ``evaluate`` or ``compare``; the message names the case or file."""


def call_for_command_line(command: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any | None:
    """Runs ``function``; warnings become one line each on stderr, EvaluationError a one-line
    error. Returns the function's value, or None after an EvaluationError."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = function(*args, **kwargs)
        except EvaluationError as error:
            result, failure = None, error
        else:
            failure = None
    for warning in caught:
        print(f"pu-nnunet {command}: warning: {warning.message}", file=sys.stderr)
    if failure is not None:
        print(f"pu-nnunet {command}: error: {failure}", file=sys.stderr)
    return result
