"""ISIC 2018 Task 1: official parts kept, JPEG -> RGB PNG, 0/255 masks -> 0/1."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pu_nnunet.datasets.converters.isic2018 import convert_isic2018
from pu_nnunet.datasets.errors import DatasetError, SourceLayoutError


def test_converts_official_parts(tmp_path, raw_root, layouts, nnunet_verify):
    source = layouts.isic(tmp_path / "isic", {"Training": 5, "Validation": 2, "Test": 3})
    summary = convert_isic2018(source, 18)
    folder = raw_root / "Dataset018_ISIC2018"
    assert (summary.num_training, summary.num_test) == (7, 3)
    nnunet_verify(folder)
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"ISIC_{i:07d}_0000.png" for i in (7, 8, 9)]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == [f"ISIC_{i:07d}.png" for i in (7, 8, 9)]
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == [{"train": [f"ISIC_{i:07d}" for i in range(5)], "val": ["ISIC_0000005", "ISIC_0000006"]}]
    label = np.asarray(Image.open(folder / "labelsTr" / "ISIC_0000003.png"))
    assert np.array_equal(label, layouts.binary_mask(3) // 255) and label.max() == 1
    image = np.asarray(Image.open(folder / "imagesTr" / "ISIC_0000003_0000.png"))
    source_image = Image.open(source / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000003.jpg")
    assert image.shape == (*layouts.image_size, 3) and np.array_equal(image, np.asarray(source_image.convert("RGB")))
    assert "Training 5, Validation 2, Test 3" in summary.format()


def test_without_validation_uses_nnunet_five_fold(tmp_path, raw_root, layouts):
    source = layouts.isic(tmp_path / "isic", {"Training": 6})
    summary = convert_isic2018(source, 18)
    splits = json.loads((summary.dataset_folder / "splits_final.json").read_text())
    assert len(splits) == 5 and summary.num_test == 0 and not (summary.dataset_folder / "imagesTs").exists()


def test_bad_input(tmp_path, raw_root, layouts):
    with pytest.raises(SourceLayoutError, match="ISIC2018_Task1-2_Training_Input: not found"):
        convert_isic2018(tmp_path, 18)
    source = layouts.isic(tmp_path / "isic", {"Training": 5, "Validation": 1})
    shutil.rmtree(source / "ISIC2018_Task1_Validation_GroundTruth")
    with pytest.raises(SourceLayoutError, match="ISIC2018_Task1_Validation_GroundTruth: not found"):
        convert_isic2018(source, 18)
    shutil.rmtree(source / "ISIC2018_Task1-2_Validation_Input")
    truth = source / "ISIC2018_Task1_Training_GroundTruth"
    grey = layouts.binary_mask(1)
    grey[0, 0] = 128
    layouts.save(grey, truth / "ISIC_0000001_segmentation.png")
    layouts.save(np.zeros((5, 5), np.uint8), truth / "ISIC_0000002_segmentation.png")
    (truth / "ISIC_0000003_segmentation.png").unlink()
    with pytest.raises(DatasetError) as error:
        convert_isic2018(source, 18)
    message = str(error.value)
    assert "ISIC_0000001_segmentation.png: unexpected mask values [128]" in message
    assert "ISIC_0000002_segmentation.png: mask size 5x5 differs from image size 32x24" in message
    assert "ISIC_0000003_segmentation.png: mask not found" in message
    summary = convert_isic2018(source, 18, skip_bad=True)
    assert summary.num_training == 2 and len(summary.skipped) == 3
