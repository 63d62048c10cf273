"""Train/validation splits: building them (seeded), writing ``splits_final.json``, installing it.

The one writer of split files is :func:`write_splits` (strict, atomic, nnU-Net's indent), and every
split takes its seed from the caller, by default :data:`NNUNET_SPLIT_SEED`. The synthetic
generators are the exception by design: their ``--seed`` makes the images and (ultrasound) the
splits, so one number reproduces a whole dataset.

nnU-Net reads custom splits from ``nnUNet_preprocessed/DatasetIII_Name/splits_final.json`` (a list of
``{"train": [...], "val": [...]}``, one entry per fold). That folder only exists once
``nnUNetv2_plan_and_preprocess`` has run, so converters write the file into the raw dataset folder and
``install_splits`` (``pu-nnunet convert install-splits -d ID``) copies it over after planning.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from pu_nnunet.datasets.errors import DatasetError, SourceLayoutError
from pu_nnunet.datasets.shared.raw_folder import (NNUNET_PREPROCESSED_ENV, dataset_id_prefix,
                                                  folder_from_environment, raw_root_from_environment)
from pu_nnunet.json_files import NNUNET_INDENT, write_json
from pu_nnunet.user_files import atomic_write_path, read_splits, read_user_json, sweep_stale_temporaries

SPLITS_FILE_NAME = "splits_final.json"
# the seed nnU-Net itself uses for its default 5-fold split (nnUNetTrainer.do_split); the one default
# seed of every split this package writes (converters' --seed, the study's split of a dataset that
# has none), so a default 5-fold split is the one nnU-Net would make
NNUNET_SPLIT_SEED = 12345
DEFAULT_NUM_FOLDS = 5

Split = dict[str, list[str]]


def check_seed(seed: int) -> None:
    """numpy's generators take seeds >= 0; checked before any work (a negative one would fail
    only once the cases are written)."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"--seed must be a whole number >= 0, got {seed}")


def cross_validation_splits(identifiers: list[str], num_folds: int = DEFAULT_NUM_FOLDS,
                            seed: int = NNUNET_SPLIT_SEED) -> list[Split]:
    """nnU-Net's own k-fold split (same function, same sorted order), with fewer folds when there
    are fewer cases than folds. With the default seed this equals what nnU-Net would create."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    keys = sorted(identifiers)
    if len(keys) < 2:
        raise DatasetError(f"a cross-validation split needs at least 2 training cases, got {len(keys)}")
    splits = generate_crossval_split(keys, seed=seed, n_splits=min(num_folds, len(keys)))
    return [{"train": [str(k) for k in s["train"]], "val": [str(k) for k in s["val"]]} for s in splits]


def holdout_split(identifiers: list[str], num_val: int, seed: int = NNUNET_SPLIT_SEED) -> list[Split]:
    """One fold: a seeded random ``num_val`` cases for validation, the rest for training."""
    keys = sorted(identifiers)
    if not 0 < num_val < len(keys):
        raise DatasetError(f"cannot hold out {num_val} of {len(keys)} cases for validation")
    order = np.random.default_rng(seed).permutation(len(keys))
    val = sorted(keys[i] for i in order[:num_val])
    return [{"train": [k for k in keys if k not in set(val)], "val": val}]


def _groups_by_class(identifiers: list[str], classes: dict[str, str],
                     groups: dict[str, str] | None) -> dict[str, list[list[str]]]:
    """Cases bundled into groups that must stay together (e.g. duplicate images), per class.

    A group's class is that of its first member (sorted), so a mixed-class duplicate group is
    stratified once, as a whole."""
    members: dict[str, list[str]] = defaultdict(list)
    for case in sorted(identifiers):
        members[groups.get(case, case) if groups else case].append(case)
    by_class: dict[str, list[list[str]]] = defaultdict(list)
    for group in sorted(members.values()):
        by_class[classes[group[0]]].append(group)
    return by_class


def _per_class_targets(class_sizes: dict[str, int], total: int) -> dict[str, int]:
    """How many cases of each class to hold out: ``total`` shared in proportion to class size
    (largest remainder), at least one of every class with two or more cases, never a whole class."""
    eligible = {c: n for c, n in class_sizes.items() if n >= 2}
    everyone = sum(class_sizes.values())
    exact = {c: total * n / everyone for c, n in eligible.items()}
    targets = {c: max(1, int(exact[c])) for c in eligible}
    while sum(targets.values()) < total:
        room = [c for c in eligible if targets[c] < eligible[c] - 1]
        if not room:
            break
        best = max(room, key=lambda c: (exact[c] - targets[c], c))
        targets[best] += 1
    while sum(targets.values()) > total:
        reducible = [c for c in targets if targets[c] > 1]
        if not reducible:
            break
        targets[max(reducible, key=lambda c: (targets[c] - exact[c], c))] -= 1
    return targets


def stratified_holdout(identifiers: list[str], classes: dict[str, str], fraction: float,
                       seed: int = NNUNET_SPLIT_SEED,
                       groups: dict[str, str] | None = None,
                       num_held_out: int | None = None) -> tuple[list[str], list[str]]:
    """Seeded (rest, held_out) split holding out ``fraction`` of the cases (or exactly
    ``num_held_out``) stratified by class: at least one case of each class that has two or more,
    and each group (``groups[case]`` = group key, e.g. duplicates) kept on one side."""
    if not 0.0 < fraction < 1.0:
        raise DatasetError(f"the held-out fraction must lie between 0 and 1, got {fraction}")
    total = num_held_out if num_held_out is not None else int(round(fraction * len(identifiers)))
    by_class = _groups_by_class(identifiers, classes, groups)
    targets = _per_class_targets({c: sum(len(g) for g in gs) for c, gs in by_class.items()}, total)
    rng = np.random.default_rng(seed)
    held_out: list[str] = []
    for cls, class_groups in sorted(by_class.items()):
        wanted = targets.get(cls, 0)
        chosen = 0
        for index in rng.permutation(len(class_groups)):
            if chosen == wanted:
                break
            group = class_groups[index]
            if chosen + len(group) <= wanted:
                held_out.extend(group)
                chosen += len(group)
        if wanted and not chosen:
            # every group of this class is larger than its share: take the smallest one
            held_out.extend(min(class_groups, key=len))
    held = set(held_out)
    return sorted(c for c in identifiers if c not in held), sorted(held)


def stratified_group_folds(identifiers: list[str], classes: dict[str, str], seed: int = NNUNET_SPLIT_SEED,
                           num_folds: int = DEFAULT_NUM_FOLDS,
                           groups: dict[str, str] | None = None) -> list[Split]:
    """Seeded k folds with every class spread evenly over the folds and each group in one fold."""
    by_class = _groups_by_class(identifiers, classes, groups)
    num_groups = sum(len(g) for g in by_class.values())
    num_folds = min(num_folds, num_groups)
    if num_folds < 2:
        raise DatasetError(f"a cross-validation split needs at least 2 training cases, got {num_groups}")
    rng = np.random.default_rng(seed)
    fold_members: list[list[str]] = [[] for _ in range(num_folds)]
    for cls, class_groups in sorted(by_class.items()):
        class_count = [0] * num_folds
        shuffled = [class_groups[i] for i in rng.permutation(len(class_groups))]
        # largest groups first, so the small ones can even the folds out afterwards
        for group in sorted(shuffled, key=len, reverse=True):
            fold = min(range(num_folds), key=lambda f: (class_count[f], len(fold_members[f])))
            fold_members[fold].extend(group)
            class_count[fold] += len(group)
    everyone = sorted(identifiers)
    splits = []
    for members in fold_members:
        val = set(members)
        splits.append({"train": [c for c in everyone if c not in val], "val": sorted(val)})
    return splits


def write_splits(dataset_folder: Path, splits: list[Split]) -> Path:
    """The package's one writer of ``splits_final.json`` (into a raw dataset folder, or a
    preprocessed one: nnU-Net reads it, so its indent)."""
    return write_json(Path(dataset_folder) / SPLITS_FILE_NAME, splits, indent=NNUNET_INDENT)


def install_command(dataset_folder: Path) -> str:
    """The shell command that does what ``install_splits`` does, for printing after a conversion."""
    return (f'cp "{Path(dataset_folder) / SPLITS_FILE_NAME}" '
            f'"${NNUNET_PREPROCESSED_ENV}/{Path(dataset_folder).name}/{SPLITS_FILE_NAME}"')


def find_raw_dataset(raw_root: Path, dataset_id: int) -> Path:
    prefix = dataset_id_prefix(dataset_id)
    found = sorted(p for p in Path(raw_root).glob(prefix + "*") if p.is_dir())
    if len(found) != 1:
        problem = "no folder" if not found else f"{len(found)} folders ({', '.join(p.name for p in found)})"
        raise SourceLayoutError(f"{raw_root}: found {problem} named {prefix}*; expected exactly one")
    return found[0]


def install_splits(dataset_id: int, raw_root: str | Path | None = None,
                   preprocessed_root: str | Path | None = None) -> Path:
    """Copies the raw dataset's ``splits_final.json`` to ``nnUNet_preprocessed/DatasetIII_Name/``.

    Run after ``nnUNetv2_plan_and_preprocess`` (which creates that folder) and before training.
    Roots default to the environment variables, read at call time. Returns the written file."""
    raw_root = Path(raw_root) if raw_root is not None else raw_root_from_environment()
    preprocessed_root = (Path(preprocessed_root) if preprocessed_root is not None
                         else folder_from_environment(NNUNET_PREPROCESSED_ENV))
    raw_folder = find_raw_dataset(raw_root, dataset_id)
    source = raw_folder / SPLITS_FILE_NAME
    if not source.is_file():
        raise SourceLayoutError(f"{source} does not exist; this dataset was not written by pu-nnunet "
                                f"convert/synth (nnU-Net will make its own 5-fold split)")
    target_folder = preprocessed_root / raw_folder.name
    if not target_folder.is_dir():
        raise SourceLayoutError(f"{target_folder} does not exist; run nnUNetv2_plan_and_preprocess -d "
                                f"{int(dataset_id)} first")
    dataset_json = read_user_json(raw_folder / "dataset.json", "dataset.json", dict, DatasetError)
    ending = dataset_json.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise DatasetError(f"{raw_folder / 'dataset.json'}: file_ending must be text like \".nii.gz\", "
                           f"found {ending!r}")
    training = {p.name[: -len(ending)] for p in (raw_folder / "labelsTr").glob("*" + ending)}
    splits = read_splits(source, DatasetError)
    unknown = sorted({c for s in splits for c in s["train"] + s["val"]} - training)
    if unknown:
        raise DatasetError(f"{source} names cases that are not in {raw_folder / 'labelsTr'}: "
                           f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    target = target_folder / SPLITS_FILE_NAME
    sweep_stale_temporaries(target_folder)
    with atomic_write_path(target) as temporary:  # a training starting now reads the old file or the new
        shutil.copyfile(source, temporary)
    return target
