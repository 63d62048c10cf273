"""The synthetic CT generator: nnU-Net accepts it, geometry and labels are as documented, it is
deterministic, and organs are separable by intensity (what makes it learnable)."""

import json

import numpy as np
import pytest

from pu_nnunet.datasets.errors import DatasetError, TargetExistsError
from pu_nnunet.datasets.synthetic.ct import (ABSENT_ORGAN_EVERY, DIRECTION, NOISE_SD_HU, ORGANS,
                                             generate_synthetic_ct)

SHAPE = (16, 48, 48)
SPACING = (3.0, 0.8, 0.8)


def _read(path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return image, sitk.GetArrayFromImage(image)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    return generate_synthetic_ct(root, 501, num_cases=8, num_test=3, shape=SHAPE, spacing=SPACING, seed=3)


def test_layout_and_dataset_json(dataset, nnunet_verify):
    assert dataset.name == "Dataset501_SynthCT"
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [f"case_{i:03d}_0000.nii.gz" for i in range(5)]
    assert sorted(p.name for p in (dataset / "labelsTs").iterdir()) == [f"case_{i:03d}.nii.gz" for i in (5, 6, 7)]
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {"background": 0, "liver": 1, "spleen": 2, "left kidney": 3}
    assert (meta["numTraining"], meta["numTest"], meta["file_ending"]) == (5, 3, ".nii.gz")
    nnunet_verify(dataset)
    splits = json.loads((dataset / "splits_final.json").read_text())
    assert len(splits) == 5 and sorted(sum((s["val"] for s in splits), [])) == [f"case_{i:03d}" for i in range(5)]
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_geometry_types_and_labels(dataset):
    absent = 0
    for index in range(8):
        part = "Tr" if index < 5 else "Ts"
        image, pixels = _read(dataset / f"images{part}" / f"case_{index:03d}_0000.nii.gz")
        label, labels = _read(dataset / f"labels{part}" / f"case_{index:03d}.nii.gz")
        assert pixels.dtype == np.int16 and labels.dtype == np.uint8 and pixels.shape == SHAPE == labels.shape
        assert image.GetSpacing() == pytest.approx(SPACING[::-1]) == label.GetSpacing()
        assert image.GetOrigin() == label.GetOrigin() and np.abs(image.GetOrigin()).max() > 1.0
        assert image.GetDirection() == label.GetDirection() == DIRECTION
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        assert pixels.min() < -900  # air around the body
        absent += len(set(range(4)) - set(np.unique(labels).tolist()))
    assert absent == len([i for i in range(8) if i % ABSENT_ORGAN_EVERY == ABSENT_ORGAN_EVERY - 1])


def test_organs_separable_by_intensity_and_not_tiny(dataset):
    _, pixels = _read(dataset / "imagesTr" / "case_000_0000.nii.gz")
    _, labels = _read(dataset / "labelsTr" / "case_000.nii.gz")
    means = []
    for value, organ in enumerate(ORGANS[:3], start=1):
        inside = labels == value
        means.append(pixels[inside].mean())
        assert abs(means[-1] - organ.mean_hu) < 25
        slices = inside.any(axis=(1, 2))
        # median share of a slice the organ covers, on the slices where it appears
        assert np.median(inside[slices].mean(axis=(1, 2))) > 0.02
    assert np.min(np.diff(means)) > 3 * NOISE_SD_HU


def test_deterministic_per_seed(tmp_path):
    first = generate_synthetic_ct(tmp_path / "a", 1, num_cases=3, num_test=1, shape=(8, 32, 32), seed=5)
    again = generate_synthetic_ct(tmp_path / "b", 1, num_cases=3, num_test=1, shape=(8, 32, 32), seed=5)
    other = generate_synthetic_ct(tmp_path / "c", 1, num_cases=3, num_test=1, shape=(8, 32, 32), seed=6)
    name = "imagesTr/case_001_0000.nii.gz"
    assert np.array_equal(_read(first / name)[1], _read(again / name)[1])
    assert not np.array_equal(_read(first / name)[1], _read(other / name)[1])


def test_refuses_existing_target_and_bad_arguments(tmp_path):
    made = generate_synthetic_ct(tmp_path, 2, num_cases=3, num_test=1, shape=(6, 24, 24))
    with pytest.raises(TargetExistsError, match="Dataset002_SynthCT already exists"):
        generate_synthetic_ct(tmp_path, 2, num_cases=3, num_test=1, shape=(6, 24, 24))
    generate_synthetic_ct(tmp_path, 2, num_cases=4, num_test=1, shape=(6, 24, 24), overwrite=True)
    assert len(list((made / "imagesTr").iterdir())) == 3
    with pytest.raises(DatasetError, match="at least 2 training cases"):
        generate_synthetic_ct(tmp_path, 3, num_cases=2, num_test=1)
    with pytest.raises(DatasetError, match="num_organs"):
        generate_synthetic_ct(tmp_path, 3, num_organs=9)
    assert not (tmp_path / "Dataset003_SynthCT").exists()
