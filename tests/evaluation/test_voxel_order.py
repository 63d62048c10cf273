"""evaluate with a reference that holds the prediction's physical grid in another voxel order
(flipped or permuted axes, as TotalSegmentator stores its segmentation of a DICOM series): aligned
losslessly, and said; a truly different grid is still refused."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from pu_nnunet.cli import main
from pu_nnunet.evaluation.case_io import align_voxel_order

# the real DICOM series' grid (../shared/data/real-ct/dicom_series): 512 x 512 x 20 voxels of
# 0.977 x 0.977 x 2 mm, identity direction; its segmentation flips y with the origin at the other end
SERIES_ORIGIN = (-249.51171875, -437.51171875, -804.5)
SERIES_SIZE = (512, 512, 20)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
# labels present in the series' segmentation: spleen, liver, stomach, pancreas, right adrenal (NOTICE.md)
SERIES_LABELS = [1, 5, 6, 7, 8]


def write_pair(root, reference: sitk.Image, prediction: sitk.Image, case="case"):
    for folder, image in (("ref", reference), ("pred", prediction)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(root / folder / f"{case}.nii.gz"), True)
    return root / "pred", root / "ref"


def evaluate_cli(capsys, pred, ref, out, *labels):
    code = main(["evaluate", str(pred), str(ref), "-o", str(out), "--no-plots", "--device", "cpu",
                 "--labels", *map(str, labels)])
    return code, capsys.readouterr().err


def dice_per_label(out) -> dict[str, float]:
    case = json.loads((out / "metrics.json").read_text())["cases"][0]
    return {label: values["dice"] for label, values in case["labels"].items()}


def test_the_real_series_segmentation_is_aligned_to_the_series_grid(real_ct, tmp_path, capsys):
    """The prediction: the reference's labels on the series' own grid (y not flipped); every
    label must score Dice 1 after the alignment, which would be 0 or near it without."""
    reference = sitk.ReadImage(str(real_ct / "dicom_series_totalseg.nii.gz"))
    on_series_grid = sitk.Flip(reference, [False, True, False])
    assert on_series_grid.GetOrigin() == SERIES_ORIGIN and on_series_grid.GetDirection() == IDENTITY
    assert on_series_grid.GetSize() == SERIES_SIZE
    pred, ref = write_pair(tmp_path, reference, on_series_grid, "dicom_series")
    code, err = evaluate_cli(capsys, pred, ref, tmp_path / "out", *SERIES_LABELS)
    assert code == 0, err
    assert (f"pu-nnunet evaluate: warning: case dicom_series: the reference {ref / 'dicom_series.nii.gz'} stores the "
            "prediction's physical grid in another voxel order (its y axis reversed); aligned losslessly to the "
            "prediction's order before scoring") in err
    assert dice_per_label(tmp_path / "out") == {**{str(label): 1.0 for label in SERIES_LABELS}, "foreground": 1.0}


def small_labels(seed=0) -> sitk.Image:
    """A 5 x 6 x 7 label map on an oblique grid with three different spacings."""
    array = np.random.default_rng(seed).integers(0, 3, (7, 6, 5)).astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 1.1, 2.5))
    image.SetOrigin((12.0, -30.0, 4.5))
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    image.SetDirection(tuple(rotation.reshape(-1)))
    return image


@pytest.mark.parametrize("order, flips, change", [
    ([0, 1, 2], [True, False, True], "its x axis reversed, its z axis reversed"),
    # PermuteAxes: the reference's axis i is the prediction's axis order[i]
    ([2, 0, 1], [False, False, False],
     "its y axis is the prediction's x, its z axis is the prediction's y, its x axis is the prediction's z"),
    ([1, 0, 2], [False, True, False],
     "its y axis is the prediction's x, its x axis is the prediction's y, its y axis reversed"),
])
def test_permuted_and_flipped_references_align_voxel_for_voxel(order, flips, change):
    """ITK's PermuteAxes and Flip keep every voxel at its physical point: the same grid, another order."""
    prediction = small_labels()
    reference = sitk.Flip(sitk.PermuteAxes(prediction, order), flips)
    as_props = lambda image: {"spacing": image.GetSpacing(), "origin": image.GetOrigin(),
                              "direction": image.GetDirection()}
    aligned, said = align_voxel_order(sitk.GetArrayFromImage(reference), as_props(reference),
                                      sitk.GetArrayFromImage(prediction).shape, as_props(prediction))
    assert said == change
    assert np.array_equal(aligned, sitk.GetArrayFromImage(prediction))


def test_a_truly_different_grid_is_still_refused(real_ct, tmp_path, capsys):
    """Half a voxel off, or a coarser grid over the same field: a resampling, not a reordering."""
    reference = sitk.ReadImage(str(real_ct / "dicom_series_totalseg.nii.gz"))
    shifted = sitk.Flip(reference, [False, True, False])
    shifted.SetOrigin((SERIES_ORIGIN[0] + 0.5, *SERIES_ORIGIN[1:]))
    pred, ref = write_pair(tmp_path / "shifted", reference, shifted)
    code, err = evaluate_cli(capsys, pred, ref, tmp_path / "out", 1)
    assert code == 1 and err == (
        "pu-nnunet evaluate: error: case case: prediction origin [-249.01171875, -437.51171875, -804.5] != reference "
        "origin [-249.51171875, 61.51171875, -804.5]; not the same voxel grid in another axis order either (resample "
        "one onto the other's grid)\n")
    assert "aligned" not in err and not (tmp_path / "out").exists()
    prediction = small_labels()
    coarse = sitk.Flip(prediction, [True, False, False])
    coarse.SetSpacing((1.4, 1.1, 2.5))
    assert align_voxel_order(sitk.GetArrayFromImage(coarse), {"spacing": coarse.GetSpacing(),
                             "origin": coarse.GetOrigin(), "direction": coarse.GetDirection()},
                             sitk.GetArrayFromImage(prediction).shape,
                             {"spacing": prediction.GetSpacing(), "origin": prediction.GetOrigin(),
                              "direction": prediction.GetDirection()}) is None


@pytest.mark.parametrize("reader, warned", [("NibabelIOWithReorient", False), ("NibabelIO", True)])
def test_nibabel_readers_score_a_reference_stored_in_another_voxel_order(tmp_path, capsys, reader, warned):
    """A dataset read with nnU-Net's nibabel readers (AMOS: NibabelIOWithReorient, as `convert amos`
    writes): the reference flipped in y and x. With reorientation both arrays arrive on the same RAS
    grid (the files' own affines differ, which is no mismatch); without it, evaluate aligns the
    reference as for SimpleITKIO. On main before this, both were refused (the files' affines
    differ) although they are one grid."""
    prediction = small_labels()
    prediction.SetDirection(IDENTITY)  # nibabel stores an axis-aligned affine as given
    reference = sitk.Flip(prediction, [True, True, False])
    pred, ref = write_pair(tmp_path, reference, prediction)
    dataset_json = tmp_path / "dataset.json"
    dataset_json.write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2}, "channel_names": {"0": "CT"},
                                        "file_ending": ".nii.gz", "numTraining": 1,
                                        "overwrite_image_reader_writer": reader}))
    code = main(["evaluate", str(pred), str(ref), "-o", str(tmp_path / "out"), "--no-plots", "--device", "cpu",
                 "--dataset-json", str(dataset_json)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert ("stores the prediction's physical grid in another voxel order (its x axis reversed, its y axis "
            "reversed)" in err) == warned, err
    assert dice_per_label(tmp_path / "out") == {"1": 1.0, "2": 1.0, "foreground": 1.0}
