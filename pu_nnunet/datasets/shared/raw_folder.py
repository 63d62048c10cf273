"""Where a dataset goes in nnUNet_raw, and writing it there all at once.

A dataset is built in a hidden sibling folder and renamed into place at the end, so an interrupted
run never leaves a half-written ``DatasetIII_Name`` that nnU-Net would pick up. Ctrl-C and SIGTERM
remove that folder on the way out; one left by a run killed outright (SIGKILL, power loss) is
removed, with a warning, by the next run writing to the same nnUNet_raw.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pu_nnunet.datasets.errors import DatasetError, EnvironmentNotSetError, TargetExistsError
from pu_nnunet.user_errors import naming_the_path
from pu_nnunet.user_files import work_names

NNUNET_RAW_ENV = "nnUNet_raw"
NNUNET_PREPROCESSED_ENV = "nnUNet_preprocessed"
# nnU-Net names datasets with a three-digit id (Dataset%03d_Name), so ids run from 1 to 999
MIN_DATASET_ID = 1
MAX_DATASET_ID = 999
# letters, digits, '-' and '_': the name becomes part of folder names and nnU-Net's result paths
DATASET_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def folder_from_environment(variable: str) -> Path:
    """The folder an nnU-Net environment variable names, read now (not at import time)."""
    value = os.environ.get(variable)
    if not value:
        raise EnvironmentNotSetError(
            f"the environment variable {variable} is not set; set it to nnU-Net's {variable} folder, "
            f"e.g. export {variable}=/data/{variable}"
        )
    return Path(value)


def raw_root_from_environment() -> Path:
    return folder_from_environment(NNUNET_RAW_ENV)


def dataset_id_prefix(dataset_id: int) -> str:
    """How every folder of dataset ``dataset_id`` starts, e.g. 5 -> "Dataset005_" (nnU-Net's look-up key)."""
    return f"Dataset{int(dataset_id):03d}_"


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name for a dataset, e.g. (5, "BUSI") -> "Dataset005_BUSI"."""
    if not MIN_DATASET_ID <= int(dataset_id) <= MAX_DATASET_ID:
        raise DatasetError(f"dataset id {dataset_id} is out of range: nnU-Net ids run from "
                           f"{MIN_DATASET_ID} to {MAX_DATASET_ID}")
    if not DATASET_NAME_PATTERN.match(name):
        raise DatasetError(f"dataset name {name!r} is not usable: use letters, digits, '-' and '_' "
                           f"(starting with a letter or digit)")
    return dataset_id_prefix(dataset_id) + name


def _same_id_folders(raw_root: Path, dataset_id: int) -> list[Path]:
    prefix = dataset_id_prefix(dataset_id)
    if not raw_root.is_dir():
        return []
    return sorted(p for p in raw_root.iterdir() if p.is_dir() and p.name.startswith(prefix))


def check_target_free(raw_root: str | Path, dataset_id: int, name: str, overwrite: bool) -> Path:
    """The target folder; refuses an existing one unless overwrite, and always refuses a second
    dataset with the same id (nnU-Net could no longer tell which one ``-d ID`` means)."""
    raw_root = Path(raw_root)
    target = raw_root / dataset_folder_name(dataset_id, name)
    for existing in _same_id_folders(raw_root, dataset_id):
        if existing.name != target.name:
            raise TargetExistsError(
                f"{existing} already uses dataset id {dataset_id}; nnU-Net needs ids to be unique. "
                f"Choose another id with -d, or remove that folder first")
    if target.exists() and not overwrite:
        raise TargetExistsError(f"{target} already exists; pass --overwrite (overwrite=True) to replace it")
    return target


def check_source_outside_target(source: str | Path, raw_root: str | Path, dataset_id: int, name: str) -> None:
    """Refuses a source folder that is, or lies inside, the dataset folder it would be written to
    (replacing the target would delete the source)."""
    source = Path(source).resolve()
    target = (Path(raw_root) / dataset_folder_name(dataset_id, name)).resolve()
    if source == target or target in source.parents:
        raise DatasetError(f"{source}: the source folder lies inside the target {target}; convert from the "
                           "original download into another dataset folder")


@contextmanager
def atomic_dataset_folder(raw_root: str | Path, dataset_id: int, name: str, overwrite: bool = False,
                          source: str | Path | None = None) -> Iterator[Path]:
    """Yields an empty temporary folder; on success it replaces ``raw_root/DatasetIII_name``.

    On any exception (Ctrl-C and SIGTERM included) the temporary folder is removed and an
    existing target is left untouched. ``source``: the folder converted from, refused when it
    lies inside the target.
    """
    raw_root = Path(raw_root)
    if source is not None:
        check_source_outside_target(source, raw_root, dataset_id, name)
    target = check_target_free(raw_root, dataset_id, name, overwrite)
    if raw_root.exists() and not raw_root.is_dir():
        raise DatasetError(f"{raw_root}: nnUNet_raw is a file, expected a folder")
    raw_root.mkdir(parents=True, exist_ok=True)
    # hidden names: nnU-Net's "Dataset%03d_" look-up does not see them while they are written
    work, trash = work_names(raw_root, target.name)
    work.mkdir()
    try:
        with naming_the_path(work):
            yield work
        # checked again: another run may have created the target meanwhile
        check_target_free(raw_root, dataset_id, name, overwrite)
        if target.exists():
            target.rename(trash)
        work.rename(target)
    finally:
        if trash.exists() and not target.exists():  # interrupted between the two renames
            trash.rename(target)
        for folder in (work, trash):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)


def make_raw_layout(folder: Path, with_test_images: bool, with_test_labels: bool) -> dict[str, Path]:
    """Creates nnU-Net's raw sub-folders and returns them by name."""
    names = ["imagesTr", "labelsTr"]
    if with_test_images:
        names.append("imagesTs")
    if with_test_labels:
        names.append("labelsTs")
    folders = {n: folder / n for n in names}
    for path in folders.values():
        path.mkdir(parents=True, exist_ok=True)
    return folders
