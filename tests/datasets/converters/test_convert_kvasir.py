"""Kvasir-SEG: JPEG masks thresholded to 0/1, seeded 880/120-proportion split or 5 folds."""

import json

import numpy as np
import pytest
from PIL import Image

from pu_nnunet.datasets.converters.kvasir import convert_kvasir
from pu_nnunet.datasets.errors import DatasetError, SourceLayoutError


def test_converts_with_thresholded_masks(tmp_path, raw_root, layouts, nnunet_verify):
    source = layouts.kvasir(tmp_path / "Kvasir-SEG", count=10)
    summary = convert_kvasir(source, 5)
    folder = raw_root / "Dataset005_KvasirSEG"
    assert summary.dataset_folder == folder and (summary.num_training, summary.num_test) == (10, 0)
    nnunet_verify(folder)
    assert not (folder / "imagesTs").exists()
    for mask_path in sorted((source / "masks").iterdir()):
        label = np.asarray(Image.open(folder / "labelsTr" / f"{mask_path.stem}.png"))
        expected = (np.asarray(Image.open(mask_path).convert("L")) >= 128).astype(np.uint8)
        assert np.array_equal(label, expected) and set(np.unique(label)) == {0, 1}
        image = np.asarray(Image.open(folder / "imagesTr" / f"{mask_path.stem}_0000.png"))
        assert image.shape == (*layouts.image_size, 3)
        assert np.array_equal(image, np.asarray(Image.open(source / "images" / mask_path.name).convert("RGB")))
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "R", "1": "G", "2": "B"} and meta["labels"] == {"background": 0, "polyp": 1}


def test_split_is_seeded_880_120_or_five_fold(tmp_path, raw_root, layouts):
    source = layouts.kvasir(tmp_path / "src", count=25)
    folds = {}
    for dataset_id, seed, five_fold in ((1, 0, False), (2, 0, False), (3, 1, False), (4, 0, True)):
        convert_kvasir(source, dataset_id, seed=seed, five_fold=five_fold)
        folds[dataset_id] = json.loads((raw_root / f"Dataset{dataset_id:03d}_KvasirSEG/splits_final.json").read_text())
    assert len(folds[1]) == 1 and len(folds[1][0]["val"]) == 3 and len(folds[1][0]["train"]) == 22  # 12 % of 25
    assert folds[1] == folds[2] and folds[1] != folds[3]
    everyone = sorted(folds[1][0]["train"] + folds[1][0]["val"])
    assert len(folds[4]) == 5 and sorted(sum((f["val"] for f in folds[4]), [])) == everyone


def test_bad_input(tmp_path, raw_root, layouts):
    source = layouts.kvasir(tmp_path / "src", count=4)
    with pytest.raises(SourceLayoutError, match="masks"):
        convert_kvasir(tmp_path / "src" / "images", 5)
    # a JPEG "mask" that is really a gradient
    gradient = np.tile(np.linspace(0, 255, layouts.image_size[1]).astype(np.uint8), (layouts.image_size[0], 1))
    bad_mask = source / "masks" / "cju0001kvasir001.jpg"
    layouts.save(gradient, bad_mask)
    layouts.corrupt(source / "images" / "cju0002kvasir002.jpg")
    with pytest.raises(DatasetError) as error:
        convert_kvasir(source, 5)
    assert "cju0001kvasir001.jpg: does not look like a binary mask" in str(error.value)
    assert "cju0002kvasir002.jpg: cannot be read as an image" in str(error.value)
    assert not list(raw_root.iterdir())  # nothing half-written
    summary = convert_kvasir(source, 5, skip_bad=True)
    assert summary.num_training == 2 and len(summary.skipped) == 2
    assert "skipped 2 bad case(s)" in summary.format()
