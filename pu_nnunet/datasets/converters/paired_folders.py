"""Datasets of 2D photographs and masks in two folders, paired by name (Kvasir-SEG's shape).

A :class:`PairedFolderSpec` says everything that differs between such datasets; one converter
(:func:`convert_paired_folders`) does the rest with the shared pieces: files found in any spelling
of their endings, masks thresholded or checked binary, orphans named as bad cases, an atomic
dataset folder, a seeded hold-out split or 5-fold cross-validation. A new dataset of this shape is
a spec and one line in pu_nnunet/datasets/converters/registry.py. This module imports only the
standard library at import time, so the command line lists converters without loading images code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pu_nnunet.datasets.shared.splits import NNUNET_SPLIT_SEED


@dataclass(frozen=True)
class PairedFolderSpec:
    title: str                  # as messages name it: "Kvasir-SEG"
    default_name: str           # DatasetIII_<default_name>
    images_folder: str          # relative to the source folder
    masks_folder: str           # the mask of images/NAME.ext is masks/NAME with any image ending
    image_suffix: str           # the ending named in messages about a missing image
    mask_format: str            # "jpeg": thresholded (lossy masks); "png": must be binary already
    foreground: str             # dataset.json's name of label 1
    validation_fraction: float  # the seeded hold-out's share of the cases
    holdout_name: str           # how the hold-out split is named in dataset.json ("880/120 train/val")
    description: str            # dataset.json's description, before the split
    reference: str              # where the dataset comes from


def convert_paired_folders(spec: PairedFolderSpec, source_dir: str | Path, dataset_id: int, name: str | None = None,
                           raw_root: str | Path | None = None, overwrite: bool = False, skip_bad: bool = False,
                           num_processes: int = 1, seed: int = NNUNET_SPLIT_SEED, five_fold: bool = False):
    """Writes ``raw_root/DatasetIII_name`` (raw_root defaults to $nnUNet_raw) from ``spec``'s layout.
    All cases go to imagesTr/labelsTr; the split file holds the seeded hold-out (or 5 folds): no test
    folder, fold 0's validation cases are the held-out set."""
    from pu_nnunet.datasets.converters.rgb_pairs import RGB_CHANNEL_NAMES, convert_rgb_pair, pair_job, \
        write_binary_dataset_json
    from pu_nnunet.datasets.errors import SourceLayoutError
    from pu_nnunet.datasets.shared.conversion import ConversionSummary, orphan_job, require_source, run_cases, timer
    from pu_nnunet.datasets.shared.raw_folder import (atomic_dataset_folder, dataset_folder_name, make_raw_layout,
                                                      raw_root_from_environment)
    from pu_nnunet.datasets.shared.source_files import SkippedFiles, images_by_stem, orientation_notes
    from pu_nnunet.datasets.shared.splits import check_seed, cross_validation_splits, holdout_split, write_splits

    elapsed = timer()
    name = name or spec.default_name
    check_seed(seed)
    raw_root = Path(raw_root) if raw_root is not None else raw_root_from_environment()
    source = require_source(source_dir, [spec.images_folder, spec.masks_folder], spec.title)
    left_out = SkippedFiles()
    images = images_by_stem(source / spec.images_folder, source, left_out)
    masks = images_by_stem(source / spec.masks_folder, source, left_out)
    if not images:
        raise SourceLayoutError(f"{source / spec.images_folder}: no images found (NAME{spec.image_suffix})")
    # a missing mask is named by the worker
    jobs = [pair_job(case, "Tr", path, masks.get(case, source / spec.masks_folder / path.name), spec.mask_format)
            for case, path in sorted(images.items())]
    jobs += [orphan_job(case, "Tr", path, source / spec.images_folder / f"{case}{spec.image_suffix}", "mask")
             for case, path in sorted(masks.items()) if case not in images]
    with atomic_dataset_folder(raw_root, dataset_id, name, overwrite, source) as work:
        make_raw_layout(work, with_test_images=False, with_test_labels=False)
        results, skipped = run_cases(convert_rgb_pair, jobs, work, num_processes, skip_bad, spec.title)
        cases = sorted(results)
        if five_fold:
            splits = cross_validation_splits(cases, seed=seed)
        else:
            splits = holdout_split(cases, max(1, round(spec.validation_fraction * len(cases))), seed)
        write_splits(work, splits)
        split_text = "seeded 5-fold" if five_fold else f"seeded {spec.holdout_name}"
        write_binary_dataset_json(work, RGB_CHANNEL_NAMES, spec.foreground, len(cases), 0, name, spec.reference,
                                  f"{spec.description}; split in splits_final.json ({split_text}, seed {seed})")
    notes = [f"split: {'5-fold cross-validation' if five_fold else 'one train/validation fold'} "
             f"({len(splits[0]['train'])} train / {len(splits[0]['val'])} val in fold 0), seed {seed}"]
    notes += left_out.summary() + orientation_notes(results)
    return ConversionSummary(dataset_id, raw_root / dataset_folder_name(dataset_id, name), len(cases), 0,
                             elapsed(), skipped, notes)
