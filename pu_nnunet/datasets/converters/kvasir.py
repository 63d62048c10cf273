"""Kvasir-SEG (Jha et al., MMM 2020): 1000 colonoscopy images with polyp masks.

Source layout: ``images/NAME.jpg`` and ``masks/NAME.jpg`` (JPEG masks, so not exactly binary:
they are thresholded; any image ending and spelling is accepted, ``.JPG``, ``.jpeg``, ``.png``). All cases go to imagesTr/labelsTr; the split file holds a seeded random
880/120 train/validation split (the proportions most papers use; the file lists some papers
publish are not reproduced), or with ``five_fold`` a seeded 5-fold cross-validation. No test
folder: fold 0's validation cases are the held-out set.
"""

from __future__ import annotations

from pathlib import Path

from pu_nnunet.datasets.shared.conversion import ConversionSummary, orphan_job, require_source, run_cases, timer
from pu_nnunet.datasets.errors import SourceLayoutError
from pu_nnunet.datasets.shared.raw_folder import (atomic_dataset_folder, dataset_folder_name, make_raw_layout,
                                           raw_root_from_environment)
from pu_nnunet.datasets.converters.rgb_pairs import RGB_CHANNEL_NAMES, convert_rgb_pair, pair_job, write_binary_dataset_json
from pu_nnunet.datasets.shared.source_files import SkippedFiles, images_by_stem, orientation_notes
from pu_nnunet.datasets.shared.splits import check_seed, cross_validation_splits, holdout_split, write_splits

IMAGES_FOLDER = "images"
MASKS_FOLDER = "masks"
IMAGE_SUFFIX = ".jpg"
# 120 of 1000 cases for validation: the 880/120 proportions most Kvasir-SEG papers use
VALIDATION_FRACTION = 0.12
REFERENCE = "https://datasets.simula.no/kvasir-seg/"


def convert_kvasir(source_dir: str | Path, dataset_id: int, name: str = "KvasirSEG",
                   raw_root: str | Path | None = None, overwrite: bool = False, skip_bad: bool = False,
                   num_processes: int = 1, seed: int = 0, five_fold: bool = False) -> ConversionSummary:
    """Writes ``raw_root/DatasetIII_name`` (raw_root defaults to $nnUNet_raw) from a Kvasir-SEG folder."""
    elapsed = timer()
    check_seed(seed)
    raw_root = Path(raw_root) if raw_root is not None else raw_root_from_environment()
    source = require_source(source_dir, [IMAGES_FOLDER, MASKS_FOLDER], "Kvasir-SEG")
    left_out = SkippedFiles()
    images = images_by_stem(source / IMAGES_FOLDER, source, left_out)
    masks = images_by_stem(source / MASKS_FOLDER, source, left_out)
    if not images:
        raise SourceLayoutError(f"{source / IMAGES_FOLDER}: no images found (NAME.jpg)")
    # the mask of NAME.jpg is masks/NAME with any image ending; a missing one is named by the worker
    jobs = [pair_job(name, "Tr", path, masks.get(name, source / MASKS_FOLDER / path.name), "jpeg")
            for name, path in sorted(images.items())]
    jobs += [orphan_job(name, "Tr", path, source / IMAGES_FOLDER / f"{name}{IMAGE_SUFFIX}", "mask")
             for name, path in sorted(masks.items()) if name not in images]
    with atomic_dataset_folder(raw_root, dataset_id, name, overwrite, source) as work:
        make_raw_layout(work, with_test_images=False, with_test_labels=False)
        results, skipped = run_cases(convert_rgb_pair, jobs, work, num_processes, skip_bad, "Kvasir-SEG")
        cases = sorted(results)
        if five_fold:
            splits = cross_validation_splits(cases, seed=seed)
        else:
            splits = holdout_split(cases, max(1, round(VALIDATION_FRACTION * len(cases))), seed)
        write_splits(work, splits)
        write_binary_dataset_json(work, RGB_CHANNEL_NAMES, "polyp", len(cases), 0, name, REFERENCE,
                                  "Kvasir-SEG polyp segmentation; split in splits_final.json "
                                  f"({'seeded 5-fold' if five_fold else 'seeded 880/120 train/val'}, seed {seed})")
    notes = [f"split: {'5-fold cross-validation' if five_fold else 'one train/validation fold'} "
             f"({len(splits[0]['train'])} train / {len(splits[0]['val'])} val in fold 0), seed {seed}"]
    notes += left_out.summary() + orientation_notes(results)
    return ConversionSummary(dataset_id, raw_root / dataset_folder_name(dataset_id, name), len(cases), 0,
                             elapsed(), skipped, notes)
