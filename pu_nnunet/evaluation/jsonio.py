"""JSON of the evaluation: the package's one writer (:mod:`pu_nnunet.json_files`, strict and
atomic) and its reader of metrics files, whose errors are EvaluationErrors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.json_files import to_json_ready, write_json  # noqa: F401 (re-exported)
from pu_nnunet.user_files import read_user_json


def read_json(path: str | Path, what: str = "JSON file", expected_type: type | None = None) -> Any:
    """Reads strict JSON; a missing or malformed file is an EvaluationError naming it."""
    return read_user_json(path, what, expected_type, error=EvaluationError)
