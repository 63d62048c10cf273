"""``predict --output-format dicom-seg`` refusals before any model is loaded, and the source slices'
identifying UIDs an anonymiser emptied (the real series, ../shared/data/real-ct)."""

import sys
import warnings

import SimpleITK as sitk
from pydicom.uid import generate_uid

from pu_nnunet.cli import main
from pu_nnunet.inference.dicom_seg import _read_sources
from pu_nnunet.inference.inputs import dicom_series_files, find_input_cases


def predict_cli(capsys, *args):
    code = main(["predict", *map(str, args)])
    return code, capsys.readouterr().err


def test_nifti_input_is_refused(tmp_path, model_stub, capsys, volume_writer):
    image = volume_writer(tmp_path / "in" / "case_0000.nii.gz")
    code, err = predict_cli(capsys, "-i", image, "-o", tmp_path / "out", "-m", model_stub, "--output-format",
                            "dicom-seg")
    assert code == 1 and err == (f"pu-nnunet predict: error: {image}: --output-format dicom-seg needs a DICOM series "
                                 "as input (a DICOM SEG references the images it segments); this input is NIfTI\n")
    assert not (tmp_path / "out").exists()


def test_without_highdicom_the_refusal_says_what_to_install(tmp_path, model_stub, capsys, volume_writer,
                                                           dicom_writer, monkeypatch):
    series = dicom_writer(sitk.ReadImage(str(volume_writer(tmp_path / "v.nii.gz"))), tmp_path / "patient")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # import highdicom now raises ImportError
    code, err = predict_cli(capsys, "-i", series, "-o", tmp_path / "out", "-m", model_stub, "--output-format",
                            "dicom-seg")
    assert code == 1 and err == ("pu-nnunet predict: error: --output-format dicom-seg needs highdicom: pip install "
                                 "\"pu-nnunet[dicom]\"\n")


def test_emptied_uids_are_filled_and_said(real_ct):
    files = dicom_series_files(find_input_cases(real_ct / "dicom_series", 1)[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sources = _read_sources(files, real_ct / "dicom_series")
    assert [str(w.message) for w in caught] == [
        f"{real_ct / 'dicom_series'}: the series has no StudyInstanceUID and no SeriesInstanceUID (anonymised?); the "
        "DICOM SEG refers to UIDs made up from its frame of reference, which no archive holds"]
    frame_of_reference = sources[0].FrameOfReferenceUID
    for source in sources:
        # the file meta holds the SOP identity the anonymiser emptied in the data set
        assert source.SOPInstanceUID == source.file_meta.MediaStorageSOPInstanceUID != ""
        assert source.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
        # the same on every run, so that two runs' SEGs refer to one series
        assert source.SeriesInstanceUID == generate_uid(entropy_srcs=[frame_of_reference, "SeriesInstanceUID"])
    assert len({s.SOPInstanceUID for s in sources}) == len(files) == 20


def test_no_nifti_needs_dicom_seg(tmp_path, model_stub, capsys, volume_writer, dicom_writer):
    series = dicom_writer(sitk.ReadImage(str(volume_writer(tmp_path / "v.nii.gz"))), tmp_path / "patient")
    code, err = predict_cli(capsys, "-i", series, "-o", tmp_path / "out", "-m", model_stub, "--no-nifti")
    assert code == 1 and err == ("pu-nnunet predict: error: --no-nifti leaves out the NIfTI segmentation, which is the "
                                 "only output without --output-format dicom-seg; add that or leave out --no-nifti\n")
