"""nnU-Net's final validation folder (``fold_F/validation``): finished, or not to be read.

nnU-Net writes the validation cases one by one and ``summary.json`` last; a training stopped in
between (a scheduler's signal, a time limit) leaves a folder of some cases and no, or an earlier,
summary. The trainers of pu-nnunet (trainers/preemption.py) write :data:`INCOMPLETE_MARKER` into
the folder before the validation starts and remove it once ``summary.json`` is written. Whoever
reads the folder as results (``evaluate``, a study's ``--held-out validation``, ``export-model``'s
card) asks :func:`validation_problem` first and refuses, or redoes the validation
(``nnUNetv2_train ... --val``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

INCOMPLETE_MARKER = ".validation_incomplete"
SUMMARY_FILE = "summary.json"  # nnU-Net writes it after the last case
# a fold folder of nnU-Net's results holds one of these
FOLD_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def mark_incomplete(folder: str | Path, why: str) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INCOMPLETE_MARKER).write_text(why + "\n")


def mark_complete(folder: str | Path) -> bool:
    """Removes the marker when ``summary.json`` is there; returns whether the folder is complete."""
    folder = Path(folder)
    if not (folder / SUMMARY_FILE).is_file():
        return False
    (folder / INCOMPLETE_MARKER).unlink(missing_ok=True)
    return True


def is_fold_validation(folder: str | Path) -> bool:
    """Whether ``folder`` is nnU-Net's ``fold_F/validation`` (beside a fold's checkpoint)."""
    folder = Path(folder)
    return folder.name == "validation" and any((folder.parent / name).is_file() for name in FOLD_CHECKPOINTS)


def validation_problem(folder: str | Path) -> Optional[str]:
    """Why ``folder`` is not a finished validation: the marker (stopped part-way), or a fold's
    validation folder without ``summary.json`` (killed part-way by an older trainer or nnU-Net's
    own). None for a finished one and for folders that are no validation."""
    folder = Path(folder)
    if (folder / INCOMPLETE_MARKER).exists():
        return (f"{folder}: nnU-Net's final validation was stopped part-way ({INCOMPLETE_MARKER}); finish it with "
                "nnUNetv2_train DATASET CONFIGURATION FOLD -tr TRAINER --val")
    if is_fold_validation(folder) and not (folder / SUMMARY_FILE).is_file():
        return (f"{folder}: nnU-Net's final validation did not finish (no {SUMMARY_FILE}); finish it with "
                "nnUNetv2_train DATASET CONFIGURATION FOLD -tr TRAINER --val")
    return None
