"""The one JSON writer of the package: strict and atomic.

Strict: nnU-Net's ``summary.json`` holds bare ``NaN`` tokens, which ``json.loads`` in other
languages (and ``jq``) reject; here every undefined number (a Dice of an empty/empty pair, a rate
over no cases) is written as ``null``, numpy and torch scalars as plain numbers. Atomic: the text
goes to a hidden temporary name in the same folder (``user_files.temporary_name``, swept when a
run that was killed left it) and is renamed into place, so a reader sees the whole file or the
previous one. Files that nnU-Net itself reads (plans, splits) are written with its indent of 4.

User JSON is read with :func:`pu_nnunet.user_files.read_user_json` (one reader, errors naming the file).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# nnU-Net's save_json indent, for files nnU-Net reads (plans, splits_final.json)
NNUNET_INDENT = 4


def to_json_ready(value: Any) -> Any:
    """Nested dicts/lists with numpy scalars and NaN -> plain Python values, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(key): to_json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_ready(item) for item in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()  # numpy / torch scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_text(content: Any, indent: int = 2) -> str:
    """What :func:`write_json` writes (strict JSON, a final newline)."""
    return json.dumps(to_json_ready(content), indent=indent, allow_nan=False) + "\n"


def write_json(path: str | Path, content: Any, indent: int = 2) -> Path:
    """Writes ``content`` to ``path`` strictly and atomically (the folder is made if missing)."""
    from pu_nnunet.user_files import atomic_write_path

    path = Path(path)
    text = json_text(content, indent)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return path
