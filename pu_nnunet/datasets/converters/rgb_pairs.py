"""Converting (RGB photograph, binary mask) pairs, the shape of ISIC 2018 and Kvasir-SEG.

Images become ``CASE_0000.png`` (one 3-channel RGB file, as nnU-Net's ``NaturalImage2DIO`` reads
it) and masks ``CASE.png`` holding 0 (background) and 1 (lesion/polyp).
"""

from __future__ import annotations

from pathlib import Path

from pu_nnunet.datasets.shared.conversion import CaseJob
from pu_nnunet.datasets.errors import BadCaseError
from pu_nnunet.datasets.shared.images_2d import (check_same_orientation, check_same_size, read_binary_jpeg_mask,
                                                 read_binary_png_mask, read_rgb, write_png)
from pu_nnunet.datasets.shared.source_files import is_lossy

PNG = ".png"
RGB_CHANNEL_NAMES = {0: "R", 1: "G", 2: "B"}
MASK_FORMATS = ("png", "jpeg")


def pair_job(case_id: str, part: str, image: Path, mask: Path, mask_format: str) -> CaseJob:
    if mask_format not in MASK_FORMATS:
        raise ValueError(f"mask_format must be one of {MASK_FORMATS}, got {mask_format!r}")
    return CaseJob(case_id, part, (str(image), str(mask)), {"mask_format": mask_format})


def convert_rgb_pair(job: CaseJob, out_folder: Path) -> dict:
    """Worker: reads and checks both files first, then writes them; returns the mask's foreground
    pixel count and the EXIF orientation both were turned upright by."""
    image_path, mask_path = job.sources
    if not Path(mask_path).is_file():
        raise BadCaseError(mask_path, f"mask not found for image {image_path}")
    orientation = check_same_orientation(image_path, [mask_path])
    image = read_rgb(image_path)
    # a mask stored as JPEG holds compression noise whatever the dataset's usual format
    lossy = job.extra["mask_format"] == "jpeg" or is_lossy(mask_path)
    mask = read_binary_jpeg_mask(mask_path) if lossy else read_binary_png_mask(mask_path)
    check_same_size(image, image_path, mask, mask_path)
    write_png(image, out_folder / f"images{job.part}" / f"{job.case_id}_0000{PNG}")
    write_png(mask, out_folder / f"labels{job.part}" / f"{job.case_id}{PNG}")
    return {"foreground_pixels": int(mask.sum()), "exif_orientation": orientation}


def write_binary_dataset_json(folder: Path, channel_names: dict, foreground_name: str, num_training: int,
                              num_test: int, name: str, reference: str, description: str) -> None:
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(str(folder), dict(channel_names), {"background": 0, foreground_name: 1},
                          num_training_cases=num_training, file_ending=PNG, dataset_name=name,
                          reference=reference, description=description,
                          license="see the dataset's own licence at its reference address",
                          converted_by="pu-nnunet convert", numTest=num_test)
