"""Copies a 2D PNG dataset of nnU-Net_raw into a NIfTI one (one-slice volumes), for ``pu-nnunet predict``.

``pu-nnunet predict`` (and so ``study`` on ``imagesTs`` and ``robustness``) reads NIfTI and DICOM
only. A PNG dataset such as ``pu-nnunet synth ultrasound``'s becomes ``DatasetNNN_NameNIfTI``
with the same cases, labels, ``cases.json`` and ``splits_final.json``; each image is a 1 x H x W
volume with nnU-Net's own 2D spacing (its NaturalImage2DIO reads PNGs as spacing (999, 1, 1)),
so the 2d configuration sees the same pixels.

    python benchmarks/png_dataset_to_nifti.py $nnUNet_raw/Dataset901_SynthUS 902
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from pu_nnunet.json_files import NNUNET_INDENT, write_json
from pu_nnunet.user_files import work_names

# nnU-Net's NaturalImage2DIO spacing of a 2D image, (z, y, x): a huge z keeps the slices apart
NNUNET_2D_SPACING = (999.0, 1.0, 1.0)
PNG, NIFTI = ".png", ".nii.gz"
FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def convert(source: Path, dataset_id: int) -> Path:
    dataset = json.loads((source / "dataset.json").read_text())
    if dataset.get("file_ending") != PNG:
        raise SystemExit(f"{source / 'dataset.json'}: file_ending is {dataset.get('file_ending')!r}, not {PNG!r}")
    name = source.name.split("_", 1)[1] + "NIfTI"
    target = source.parent / f"Dataset{dataset_id:03d}_{name}"
    if target.exists():
        raise SystemExit(f"{target}: exists; remove it first")
    partial, _ = work_names(target.parent, target.name)  # the package's temporary name, swept when a run was killed
    for folder in FOLDERS:
        if not (source / folder).is_dir():
            continue
        (partial / folder).mkdir(parents=True)
        for png in sorted((source / folder).glob(f"*{PNG}")):
            array = np.asarray(Image.open(png).convert("L"))[None]
            image = sitk.GetImageFromArray(array.astype(np.uint8))
            image.SetSpacing(NNUNET_2D_SPACING[::-1])  # SimpleITK orders x, y, z
            sitk.WriteImage(image, str(partial / folder / (png.name[: -len(PNG)] + NIFTI)), True)
    for extra in ("cases.json", "splits_final.json"):
        if (source / extra).is_file():
            shutil.copy2(source / extra, partial / extra)
    write_json(partial / "dataset.json", {**dataset, "file_ending": NIFTI, "name": name}, indent=NNUNET_INDENT)
    partial.rename(target)
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="nnUNet_raw/DatasetNNN_Name with file_ending .png")
    parser.add_argument("dataset_id", type=int, help="id of the NIfTI copy")
    args = parser.parse_args()
    print(f"wrote {convert(args.source, args.dataset_id)}")
