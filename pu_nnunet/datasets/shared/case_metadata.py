"""``cases.json``: per-case class and split, for datasets whose cases fall into classes.

Format (shared with the evaluation): a JSON object mapping each case identifier (the image file
name without ``_0000.png``) to an object with at least ``"class"`` (e.g. "benign", "malignant",
"normal") and ``"split"`` ("train" or "test"); further keys (e.g. "source_files") are allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CASES_FILE_NAME = "cases.json"
TRAIN_SPLIT = "train"
TEST_SPLIT = "test"


def write_cases_json(dataset_folder: Path, cases: dict[str, dict[str, Any]]) -> Path:
    for case, entry in cases.items():
        # the evaluation relies on these two keys: fail here rather than there
        assert "class" in entry and entry.get("split") in (TRAIN_SPLIT, TEST_SPLIT), f"{case}: {entry}"
    path = Path(dataset_folder) / CASES_FILE_NAME
    path.write_text(json.dumps(dict(sorted(cases.items())), indent=1))
    return path


def read_cases_json(dataset_folder: Path) -> dict[str, dict[str, Any]]:
    return json.loads((Path(dataset_folder) / CASES_FILE_NAME).read_text())
