"""``cases.json``: per-case class and split, for datasets whose cases fall into classes.

Format (shared with the evaluation): a JSON object mapping each case identifier (the image file
name without ``_0000.png``) to an object with at least ``"class"`` (e.g. "benign", "malignant",
"normal") and ``"split"`` ("train" or "test"); further keys (e.g. "source_files") are allowed.
The evaluation reads it (``pu_nnunet.evaluation.case_io.read_meta``, ``pu-nnunet evaluate --meta``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pu_nnunet.json_files import write_json

CASES_FILE_NAME = "cases.json"
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"


def write_cases_json(dataset_folder: Path, cases: dict[str, dict[str, Any]]) -> Path:
    for case, entry in cases.items():
        # the evaluation relies on these two keys: fail here rather than there
        if not isinstance(entry, dict) or "class" not in entry or entry.get("split") not in (TRAIN_SPLIT, TEST_SPLIT):
            raise ValueError(f"cases[{case!r}] must be an object with \"class\" and \"split\" "
                             f"({TRAIN_SPLIT!r} or {TEST_SPLIT!r}), got {entry!r}")
    return write_json(Path(dataset_folder) / CASES_FILE_NAME, dict(sorted(cases.items())))
