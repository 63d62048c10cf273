"""The one exception prediction raises for bad input (unreadable image, empty folder, incomplete
model folder, wrong channel count, existing output), and how the command line reports it.

``cli_predict`` turns PredictionError into a one-line message and exit code 1; anything else
escaping the library is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any, Callable


class PredictionError(Exception):
    """Bad input to ``pu-nnunet predict``; the message names the file or folder at fault."""


def call_for_command_line(command: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any | None:
    """Runs ``function``; a PredictionError becomes one line on stderr and None is returned."""
    try:
        return function(*args, **kwargs)
    except PredictionError as error:
        print(f"pu-nnunet {command}: error: {error}", file=sys.stderr)
        return None
