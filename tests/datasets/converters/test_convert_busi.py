"""BUSI: masks merged, normal cases empty, grayscale one channel, class-stratified splits,
duplicates kept together, cases.json."""

import json

import numpy as np
import pytest
from PIL import Image

from pu_nnunet.datasets.converters.busi import convert_busi
from pu_nnunet.datasets.errors import DatasetError, SourceLayoutError


@pytest.fixture
def converted(tmp_path, raw_root, layouts):
    source = layouts.busi(tmp_path / "Dataset_BUSI_with_GT")
    summary = convert_busi(source, 8, seed=0, test_fraction=0.3)
    return source, summary, summary.dataset_folder


def _label(folder, case, cases):
    part = "Tr" if cases[case]["split"] == "train" else "Ts"
    return (np.asarray(Image.open(folder / f"labels{part}" / f"{case}.png")),
            np.asarray(Image.open(folder / f"images{part}" / f"{case}_0000.png")))


def test_layout_and_nnunet_check(converted, nnunet_verify):
    _, summary, folder = converted
    assert folder.name == "Dataset008_BUSI" and summary.num_training + summary.num_test == 13
    nnunet_verify(folder)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "ultrasound"} and meta["numTest"] == summary.num_test


def test_masks_merged_normal_empty_grayscale(converted, layouts):
    source, _, folder = converted
    cases = json.loads((folder / "cases.json").read_text())
    label, image = _label(folder, "benign_001", cases)
    expected = layouts.binary_mask(1) // 255
    expected[-4:, -4:] = 1  # the second mask file
    assert np.array_equal(label, expected)
    assert cases["benign_001"]["source_files"] == ["benign/benign (1).png", "benign/benign (1)_mask.png",
                                                   "benign/benign (1)_mask_1.png"]
    for n in (1, 2, 3):
        assert not _label(folder, f"normal_{n:03d}", cases)[0].any()
    rgb_encoded = _label(folder, "benign_002", cases)[1]
    assert rgb_encoded.shape == layouts.image_size  # one channel
    assert np.array_equal(rgb_encoded, layouts.photo(2)[..., 0])


def test_stratified_split_with_duplicates_together(converted):
    _, summary, folder = converted
    cases = json.loads((folder / "cases.json").read_text())
    test = {c for c, e in cases.items() if e["split"] == "test"}
    assert {cases[c]["class"] for c in test} == {"benign", "malignant", "normal"}
    assert (cases["benign_003"]["split"] == cases["malignant_003"]["split"])
    assert cases["benign_003"]["duplicates"] == ["malignant_003"]
    assert "benign_003 = malignant_003" in summary.format()
    assert {p.name[: -len(".png")] for p in (folder / "labelsTs").iterdir()} == test
    splits = json.loads((folder / "splits_final.json").read_text())
    training = sorted(set(cases) - test)
    assert sorted(sum((s["val"] for s in splits), [])) == training
    twins = {"benign_003", "malignant_003"}
    for split in splits:
        train, val = twins & set(split["train"]), twins & set(split["val"])
        if twins <= test:  # held out together: in no fold at all
            assert not train and not val, split
        else:  # trained on together: both validate in the same fold and train in the others
            assert {len(train), len(val)} == {0, 2}, split


def test_bad_input(tmp_path, raw_root, layouts):
    layouts.busi(tmp_path / "download" / "Dataset_BUSI_with_GT")
    with pytest.raises(SourceLayoutError, match="found the BUSI .* layout in .*Dataset_BUSI_with_GT"):
        convert_busi(tmp_path / "download", 8)
    source = layouts.busi(tmp_path / "busi")
    (source / "benign" / "benign (4)_mask.png").unlink()
    (source / "malignant" / "malignant (2).png").unlink()
    layouts.corrupt(source / "benign" / "benign (5).png")
    layouts.save(layouts.binary_mask(1), source / "normal" / "normal (2)_mask.png")
    with pytest.raises(DatasetError) as error:
        convert_busi(source, 8)
    message = str(error.value)
    assert "benign (4).png: no mask file found" in message
    assert "malignant (2)_mask.png: mask without its image" in message
    assert "benign (5).png: cannot be read as an image" in message
    assert "normal (2)_mask.png: a normal case's mask marks a lesion" in message
    summary = convert_busi(source, 8, skip_bad=True)
    assert summary.num_training + summary.num_test == 9 and len(summary.skipped) == 4
