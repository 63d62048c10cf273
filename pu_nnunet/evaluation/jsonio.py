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
from pu_nnunet.user_files import read_user_json


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


def read_json(path: str | Path, what: str = "JSON file", expected_type: type | None = None) -> Any:
    """Reads strict JSON; a missing or malformed file is an EvaluationError naming it."""
    return read_user_json(path, what, expected_type, error=EvaluationError)
