"""``pu-nnunet predict`` on damaged input, checked before any model is loaded: truncated NIfTI,
DICOM series with a damaged or missing slice, non-finite spacing, malformed model files, output
folders that are inputs or another command's output."""

import gzip
import json
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from pu_nnunet.cli import main
from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.inference.inputs import check_channels, find_input_cases, read_dicom_series


def predict_cli(capsys, *args):
    code = main(["predict", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line_error(code, err, expected):
    assert code == 1 and err == f"pu-nnunet predict: error: {expected}\n"


def cut(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def test_truncated_nifti_inputs(tmp_path, model_stub, capsys, volume_writer):
    """SimpleITK reads both without an error: the missing voxels come back as zeros."""
    gz = cut(volume_writer(tmp_path / "in" / "a_0000.nii.gz", shape_zyx=(8, 32, 32)))
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(gz))).shape == (8, 32, 32)
    code, err = predict_cli(capsys, "-i", gz.parent, "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, f"{gz}: truncated: the gzip stream ends before its end marker (file cut short?)")
    plain = tmp_path / "plain" / "b.nii"
    plain.parent.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(volume_writer(tmp_path / "v.nii.gz", shape_zyx=(8, 32, 32)))), str(plain))
    cut(plain, 0.9)
    code, err = predict_cli(capsys, "-i", plain, "-o", tmp_path / "out", "-m", model_stub)
    assert_one_line_error(code, err, f"{plain}: truncated: the header promises 16736 bytes of image data and "
                                     f"header, the file holds 15062")
    assert not (tmp_path / "out").exists()


# NIfTI-1 header: pixdim (8 float32) starts at byte 76; pixdim[1] is the x voxel size
PIXDIM_X_OFFSET = 80


@pytest.mark.parametrize("spacing", [0.0, float("nan")])
def test_zero_or_nan_spacing_in_the_header(tmp_path, volume_writer, spacing):
    """SimpleITK and nibabel both read a zero voxel size as 1 mm, without a word."""
    data = bytearray(gzip.decompress(volume_writer(tmp_path / "v.nii.gz").read_bytes()))
    data[PIXDIM_X_OFFSET: PIXDIM_X_OFFSET + 4] = struct.pack("<f", spacing)
    path = tmp_path / "in" / "a.nii.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(PredictionError, match=r"a.nii.gz: voxel spacing \[(0.0|nan), 0.8.*, 3.0\] in the header is "
                                              "not finite and positive"):
        check_channels(find_input_cases(path, 1), {"0": "CT"})


@pytest.fixture
def series(tmp_path, volume_writer, dicom_writer):
    image = sitk.ReadImage(str(volume_writer(tmp_path / "v.nii.gz", shape_zyx=(6, 8, 8))))
    return dicom_writer(image, tmp_path / "patient")


def test_dicom_series_with_a_damaged_slice(series):
    """GDCM leaves a slice it cannot parse out of the series: the volume would be one slice
    shorter, with the gap stretched over, and no error."""
    damaged = sorted(series.iterdir())[3]
    cut(damaged)
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))) == 5
    with pytest.raises(PredictionError) as error:
        find_input_cases(series, 1)
    assert str(error.value) == (f"{damaged}: damaged DICOM file: no complete pixel data: the file ends before its "
                                "pixel data does (cut short?), or holds no image; repair or remove it")


def test_dicom_slice_that_gdcm_cannot_place_is_named(series):
    """A slice whose pixel data is whole but which GDCM leaves out of the series (here: no
    number of rows) is named too."""
    import pydicom

    damaged = sorted(series.iterdir())[3]
    dataset = pydicom.dcmread(damaged)
    del dataset.Rows
    dataset.save_as(damaged)
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series))) == 5
    case = find_input_cases(series, 1)[0]
    with pytest.raises(PredictionError) as error:
        check_channels([case], {"0": "CT"})
    assert str(error.value) == (f"{damaged}: a DICOM file that belongs to no readable series (damaged slice?); "
                                "repair or remove it")


def test_dicom_series_with_a_missing_slice(series):
    slices = sorted(series.iterdir())
    slices[2].unlink()
    case = find_input_cases(series, 1)[0]
    with pytest.raises(PredictionError, match=f"{slices[3]}: slice 6.000 mm from the previous one where the series "
                                              r"steps 3.000 mm; a slice is missing or duplicated"):
        read_dicom_series(case)


def test_nan_voxels_are_refused(tmp_path):
    """SimpleITK, and so nnU-Net's reader, reads NaN voxels as 0."""
    path = tmp_path / "nan.nii.gz"
    volume = np.zeros((4, 8, 8), np.float32)
    volume[1, 2, 3] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(path))
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).any()
    with pytest.raises(PredictionError, match="nan.nii.gz: 1 voxel.s. are NaN or infinite"):
        check_channels(find_input_cases(path, 1), {"0": "CT"})


def test_complete_dicom_series_reads(series):
    image = read_dicom_series(find_input_cases(series, 1)[0])
    assert image.GetSize() == (8, 8, 6) and image.GetSpacing()[2] == pytest.approx(3.0)


def test_output_folder_must_not_be_the_input_or_anothers_output(tmp_path, model_stub, capsys, volume_writer):
    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    code, err = predict_cli(capsys, "-i", tmp_path / "in", "-o", tmp_path / "in", "-m", model_stub, "--overwrite")
    assert_one_line_error(code, err, f"{tmp_path / 'in'}: the output folder holds the input images; choose another "
                                     "output folder (segmentations would be mixed with, or replace, the images)")
    (tmp_path / "evaluated").mkdir()
    (tmp_path / "evaluated" / "metrics.json").write_text("{}")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "evaluated", "-m", model_stub)
    assert_one_line_error(code, err, f"{tmp_path / 'evaluated'}: holds the output of pu-nnunet evaluate "
                                     "(metrics.json); choose another output folder")
    code, err = predict_cli(capsys, "-i", image, "-o", image, "-m", model_stub)
    assert_one_line_error(code, err, f"{image}: the output path exists and is not a folder")
    assert image.is_file()


@pytest.mark.parametrize("name, content, problem", [
    ("plans.json", "{", "plans.json is not valid JSON (Expecting property name enclosed in double quotes: "
                        "line 1 column 2 (char 1))"),
    ("plans.json", '{"plans_name": "x"}', "no configurations; is it an nnU-Net plans file?"),
    ("dataset.json", "[]", "dataset.json must hold an object ({...}), found list"),
    ("dataset.json", '{"labels": {"background": 0}}', 'no channel_names object (e.g. {"0": "CT"})'),
])
def test_malformed_model_files(tmp_path, model_stub, capsys, volume_writer, name, content, problem):
    (model_stub / name).write_text(content)
    code, err = predict_cli(capsys, "-i", volume_writer(tmp_path / "a.nii.gz"), "-o", tmp_path / "out",
                            "-m", model_stub)
    assert_one_line_error(code, err, f"{model_stub / name}: {problem}")


def test_negative_fold_and_continue_with_overwrite(tmp_path, model_stub, capsys, volume_writer):
    image = volume_writer(tmp_path / "a.nii.gz")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub, "-f", "-1")
    assert_one_line_error(code, err, "fold -1 is negative; nnU-Net's folds are 0, 1, ... or 'all'")
    with pytest.raises(SystemExit) as stop:
        main(["predict", "-i", str(image), "-o", str(tmp_path / "out"), "-m", str(model_stub), "--overwrite",
              "--continue"])
    assert stop.value.code == 2
    assert "argument --continue/--continue_prediction/--c: not allowed with argument --overwrite" in capsys.readouterr().err


def test_record_of_another_model_is_not_replaced_by_continue(tmp_path, model_stub, capsys, volume_writer):
    image = volume_writer(tmp_path / "a.nii.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "plans.json").write_text(json.dumps({"plans_name": "another model"}))
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub, "--continue")
    assert_one_line_error(code, err, f"{tmp_path / 'out' / 'plans.json'} exists and belongs to another model; pass "
                                     "--overwrite to replace it or choose another output folder")
