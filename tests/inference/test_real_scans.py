"""``pu-nnunet predict`` on real scans (../shared/data/real-ct, one patient, Apache-2.0: see its
NOTICE.md): the JPEG 2000 DICOM series and the 3 mm int16 NIfTI CT, with the tiny model trained on
the synthetic CT. The point is I/O, geometry and HU handling, not accuracy: the segmentation must lie
on exactly the input's grid, and the DICOM SEG written from the series must hold the NIfTI's voxels
and reference the series' slices."""

import json
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

import pu_nnunet
from pu_nnunet.cli import main
from pu_nnunet.inference.inputs import dicom_series_files, find_input_cases, read_dicom_series

pytestmark = pytest.mark.slow

# the model's in-plane spacing in this copy: the trained weights at a coarser grid, so that a
# 512 x 512 series takes seconds on a CPU (the tiny model was trained at 0.8 mm: 40x the tiles)
COARSE_SPACING = [8.0, 8.0]
GEOMETRY = ("GetSize", "GetSpacing", "GetOrigin", "GetDirection")


@pytest.fixture(scope="module")
def coarse_model(tiny_trained_model, tmp_path_factory):
    model = shutil.copytree(tiny_trained_model["fold"].parent,
                            tmp_path_factory.mktemp("coarse") / tiny_trained_model["fold"].parent.name)
    plans = json.loads((model / "plans.json").read_text())
    plans["configurations"]["2d"]["spacing"] = COARSE_SPACING
    (model / "plans.json").write_text(json.dumps(plans))
    return model


def predict(source, out, model, *extra):
    return main(["predict", "-i", str(source), "-o", str(out), "-m", str(model), "--device", "cpu", "--disable_tta",
                 "--batch-size", "8", *extra])


@pytest.fixture(scope="module")
def series_prediction(real_ct, coarse_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("real_series") / "out"
    assert predict(real_ct / "dicom_series", out, coarse_model, "--output-format", "dicom-seg") == 0
    return out


def assert_same_grid(written: sitk.Image, source: sitk.Image) -> None:
    for geometry in GEOMETRY:
        assert getattr(written, geometry)() == getattr(source, geometry)(), geometry


def test_the_series_segmentation_lies_on_the_series_grid(real_ct, series_prediction, coarse_model):
    series = read_dicom_series(find_input_cases(real_ct / "dicom_series", 1)[0])
    written = sitk.ReadImage(str(series_prediction / "dicom_series.nii.gz"))
    assert_same_grid(written, series)
    labels = json.loads((coarse_model / "dataset.json").read_text())["labels"]
    found = np.unique(sitk.GetArrayViewFromImage(written))
    # the SEG test below compares voxels: it must have some foreground to compare
    assert set(found.tolist()) <= set(labels.values()) and len(found) > 1


def test_the_nifti_ct_segmentation_lies_on_its_grid(real_ct, coarse_model, tmp_path):
    source = real_ct / "ct_abdomen_3mm.nii.gz"
    image = sitk.ReadImage(str(source))
    assert image.GetPixelID() == sitk.sitkInt16 and image.GetDirection()[:2] == (-1.0, 0.0)  # HU, x flipped
    assert predict(source, tmp_path / "out", coarse_model) == 0
    assert_same_grid(sitk.ReadImage(str(tmp_path / "out" / "ct_abdomen_3mm.nii.gz")), image)


def test_the_dicom_seg_holds_the_nifti_voxels_and_references_the_series(real_ct, series_prediction, coarse_model):
    import highdicom

    path = series_prediction / "dicom_series_seg.dcm"
    seg = highdicom.seg.segread(path)
    nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(series_prediction / "dicom_series.nii.gz")))
    files = dicom_series_files(find_input_cases(real_ct / "dicom_series", 1)[0])
    slices = [pydicom.dcmread(name, stop_before_pixels=True) for name in files]
    # the slices' SOP instance UIDs live in their file meta only (the series is anonymised)
    slice_of = {s.file_meta.MediaStorageSOPInstanceUID: index for index, s in enumerate(slices)}
    labels = {name: value for name, value in json.loads((coarse_model / "dataset.json").read_text())["labels"].items()
              if value != 0}
    assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [
        (number, name) for number, name in enumerate(sorted(labels, key=labels.get), start=1)]
    label_of_segment = {s.SegmentNumber: labels[s.SegmentLabel] for s in seg.SegmentSequence}

    # every frame placed by the slice it references (not by frame order), every voxel compared
    rebuilt = np.zeros_like(nifti)
    pixels = seg.pixel_array
    for frame, groups in enumerate(seg.PerFrameFunctionalGroupsSequence):
        source = groups.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        index = slice_of[source]
        assert [float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient] == \
            [float(v) for v in slices[index].ImagePositionPatient]
        segment = groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        rebuilt[index][pixels[frame] > 0] = label_of_segment[segment]
    assert np.array_equal(rebuilt, nifti)

    # the referenced series and frame of reference: the source's, its emptied UIDs made up as written
    frame_of_reference = slices[0].FrameOfReferenceUID
    assert seg.FrameOfReferenceUID == frame_of_reference
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == generate_uid(entropy_srcs=[frame_of_reference, "SeriesInstanceUID"])
    assert sorted(i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence) == sorted(slice_of)

    # the algorithm: the model record's trainer, version and checkpoint hash
    record = json.loads((series_prediction / "model_record.json").read_text())
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == record["trainer"] == "nnUNetTrainerPURe_tiny"
    assert algorithm.AlgorithmVersion == pu_nnunet.__version__
    assert f"checkpoint_sha256_fold_0={record['checkpoint_sha256']['0']}" in algorithm.AlgorithmParameters


def test_no_nifti_writes_the_same_seg_alone(real_ct, series_prediction, coarse_model, tmp_path, capsys):
    out = tmp_path / "seg_only"
    assert predict(real_ct / "dicom_series", out, coarse_model, "--output-format", "dicom-seg", "--no-nifti") == 0
    assert not list(out.glob("*.nii.gz")) and (out / "dicom_series_seg.dcm").is_file()
    alone, beside = (pydicom.dcmread(folder / "dicom_series_seg.dcm") for folder in (out, series_prediction))
    assert np.array_equal(alone.pixel_array, beside.pixel_array)
    # --continue: the SEG is the case's output, so the case is done
    capsys.readouterr()
    assert predict(real_ct / "dicom_series", out, coarse_model, "--output-format", "dicom-seg", "--no-nifti",
                   "--continue") == 0
    assert "wrote 0 segmentation(s)" in capsys.readouterr().out and not list(out.glob("*.nii.gz"))
