"""The output folder of ``evaluate`` and ``compare``: checked before any work, written all at once.

Results are written into a hidden folder inside OUT_DIR and moved into place at the end, so an
interrupted run (Ctrl-C, SIGTERM, a full disk) leaves the previous results as they were, and
``--overwrite`` replaces them only once the new ones are complete.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.user_errors import naming_the_path
from pu_nnunet.user_files import work_names

# a file that marks a folder as another pu-nnunet command's output (evaluate, compare, predict)
OUTPUT_MARKERS = {"metrics.json": "evaluate", "comparison.json": "compare", "plans.json": "predict"}
WORK_FOLDER_STEM = "outputs"


def check_output_dir(out_dir: Path, command: str, outputs: Sequence[str], overwrite: bool,
                     inputs: Mapping[str, Path | None]) -> None:
    """Refuses, before any work: an output path that is a file, an output folder that is one of
    the ``inputs`` (name -> folder) or holds another command's outputs, and existing results
    without ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise EvaluationError(f"{out_dir}: the output path is a file, expected a folder")
    for name, folder in inputs.items():
        if folder is not None and Path(folder).is_dir() and out_dir.resolve() == Path(folder).resolve():
            raise EvaluationError(f"{out_dir}: the output folder is the {name}; choose another output folder")
    if not out_dir.is_dir():
        return
    for marker, owner in OUTPUT_MARKERS.items():
        if owner != command and (out_dir / marker).exists():
            raise EvaluationError(f"{out_dir}: holds the output of pu-nnunet {owner} ({marker}); choose another "
                                  "output folder")
    existing = [name for name in outputs if (out_dir / name).exists()]
    if existing and not overwrite:
        raise EvaluationError(f"{out_dir}: the output folder already holds results ({', '.join(existing)}); "
                              "pass --overwrite to replace them")


@contextmanager
def replaced_outputs(out_dir: Path, outputs: Sequence[str]) -> Iterator[Path]:
    """Yields an empty hidden folder inside ``out_dir`` to write the outputs into. When the block
    ends without an error, each of ``outputs`` replaces its namesake in ``out_dir`` (earlier
    results of the same command are removed, other files are left alone); on any error,
    interruptions included, ``out_dir`` is left as it was."""
    out_dir.mkdir(parents=True, exist_ok=True)
    work, trash = work_names(out_dir, WORK_FOLDER_STEM)
    work.mkdir()
    try:
        with naming_the_path(out_dir):
            yield work
        _swap(out_dir, work, trash, outputs)
    finally:
        for folder in (work, trash):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)


def _swap(out_dir: Path, work: Path, trash: Path, outputs: Sequence[str]) -> None:
    """Renames only (same file system): old outputs aside, new ones in; undone if interrupted."""
    trash.mkdir()
    set_aside, moved_in = [], []
    try:
        for name in outputs:
            if (out_dir / name).exists():
                (out_dir / name).rename(trash / name)
                set_aside.append(name)
        for name in outputs:
            if (work / name).exists():
                (work / name).rename(out_dir / name)
                moved_in.append(name)
    except BaseException:
        for name in moved_in:
            (out_dir / name).rename(work / name)
        for name in set_aside:
            (trash / name).rename(out_dir / name)
        raise
