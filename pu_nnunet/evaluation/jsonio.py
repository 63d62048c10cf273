"""Strictly valid JSON for metrics files.

nnU-Net's ``summary.json`` holds bare ``NaN`` tokens, which ``json.loads`` in other languages
(and ``jq``) reject. Every undefined number here (Dice of an empty/empty pair, a rate over no
cases) is written as ``null``, and the writer refuses NaN/Infinity outright.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pu_nnunet.evaluation.errors import EvaluationError


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


def write_json(path: str | Path, content: Any) -> None:
    text = json.dumps(to_json_ready(content), indent=2, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def _reject_constant(token: str) -> None:
    raise ValueError(f"non-standard JSON token {token}")


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Reads strict JSON; a missing or malformed file is an EvaluationError naming it."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as error:
        raise EvaluationError(f"{what} {path} is not valid JSON: {error}") from None
