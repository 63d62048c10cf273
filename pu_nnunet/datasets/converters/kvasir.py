"""Kvasir-SEG (Jha et al., MMM 2020): 1000 colonoscopy images with polyp masks.

Source layout: ``images/NAME.jpg`` and ``masks/NAME.jpg`` (JPEG masks, so not exactly binary:
they are thresholded; any image ending and spelling is accepted, ``.JPG``, ``.jpeg``, ``.png``).
All cases go to imagesTr/labelsTr; the split file holds a seeded random 880/120 train/validation
split (the proportions most papers use; the file lists some papers publish are not reproduced), or
with ``five_fold`` a seeded 5-fold cross-validation. No test folder: fold 0's validation cases are
the held-out set.
"""

from __future__ import annotations

from functools import partial

from pu_nnunet.datasets.converters.paired_folders import PairedFolderSpec, convert_paired_folders

KVASIR = PairedFolderSpec(
    title="Kvasir-SEG", default_name="KvasirSEG", images_folder="images", masks_folder="masks",
    image_suffix=".jpg", mask_format="jpeg", foreground="polyp",
    # 120 of 1000 cases for validation: the 880/120 proportions most Kvasir-SEG papers use
    validation_fraction=0.12, holdout_name="880/120 train/val",
    description="Kvasir-SEG polyp segmentation", reference="https://datasets.simula.no/kvasir-seg/")

# convert_kvasir(source_dir, dataset_id, name="KvasirSEG", raw_root=None, overwrite=False,
#                skip_bad=False, num_processes=1, seed=NNUNET_SPLIT_SEED, five_fold=False) -> ConversionSummary
convert_kvasir = partial(convert_paired_folders, KVASIR)
