"""Helpers for the prediction tests: small NIfTI volumes, DICOM series, a model folder stub."""

import json
import locale
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

# the synthetic CT's NIfTI direction: x and y flipped, as many scanners export it
FLIPPED_XY = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
# DICOM writes the geometry as decimal strings; reading back is exact to about this
GEOMETRY_TOLERANCE = 1e-4


def write_volume(path: Path, shape_zyx=(4, 8, 8), spacing=(0.8, 0.8, 3.0), seed=0) -> Path:
    """A small int16 CT-like volume with a known geometry."""
    array = np.random.default_rng(seed).integers(-1000, 1000, shape_zyx).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.5, 7.25))
    image.SetDirection(FLIPPED_XY)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def write_dicom_series(image: sitk.Image, folder: Path, series_uid="1.2.826.0.1.3680043.2.1125.1") -> Path:
    """One DICOM file per slice, with the tags ImageSeriesReader rebuilds the geometry from:
    image position (per slice), image orientation, pixel spacing and slice thickness."""
    image = sitk.Cast(image, sitk.sitkInt16)
    direction = image.GetDirection()
    # DICOM's orientation holds the row and column direction cosines: the first two columns
    orientation = (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])
    shared = {"0008|0060": "CT", "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL", "0020|000d": series_uid + ".0",
              "0020|000e": series_uid, "0020|0037": "\\".join(repr(v) for v in orientation),
              "0018|0050": repr(image.GetSpacing()[2]), "0008|103e": "pu-nnunet test series"}
    folder.mkdir(parents=True, exist_ok=True)
    # GDCM's writer leaves the process in the "C" locale; later subprocess.run(text=True) calls in
    # the same session (the shared tiny_trained_model fixture) would then decode as ASCII
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_slices(image, folder, series_uid, shared)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)
    return folder


def _write_slices(image: sitk.Image, folder: Path, series_uid: str, shared: dict) -> None:
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(image.GetDepth()):
        slice_image = image[:, :, index]
        for tag, value in shared.items():
            slice_image.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, index))
        slice_image.SetMetaData("0020|0032", "\\".join(repr(v) for v in position))
        slice_image.SetMetaData("0020|0013", str(index + 1))
        slice_image.SetMetaData("0008|0018", f"{series_uid}.{index + 1}")
        writer.SetFileName(str(folder / f"slice_{index:03d}.dcm"))
        writer.Execute(slice_image)


def make_model_stub(folder: Path, plans: dict, channel_names=("CT",), folds=(0,)) -> Path:
    """A model folder with dataset.json, plans.json and empty checkpoints: enough for every check
    that runs before the weights are loaded."""
    folder.mkdir(parents=True)
    dataset_json = {"channel_names": {str(i): name for i, name in enumerate(channel_names)},
                    "labels": {"background": 0, "liver": 1}, "numTraining": 1, "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    (folder / "plans.json").write_text(json.dumps(plans))
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"")
    return folder


@pytest.fixture
def model_stub(tmp_path, plain_plans) -> Path:
    return make_model_stub(tmp_path / "Dataset990_Test" / "nnUNetTrainer__nnUNetPlans__2d", plain_plans)


# the helpers as fixtures: with --import-mode=importlib test modules cannot import this file
@pytest.fixture
def volume_writer():
    return write_volume


@pytest.fixture
def dicom_writer():
    return write_dicom_series


@pytest.fixture
def stub_factory():
    return make_model_stub
