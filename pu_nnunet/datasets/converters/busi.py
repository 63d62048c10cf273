"""BUSI, Breast Ultrasound Images (Al-Dhabyani et al., Data in Brief 2020): 780 images in three
classes, benign, malignant and normal (normal images have empty masks).

Source layout: ``benign/``, ``malignant/``, ``normal/`` holding ``benign (N).png`` with its masks
``benign (N)_mask.png``, ``benign (N)_mask_1.png``, ... (several masks are merged by union).
Images are stored as one grayscale channel (RGB-encoded grayscale is detected). Cases are named
``benign_012``; ``cases.json`` records each case's class and split. BUSI has no official split:
a seeded test split stratified by class (every class, normal included, in the test set) goes to
imagesTs/labelsTs, and the training cases get a seeded 5-fold split stratified by class. Images
with exactly the same pixels are reported and kept on the same side of every split.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from pu_nnunet.datasets.shared.case_metadata import TEST_SPLIT, TRAIN_SPLIT, write_cases_json
from pu_nnunet.datasets.shared.conversion import (CaseJob, ConversionSummary, orphan_job, require_source, run_cases,
                                                  timer)
from pu_nnunet.datasets.errors import BadCaseError, SourceLayoutError
from pu_nnunet.datasets.shared.images_2d import (check_same_orientation, check_same_size, pixel_hash,
                                                 read_binary_jpeg_mask, read_binary_png_mask, read_grayscale,
                                                 write_png)
from pu_nnunet.datasets.shared.source_files import SkippedFiles, is_lossy, list_folder, orientation_notes
from pu_nnunet.datasets.shared.raw_folder import (atomic_dataset_folder, dataset_folder_name, make_raw_layout,
                                           raw_root_from_environment)
from pu_nnunet.datasets.shared.splits import (NNUNET_SPLIT_SEED, check_seed, stratified_group_folds,
                                              stratified_holdout, write_splits)

CLASSES = ("benign", "malignant", "normal")
NORMAL_CLASS = "normal"
# any spelling of the image endings (BUSI ships .png; re-saved copies are .PNG, .jpg, ...)
FILE_NAME = re.compile(r"^(?P<cls>benign|malignant|normal) \((?P<number>\d+)\)(?P<mask>_mask(?:_\d+)?)?"
                       r"\.(?:png|jpe?g|bmp|tiff?)$", re.IGNORECASE)
# 20 % test: the hold-out share most BUSI papers report (e.g. 80/20 or 70/10/20 splits)
DEFAULT_TEST_FRACTION = 0.2
PNG = ".png"
STAGING_FOLDER = "staging"
REFERENCE = "https://doi.org/10.1016/j.dib.2019.104863"


def case_identifier(cls: str, number: int) -> str:
    return f"{cls}_{number:03d}"


def _find_cases(source: Path) -> tuple[list[CaseJob], SkippedFiles]:
    """One job per image (sources: image, then its masks); also the files that were skipped."""
    jobs, ignored = [], SkippedFiles()
    for cls in CLASSES:
        images: dict[int, Path] = {}
        masks: dict[int, list[Path]] = defaultdict(list)
        for path in list_folder(source / cls):
            match = FILE_NAME.match(path.name)
            if not match or match.group("cls").lower() != cls:
                ignored.add(f"{cls}/{path.name}", f"file(s) not named like BUSI's '{cls} (N).png' / "
                                                  f"'{cls} (N)_mask.png'")
                continue
            number = int(match.group("number"))
            if match.group("mask"):
                masks[number].append(path)
            elif number in images:  # "benign (1).png" beside "benign (01).png"
                raise SourceLayoutError(f"{images[number]} and {path} both become case "
                                        f"{case_identifier(cls, number)}; remove or rename the duplicate")
            else:
                images[number] = path
        for number in sorted(set(masks) - set(images)):
            # a mask without its image: reported as a bad case so --skip-bad can pass over it
            expected = source / cls / f"{cls} ({number}){PNG}"
            orphan = orphan_job(case_identifier(cls, number), "", masks[number][0], expected, "mask")
            jobs.append(dataclasses.replace(orphan, extra={**orphan.extra, "class": cls}))
        for number, image in sorted(images.items()):
            jobs.append(CaseJob(case_identifier(cls, number), "", (str(image), *map(str, masks[number])),
                                {"class": cls}))
    return jobs, ignored


def convert_busi_case(job: CaseJob, out_folder: Path) -> dict:
    """Worker: checks and merges one case and writes it to the staging folder (its side of the
    split is only known once all duplicates are known)."""
    image_path, *mask_paths = job.sources
    if not mask_paths:
        raise BadCaseError(image_path, f"no mask file found (expected {Path(image_path).stem}_mask.png beside it)")
    orientation = check_same_orientation(image_path, mask_paths)
    image, was_colour = read_grayscale(image_path)
    merged = np.zeros(image.shape, dtype=np.uint8)
    for mask_path in mask_paths:
        mask = read_binary_jpeg_mask(mask_path) if is_lossy(mask_path) else read_binary_png_mask(mask_path)
        check_same_size(image, image_path, mask, mask_path)
        merged |= mask
    if job.extra["class"] == NORMAL_CLASS and merged.any():
        raise BadCaseError(mask_paths[0], "a normal case's mask marks a lesion (expected an empty mask)")
    staging = out_folder / STAGING_FOLDER
    write_png(image, staging / f"{job.case_id}_0000{PNG}")
    write_png(merged, staging / f"{job.case_id}{PNG}")
    return {"hash": pixel_hash(image), "was_colour": was_colour, "num_masks": len(mask_paths),
            "exif_orientation": orientation}


def _duplicate_groups(results: dict[str, dict]) -> list[list[str]]:
    by_hash: dict[str, list[str]] = defaultdict(list)
    for case in sorted(results):
        by_hash[results[case]["hash"]].append(case)
    return [cases for cases in by_hash.values() if len(cases) > 1]


def convert_busi(source_dir: str | Path, dataset_id: int, name: str = "BUSI", raw_root: str | Path | None = None,
                 overwrite: bool = False, skip_bad: bool = False, num_processes: int = 1,
                 seed: int = NNUNET_SPLIT_SEED,
                 test_fraction: float = DEFAULT_TEST_FRACTION) -> ConversionSummary:
    """Writes ``raw_root/DatasetIII_name`` (raw_root defaults to $nnUNet_raw) from a BUSI folder."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    elapsed = timer()
    check_seed(seed)
    if not 0.0 < test_fraction < 1.0:  # also refuses NaN; checked before any case is converted
        raise SourceLayoutError(f"--test-fraction must lie between 0 and 1 (exclusive), got {test_fraction}")
    raw_root = Path(raw_root) if raw_root is not None else raw_root_from_environment()
    source = require_source(source_dir, list(CLASSES), "BUSI (Dataset_BUSI_with_GT)")
    jobs, ignored = _find_cases(source)
    if not jobs:
        raise SourceLayoutError(f"{source}: no 'benign (N).png'-style images found in {', '.join(CLASSES)}")
    classes = {job.case_id: job.extra["class"] for job in jobs}
    with atomic_dataset_folder(raw_root, dataset_id, name, overwrite, source) as work:
        folders = make_raw_layout(work, with_test_images=True, with_test_labels=True)
        (work / STAGING_FOLDER).mkdir()
        results, skipped = run_cases(convert_busi_case, jobs, work, num_processes, skip_bad, "BUSI")
        duplicates = _duplicate_groups(results)
        groups = {case: group[0] for group in duplicates for case in group}
        cases = sorted(results)
        training, test = stratified_holdout(cases, classes, test_fraction, seed, groups)
        for part, part_cases in (("Tr", training), ("Ts", test)):
            for case in part_cases:
                (work / STAGING_FOLDER / f"{case}_0000{PNG}").rename(folders[f"images{part}"] / f"{case}_0000{PNG}")
                (work / STAGING_FOLDER / f"{case}{PNG}").rename(folders[f"labels{part}"] / f"{case}{PNG}")
        shutil.rmtree(work / STAGING_FOLDER)
        write_splits(work, stratified_group_folds(training, classes, seed, groups=groups))
        sources = {job.case_id: [str(Path(s).relative_to(source)) for s in job.sources] for job in jobs}
        duplicate_of = {case: [c for c in group if c != case] for group in duplicates for case in group}
        write_cases_json(work, {case: {"class": classes[case],
                                       "split": TRAIN_SPLIT if case in set(training) else TEST_SPLIT,
                                       "source_files": sources[case],
                                       **({"duplicates": duplicate_of[case]} if case in duplicate_of else {})}
                                for case in cases})
        generate_dataset_json(str(work), {0: "ultrasound"}, {"background": 0, "lesion": 1},
                              num_training_cases=len(training), file_ending=PNG, dataset_name=name,
                              reference=REFERENCE, license="CC0 (see the dataset's page)",
                              converted_by="pu-nnunet convert busi", numTest=len(test),
                              description=f"BUSI; seeded class-stratified test split (seed {seed}, "
                                          f"fraction {test_fraction}); classes in cases.json")
    notes = [_class_counts(classes, training, test)]
    notes += [f"duplicate images (same pixels, kept on one side of the split): {' = '.join(group)}"
              for group in duplicates]
    colour = sorted(c for c in cases if results[c]["was_colour"])
    if colour:
        notes.append(f"{len(colour)} colour image(s) converted to grayscale, e.g. {colour[0]}")
    multi = sum(1 for c in cases if results[c]["num_masks"] > 1)
    notes.append(f"{multi} case(s) with several masks merged by union")
    notes += ignored.summary() + orientation_notes(results)
    return ConversionSummary(dataset_id, raw_root / dataset_folder_name(dataset_id, name), len(training),
                             len(test), elapsed(), skipped, notes)


def _class_counts(classes: dict[str, str], training: list[str], test: list[str]) -> str:
    parts = []
    for cls in CLASSES:
        parts.append(f"{cls} {sum(classes[c] == cls for c in training)}/{sum(classes[c] == cls for c in test)}")
    return "cases per class (train/test): " + ", ".join(parts)
