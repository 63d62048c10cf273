"""``pu-nnunet predict`` with a trained model (the shared tiny_trained_model fixture): agreement
with ``nnUNetv2_predict``, single files, DICOM series, and refusing to overwrite."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from pu_nnunet.cli import main

pytestmark = pytest.mark.slow

# the bar: per label, our segmentation vs nnUNetv2_predict's on the same model and input
MIN_AGREEMENT_DICE = 0.999
# DICOM stores the geometry as decimal strings
GEOMETRY_TOLERANCE = 1e-4


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    """Dice of one label; 1 where both lack it (they agree)."""
    x, y = a == label, b == label
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total


def foreground_labels(model) -> list[int]:
    labels = json.loads((model["dataset"] / "dataset.json").read_text())["labels"]
    return sorted(value for value in labels.values() if value != 0)


def held_out_images(model) -> list:
    return sorted((model["dataset"] / "imagesTs").glob("*_0000.nii.gz"))


def case_name(image_path) -> str:
    return image_path.name.replace("_0000.nii.gz", ".nii.gz")


def assert_agreement(ours: np.ndarray, reference: np.ndarray, labels: list[int], what: str) -> None:
    assert ours.shape == reference.shape, what
    for label in labels:
        score = dice(ours, reference, label)
        assert score >= MIN_AGREEMENT_DICE, f"{what}: label {label} Dice {score:.5f}"


def array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def folder_prediction(tiny_trained_model, tmp_path_factory):
    """``pu-nnunet predict`` on the held-out folder, default settings (mirroring on), via the CLI."""
    out = tmp_path_factory.mktemp("pu_predict") / "segmentations"
    code = main(["predict", "-i", str(tiny_trained_model["dataset"] / "imagesTs"), "-o", str(out),
                 "-m", str(tiny_trained_model["fold"].parent), "--device", "cpu"])
    assert code == 0
    return out


def test_agrees_with_nnunetv2_predict(tiny_trained_model, folder_prediction):
    labels = foreground_labels(tiny_trained_model)
    references = sorted(tiny_trained_model["predictions"].glob("*.nii.gz"))
    assert len(references) == len(held_out_images(tiny_trained_model)) == 2
    assert sorted(p.name for p in folder_prediction.glob("*.nii.gz")) == [r.name for r in references]
    for reference_path, image_path in zip(references, held_out_images(tiny_trained_model)):
        reference = sitk.ReadImage(str(reference_path))
        ours = sitk.ReadImage(str(folder_prediction / reference_path.name))
        image = sitk.ReadImage(str(image_path))
        theirs_array = sitk.GetArrayFromImage(reference)
        # guards the comparison: a model that segments nothing would agree trivially
        assert np.isin(theirs_array, labels).any(), f"nnUNetv2_predict found no foreground in {reference_path.name}"
        assert_agreement(sitk.GetArrayFromImage(ours), theirs_array, labels, reference_path.name)
        for geometry in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(ours, geometry)() == getattr(image, geometry)(), geometry
    record = json.loads((folder_prediction / "dataset.json").read_text())
    assert record["file_ending"] == ".nii.gz" and record["labels"] == json.loads(
        (tiny_trained_model["dataset"] / "dataset.json").read_text())["labels"]


def test_single_file_input(tiny_trained_model, folder_prediction, tmp_path):
    image = held_out_images(tiny_trained_model)[0]
    out = tmp_path / "single"
    # another batch size too: the segmentation must not depend on it
    code = main(["predict", "-i", str(image), "-o", str(out), "-m", str(tiny_trained_model["fold"].parent),
                 "--device", "cpu", "--batch-size", "5"])
    assert code == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [case_name(image)]
    assert_agreement(array(out / case_name(image)), array(folder_prediction / case_name(image)),
                     foreground_labels(tiny_trained_model), "single file")


def test_dicom_series_gives_the_nifti_segmentation(tiny_trained_model, folder_prediction, tmp_path, dicom_writer):
    image_path = held_out_images(tiny_trained_model)[1]
    image = sitk.ReadImage(str(image_path))
    assert image.GetPixelID() == sitk.sitkInt16  # so the DICOM holds exactly the NIfTI's values
    series = dicom_writer(image, tmp_path / "patient_1")
    out = tmp_path / "from_dicom"
    code = main(["predict", "-i", str(series), "-o", str(out), "-m", str(tiny_trained_model["fold"].parent),
                 "--device", "cpu"])
    assert code == 0
    segmentation = sitk.ReadImage(str(out / "patient_1.nii.gz"))
    assert_agreement(sitk.GetArrayFromImage(segmentation), array(folder_prediction / case_name(image_path)),
                     foreground_labels(tiny_trained_model), "DICOM vs NIfTI")
    assert segmentation.GetSize() == image.GetSize()
    for geometry in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(segmentation, geometry)(), getattr(image, geometry)(),
                                   atol=GEOMETRY_TOLERANCE, err_msg=geometry)


def test_existing_segmentation_needs_overwrite(tiny_trained_model, tmp_path, capsys):
    image = held_out_images(tiny_trained_model)[0]
    out = tmp_path / "out"
    args = ["predict", "-i", str(image), "-o", str(out), "-m", str(tiny_trained_model["fold"].parent),
            "--device", "cpu", "--disable_tta"]
    assert main(args) == 0
    target = out / case_name(image)
    written = target.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert str(target) in err and "--overwrite" in err and "Traceback" not in err
    assert target.stat().st_mtime_ns == written
    assert main([*args, "--overwrite"]) == 0
    assert target.stat().st_mtime_ns != written


def test_3d_model_agrees_with_nnunetv2_predict(tiny_trained_model_3d, tmp_path):
    """A 3d_fullres model folder: nnU-Net's own 3d sliding window, same segmentation as nnUNetv2_predict."""
    model = tiny_trained_model_3d
    out = tmp_path / "segmentations_3d"
    assert main(["predict", "-i", str(model["dataset"] / "imagesTs"), "-o", str(out), "-m", str(model["fold"].parent),
                 "--device", "cpu"]) == 0
    labels = foreground_labels(model)
    references = sorted(model["predictions"].glob("*.nii.gz"))
    assert len(references) == 2
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [r.name for r in references]
    for reference_path, image_path in zip(references, held_out_images(model)):
        reference, ours, image = (sitk.ReadImage(str(p)) for p in (reference_path, out / reference_path.name,
                                                                      image_path))
        theirs_array = sitk.GetArrayFromImage(reference)
        assert np.isin(theirs_array, labels).any(), f"nnUNetv2_predict found no foreground in {reference_path.name}"
        assert_agreement(sitk.GetArrayFromImage(ours), theirs_array, labels, f"3d {reference_path.name}")
        for geometry in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
            assert getattr(ours, geometry)() == getattr(image, geometry)(), geometry
