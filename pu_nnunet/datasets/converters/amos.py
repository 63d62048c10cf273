"""AMOS 2022 (Ji et al., NeurIPS 2022), CT part: abdominal CT with 15 organ labels.

Source layout (``amos22/``): ``dataset.json``, ``imagesTr``, ``labelsTr``, ``imagesVa``,
``labelsVa``, ``imagesTs``, files ``amos_XXXX.nii.gz``. Case ids up to 500 are CT; higher ids are
MRI and are left out (counted in the summary). Labels are taken from AMOS's own dataset.json,
spelling kept. Files are copied byte for byte (original geometry kept) after checking that each
reads, that image and label shapes agree and that labels hold only the listed values; nnU-Net
reads them with ``NibabelIOWithReorient``, as its own AMOS converter (Dataset218) does.

Default (as nnU-Net's Dataset218): training and validation cases both go to imagesTr/labelsTr;
the split file's fold 0 trains on the official training cases and validates on the official
validation cases; the unlabelled official test images go to imagesTs. With ``val_as_test`` the
validation cases go to imagesTs/labelsTs instead (the unlabelled test images are then left out)
and the split file holds nnU-Net's seeded 5-fold split of the training cases.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np

from pu_nnunet.datasets.shared.conversion import (CaseJob, ConversionSummary, orphan_job, require_source, run_cases,
                                                  timer)
from pu_nnunet.datasets.errors import BadCaseError, SourceLayoutError
from pu_nnunet.datasets.shared.raw_folder import (atomic_dataset_folder, dataset_folder_name, make_raw_layout,
                                           raw_root_from_environment)
from pu_nnunet.datasets.shared.source_files import SkippedFiles, list_folder
from pu_nnunet.datasets.shared.splits import cross_validation_splits, write_splits
from pu_nnunet.user_files import damaged_file_problem, read_user_json

FILE_NAME = re.compile(r"^amos_(\d{4})\.nii\.gz$", re.IGNORECASE)
NIFTI = ".nii.gz"
# AMOS numbers its CT scans 1..500 and its MRI scans above 500 (AMOS paper; nnU-Net's Dataset218)
MAX_CT_CASE_ID = 500
# image and label affines further apart than this (mm, or direction cosines) are reported
AFFINE_TOLERANCE = 1e-3
# (image folder, label folder or None) of each official part
PARTS = {"training": ("imagesTr", "labelsTr"), "validation": ("imagesVa", "labelsVa"), "test": ("imagesTs", None)}
REFERENCE = "https://amos22.grand-challenge.org/"
# AMOS 2022's 15 organ ids (its dataset.json, spelling kept: "arota") by the TotalSegmentator
# "total" task class that covers the same organ (TotalSegmentator's map_to_binary.py names), so a
# TotalSegmentator segmentation becomes an AMOS-style pseudo-label; "prostate/uterus" gets the
# prostate only, as TotalSegmentator has no uterus class
AMOS_ID_BY_TOTALSEGMENTATOR_NAME = {
    "spleen": 1, "kidney_right": 2, "kidney_left": 3, "gallbladder": 4, "esophagus": 5, "liver": 6,
    "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "pancreas": 10, "adrenal_gland_right": 11,
    "adrenal_gland_left": 12, "duodenum": 13, "urinary_bladder": 14, "prostate": 15,
}
AMOS_LABEL_NAMES = ("background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver",
                    "stomach", "arota", "postcava", "pancreas", "right adrenal gland", "left adrenal gland",
                    "duodenum", "bladder", "prostate/uterus")


def amos_labels_from_totalsegmentator(labels: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """A TotalSegmentator label map (``names``: its id -> class name) in AMOS's ids (uint8): each
    class of :data:`AMOS_ID_BY_TOTALSEGMENTATOR_NAME` gets its AMOS id, every other class (bones,
    lungs, vessels AMOS does not label) becomes background."""
    table = np.zeros(max([int(labels.max()), *names]) + 1, dtype=np.uint8)
    missing = sorted(set(AMOS_ID_BY_TOTALSEGMENTATOR_NAME) - set(names.values()))
    if missing:
        raise ValueError(f"the TotalSegmentator label table lacks {', '.join(missing)}: not its 'total' task?")
    for value, name in names.items():
        table[value] = AMOS_ID_BY_TOTALSEGMENTATOR_NAME.get(name, 0)
    return table[labels]


def read_amos_labels(source: Path) -> dict[str, int]:
    """nnU-Net's {name: value} from AMOS's dataset.json {"value": "name"}; names as AMOS spells them."""
    path = source / "dataset.json"
    content = read_user_json(path, "AMOS dataset.json", dict, SourceLayoutError)
    try:
        labels = content["labels"]
        result = {str(name): int(value) for value, name in labels.items()}
    except (ValueError, KeyError, AttributeError, TypeError) as error:
        raise SourceLayoutError(f"{path}: cannot read the AMOS labels ({type(error).__name__}: {error}); "
                                f"expected a 'labels' object like {{\"0\": \"background\", \"1\": \"spleen\"}}")
    if sorted(result.values()) != list(range(len(result))) or result.get("background", 0) != 0:
        raise SourceLayoutError(f"{path}: labels must be 0 (background), 1, 2, ... without gaps; got {labels}")
    return result


def _numbered_files(folder: Path, skipped: SkippedFiles) -> dict[int, Path]:
    """{case number: file} of the amos_XXXX.nii.gz files in ``folder``; others are recorded as
    skipped (e.g. macOS "._amos_0001.nii.gz" resource files), a broken link is an error."""
    found = {}
    if not folder.is_dir():
        return found
    for path in list_folder(folder):
        match = FILE_NAME.match(path.name)
        if match:
            found[int(match.group(1))] = path
        else:
            skipped.add(f"{folder.name}/{path.name}", "file(s) not named amos_XXXX.nii.gz")
    return found


def _part_files(source: Path, part: str, skipped: SkippedFiles) -> tuple[list[tuple[int, Path]], list]:
    """([(case number, image)], [(case number, label without an image)]) of one official part."""
    image_folder, label_folder = PARTS[part]
    images = _numbered_files(source / image_folder, skipped)
    labels = _numbered_files(source / label_folder, skipped) if label_folder else {}
    orphans = [(number, path) for number, path in sorted(labels.items()) if number not in images]
    return sorted(images.items()), orphans


def convert_amos_case(job: CaseJob, out_folder: Path) -> dict:
    """Worker: reads image (and label), checks them, then copies the files unchanged."""
    import nibabel

    image_path = job.sources[0]
    label_path = job.sources[1] if len(job.sources) > 1 else None
    if label_path is not None and not Path(label_path).is_file():
        raise BadCaseError(label_path, f"label not found for image {image_path}")
    volumes = {}
    for path in job.sources:
        problem = damaged_file_problem(path)
        if problem is not None:
            raise BadCaseError(path, problem)
        try:
            volume = nibabel.load(path)
            # reading the voxels (not just the header) is what finds truncated or corrupt files
            volumes[path] = (volume, np.asanyarray(volume.dataobj))
        except Exception as error:  # nibabel/gzip raise many types for broken files
            raise BadCaseError(path, f"cannot be read as NIfTI ({type(error).__name__}: {error})") from None
    affine_differs = False
    if label_path is not None:
        (image, image_voxels), (label, label_voxels) = volumes[image_path], volumes[label_path]
        if image_voxels.shape != label_voxels.shape:
            raise BadCaseError(label_path, f"label shape {label_voxels.shape} differs from image shape "
                                           f"{image_voxels.shape} of {image_path}")
        allowed = set(job.extra["label_values"])
        unexpected = sorted(set(np.unique(label_voxels).tolist()) - allowed)
        if unexpected:
            raise BadCaseError(label_path, f"unexpected label values {unexpected[:8]} (dataset.json lists "
                                           f"{min(allowed)}..{max(allowed)})")
        affine_differs = not np.allclose(image.affine, label.affine, atol=AFFINE_TOLERANCE)
    shutil.copyfile(image_path, out_folder / f"images{job.part}" / f"{job.case_id}_0000{NIFTI}")
    if label_path is not None:
        shutil.copyfile(label_path, out_folder / f"labels{job.part}" / f"{job.case_id}{NIFTI}")
    return {"affine_differs": affine_differs}


def convert_amos(source_dir: str | Path, dataset_id: int, name: str = "AMOS2022CT", raw_root: str | Path | None = None,
                 overwrite: bool = False, skip_bad: bool = False, num_processes: int = 1,
                 val_as_test: bool = False) -> ConversionSummary:
    """Writes ``raw_root/DatasetIII_name`` (raw_root defaults to $nnUNet_raw) from an ``amos22`` folder."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    elapsed = timer()
    raw_root = Path(raw_root) if raw_root is not None else raw_root_from_environment()
    required = ["dataset.json", "imagesTr", "labelsTr"] + (["imagesVa", "labelsVa"] if val_as_test else [])
    source = require_source(source_dir, required, "AMOS 2022 (amos22)")
    labels = read_amos_labels(source)
    for present, absent in (("imagesVa", "labelsVa"), ("labelsVa", "imagesVa")):
        if (source / present).is_dir() and not (source / absent).is_dir():
            raise SourceLayoutError(f"{source / absent}: not found, but {present} is there; the official "
                                    "validation part needs both")
    destination = {"training": "Tr", "validation": "Ts" if val_as_test else "Tr", "test": None if val_as_test else "Ts"}
    jobs, ignored, mri, official = [], SkippedFiles(), {}, {}
    for part, (image_folder, label_folder) in PARTS.items():
        files, orphans = _part_files(source, part, ignored)
        if destination[part] is not None:
            jobs += [orphan_job(f"amos_{number:04d}", destination[part], path, source / image_folder / path.name,
                                "label") for number, path in orphans if number <= MAX_CT_CASE_ID]
        mri[part] = sum(number > MAX_CT_CASE_ID for number, _ in files)
        ct = [(number, path) for number, path in files if number <= MAX_CT_CASE_ID]
        official[part] = [f"amos_{number:04d}" for number, _ in ct]
        if destination[part] is None:
            continue
        for number, path in ct:
            sources = (str(path),) + ((str(source / label_folder / path.name),) if label_folder else ())
            jobs.append(CaseJob(f"amos_{number:04d}", destination[part], sources,
                                {"label_values": sorted(labels.values())}))
    if not official["training"]:
        raise SourceLayoutError(f"{source / 'imagesTr'}: no CT images amos_XXXX.nii.gz (XXXX <= {MAX_CT_CASE_ID})")
    with atomic_dataset_folder(raw_root, dataset_id, name, overwrite, source) as work:
        has_test = any(job.part == "Ts" for job in jobs)
        make_raw_layout(work, with_test_images=has_test, with_test_labels=val_as_test)
        results, skipped = run_cases(convert_amos_case, jobs, work, num_processes, skip_bad, "AMOS 2022")
        kept = {part: [c for c in official[part] if c in results] for part in PARTS}
        training = sorted(kept["training"] + ([] if val_as_test else kept["validation"]))
        test = kept["validation"] if val_as_test else kept["test"]
        if kept["validation"] and not val_as_test:
            splits = [{"train": kept["training"], "val": kept["validation"]}]
        else:
            splits = cross_validation_splits(kept["training"])
        write_splits(work, splits)
        generate_dataset_json(str(work), {0: "CT"}, labels, num_training_cases=len(training), file_ending=NIFTI,
                              dataset_name=name, reference=REFERENCE, release="https://zenodo.org/record/7262581",
                              license="CC BY 4.0 (see the AMOS release)", converted_by="pu-nnunet convert amos",
                              overwrite_image_reader_writer="NibabelIOWithReorient", numTest=len(test),
                              description=("AMOS 2022 CT; official validation cases in imagesTs/labelsTs"
                                           if val_as_test else "AMOS 2022 CT; official training + validation "
                                           "in imagesTr (fold 0 of splits_final.json = official split), "
                                           "unlabelled official test images in imagesTs"))
    notes = ["CT cases found: " + ", ".join(f"{part} {len(official[part])}" for part in PARTS),
             "MRI cases left out: " + ", ".join(f"{part} {mri[part]}" for part in PARTS),
             ("validation cases kept aside as the labelled test set (--val-as-test); unlabelled test images "
              f"left out: {len(official['test'])}") if val_as_test else
             "training + validation used for training (fold 0 = official split); unlabelled test images in imagesTs"]
    misaligned = sorted(c for c, r in results.items() if r["affine_differs"])
    if misaligned:
        notes.append(f"{len(misaligned)} case(s) whose image and label affines differ (copied as they are), "
                     f"e.g. {misaligned[0]}")
    notes += ignored.summary()
    return ConversionSummary(dataset_id, raw_root / dataset_folder_name(dataset_id, name), len(training),
                             len(test), elapsed(), skipped, notes)
