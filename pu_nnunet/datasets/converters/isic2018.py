"""ISIC 2018 Task 1 (lesion boundary segmentation; Codella et al. 2019, Tschandl et al. 2018).

Source layout, per official part (Training required; Validation and Test when present):
``ISIC2018_Task1-2_<Part>_Input/ISIC_XXXXXXX.jpg`` and
``ISIC2018_Task1_<Part>_GroundTruth/ISIC_XXXXXXX_segmentation.png`` (0/255 masks, become 0/1);
any spelling of the image endings is accepted (``.JPG``, ``.jpeg``, re-saved ``.png``).

The official parts are kept: Training and Validation go to imagesTr, and the split file holds
one fold with Training for training and Validation for validation (without a Validation part,
nnU-Net's own seeded 5-fold split of Training); Test goes to imagesTs/labelsTs. Images keep their
original resolution (JPEG decoded to lossless RGB PNG).
"""

from __future__ import annotations

import re
from pathlib import Path

from pu_nnunet.datasets.shared.conversion import ConversionSummary, orphan_job, require_source, run_cases, timer
from pu_nnunet.datasets.errors import SourceLayoutError
from pu_nnunet.datasets.shared.raw_folder import (atomic_dataset_folder, dataset_folder_name, make_raw_layout,
                                           raw_root_from_environment)
from pu_nnunet.datasets.converters.rgb_pairs import RGB_CHANNEL_NAMES, convert_rgb_pair, pair_job, write_binary_dataset_json
from pu_nnunet.datasets.shared.source_files import SkippedFiles, images_by_stem, orientation_notes
from pu_nnunet.datasets.shared.splits import cross_validation_splits, write_splits

PARTS = ("Training", "Validation", "Test")
# case names; files may end in any spelling of the image endings (published as .jpg and .png)
IMAGE_NAME = re.compile(r"^ISIC_\d{7}$")
IMAGE_ENDING, MASK_ENDING = ".jpg", ".png"
MASK_SUFFIX = "_segmentation"
REFERENCE = "https://challenge.isic-archive.com/data/#2018"


def input_folder(part: str) -> str:
    return f"ISIC2018_Task1-2_{part}_Input"


def ground_truth_folder(part: str) -> str:
    return f"ISIC2018_Task1_{part}_GroundTruth"


def _part_cases(source: Path, part: str, left_out: SkippedFiles) -> tuple[list[tuple[str, Path, Path]], list]:
    """([(case id, image, mask or its expected path)], [(case id, mask, expected image)] of masks
    without an image) of one official part; ([], []) when the part is absent. Other files (the
    input folders also hold LICENSE.txt and ATTRIBUTION.txt) are recorded in ``left_out``."""
    images, masks = source / input_folder(part), source / ground_truth_folder(part)
    if not images.is_dir() and not masks.is_dir():
        return [], []
    if not images.is_dir() or not masks.is_dir():
        missing, present = (images, masks) if not images.is_dir() else (masks, images)
        raise SourceLayoutError(f"{missing}: not found, but {present.name} is there; each ISIC part needs "
                                f"both its input and its ground-truth folder")
    found = images_by_stem(images, source, left_out)
    truths = images_by_stem(masks, source, left_out, suffix=MASK_SUFFIX)
    cases, orphans = [], []
    for stem, path in sorted(found.items()):
        if IMAGE_NAME.match(stem):
            cases.append((stem, path, truths.get(stem, masks / f"{stem}{MASK_SUFFIX}{MASK_ENDING}")))
        else:
            left_out.add(str(path.relative_to(source)), "image(s) not named ISIC_XXXXXXX")
    for stem, path in sorted(truths.items()):
        if stem not in found:
            orphans.append((stem, path, images / f"{stem}{IMAGE_ENDING}"))
    if not cases:
        raise SourceLayoutError(f"{images}: no ISIC_XXXXXXX.jpg images found")
    return cases, orphans


def convert_isic2018(source_dir: str | Path, dataset_id: int, name: str = "ISIC2018",
                     raw_root: str | Path | None = None, overwrite: bool = False, skip_bad: bool = False,
                     num_processes: int = 1) -> ConversionSummary:
    """Writes ``raw_root/DatasetIII_name`` (raw_root defaults to $nnUNet_raw) from an ISIC 2018 folder."""
    elapsed = timer()
    raw_root = Path(raw_root) if raw_root is not None else raw_root_from_environment()
    source = require_source(source_dir, [input_folder("Training"), ground_truth_folder("Training")], "ISIC 2018 Task 1")
    left_out = SkippedFiles()
    found = {part: _part_cases(source, part, left_out) for part in PARTS}
    by_part = {part: cases for part, (cases, _) in found.items()}
    jobs = [pair_job(case, "Ts" if part == "Test" else "Tr", image, mask, "png")
            for part in PARTS for case, image, mask in by_part[part]]
    jobs += [orphan_job(case, "Ts" if part == "Test" else "Tr", mask, image, "mask")
             for part in PARTS for case, mask, image in found[part][1]]
    with atomic_dataset_folder(raw_root, dataset_id, name, overwrite, source) as work:
        has_test = bool(by_part["Test"])
        make_raw_layout(work, with_test_images=has_test, with_test_labels=has_test)
        results, skipped = run_cases(convert_rgb_pair, jobs, work, num_processes, skip_bad, "ISIC 2018")
        kept = {part: sorted(c for c, _, _ in by_part[part] if c in results) for part in PARTS}
        training = kept["Training"] + kept["Validation"]
        if kept["Validation"]:
            splits = [{"train": kept["Training"], "val": kept["Validation"]}]
        else:
            splits = cross_validation_splits(kept["Training"])
        write_splits(work, splits)
        write_binary_dataset_json(work, RGB_CHANNEL_NAMES, "lesion", len(training), len(kept["Test"]), name,
                                  REFERENCE, "ISIC 2018 Task 1 lesion segmentation; official Training/"
                                  "Validation as fold 0 of splits_final.json, official Test in imagesTs/labelsTs")
    notes = [f"official parts: " + ", ".join(f"{part} {len(kept[part])}" for part in PARTS),
             "split: " + ("fold 0 = official Training / Validation" if kept["Validation"]
                          else "no Validation part: nnU-Net's seeded 5-fold split of Training")]
    notes += left_out.summary() + orientation_notes(results)
    return ConversionSummary(dataset_id, raw_root / dataset_folder_name(dataset_id, name), len(training),
                             len(kept["Test"]), elapsed(), skipped, notes)
