"""The synthetic ultrasound generator: BUSI's format, classes in cases.json, every class tested."""

import json

import numpy as np
import pytest
from PIL import Image

from pu_nnunet.datasets.errors import DatasetError
from pu_nnunet.datasets.synthetic.ultrasound import generate_synthetic_ultrasound


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_synthetic_ultrasound(tmp_path_factory.mktemp("raw"), 502, num_cases=14, num_test=5,
                                         shape=(48, 64), seed=1)


def test_layout_classes_and_splits(dataset, nnunet_verify):
    nnunet_verify(dataset)
    cases = json.loads((dataset / "cases.json").read_text())
    assert len(cases) == 14
    test = {c for c, e in cases.items() if e["split"] == "test"}
    assert len(test) == 5
    assert {cases[c]["class"] for c in test} == {"benign", "malignant", "normal"}
    assert {p.name[: -len("_0000.png")] for p in (dataset / "imagesTs").iterdir()} == test
    assert {p.name[: -len(".png")] for p in (dataset / "labelsTr").iterdir()} == set(cases) - test
    meta = json.loads((dataset / "dataset.json").read_text())
    assert (meta["channel_names"], meta["labels"]) == ({"0": "ultrasound"}, {"background": 0, "lesion": 1})
    assert (meta["numTraining"], meta["numTest"]) == (9, 5)
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert sorted(sum((s["val"] for s in splits), [])) == sorted(set(cases) - test)


def test_images_masks_and_lesion_contrast(dataset):
    cases = json.loads((dataset / "cases.json").read_text())
    for case, entry in cases.items():
        part = "Tr" if entry["split"] == "train" else "Ts"
        image = np.asarray(Image.open(dataset / f"images{part}" / f"{case}_0000.png"))
        mask = np.asarray(Image.open(dataset / f"labels{part}" / f"{case}.png"))
        assert image.shape == (48, 64) and image.dtype == np.uint8  # one grayscale channel
        assert set(np.unique(mask)) <= {0, 1}
        if entry["class"] == "normal":
            assert not mask.any()
        else:
            assert 0.005 < mask.mean() < 0.4
            # hypoechoic: the lesion is darker than the tissue at the same depths
            rows = mask.any(axis=1)
            assert image[mask == 1].mean() < image[rows][mask[rows] == 0].mean()


def test_bad_arguments(tmp_path):
    with pytest.raises(DatasetError, match="at least 1 test and 2 training"):
        generate_synthetic_ultrasound(tmp_path, 3, num_cases=3, num_test=2)
    with pytest.raises(DatasetError, match="height, width"):
        generate_synthetic_ultrasound(tmp_path, 3, shape=(8, 8))
