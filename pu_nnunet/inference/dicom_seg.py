"""``pu-nnunet predict --output-format dicom-seg``: the segmentation of a DICOM series as one DICOM
Segmentation object (PS3.3 A.51) referencing that series, written with highdicom beside the NIfTI.

The SEG is built from the NIfTI segmentation just written (on the series' grid: the same voxels)
and the series' own slice files, in the order SimpleITK stacked them, so frame k of the label map
belongs to slice file k. Segments are the labels of the model's dataset.json (names as segment
labels); the algorithm identification names the trainer, plans, configuration, folds, checkpoint
hashes and pu-nnunet version of the model record the run writes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.inference.inputs import InputCase, dicom_series_files
from pu_nnunet.user_files import atomic_write_path

OUTPUT_FORMATS = ("nifti", "dicom-seg")
# beside CASE.nii.gz
SEG_ENDING = "_seg.dcm"
# dataset.json names classes only: their codes come from this private coding scheme (PS3.3
# 8.2: a designator starting "99" is local), the label value as code value, the name as meaning
LOCAL_SCHEME = "99PUNNUNET"
# the category says nothing more than "a segmented class": SCT 85756007 "Tissue" is what
# dcmqi and TotalSegmentator use for structures without a finer category
CATEGORY_CODE = ("85756007", "SCT", "Tissue")
# the SEG's own series; an instance is the only one in it
SEG_SERIES_NUMBER = 9901
MANUFACTURER = "pu-nnunet"


def seg_output_name(case: InputCase) -> str:
    return case.case_id + SEG_ENDING


def check_output_format(output_format: str, cases: list[InputCase], nifti: bool = True) -> None:
    """dicom-seg needs DICOM input (a SEG references its source images) and highdicom installed;
    leaving out the NIfTI (``nifti`` False) needs dicom-seg."""
    if output_format not in OUTPUT_FORMATS:
        raise PredictionError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    if output_format != "dicom-seg":
        if not nifti:
            raise PredictionError("--no-nifti leaves out the NIfTI segmentation, which is the only output without "
                                  "--output-format dicom-seg; add that or leave out --no-nifti")
        return
    not_dicom = [case for case in cases if not case.is_dicom]
    if not_dicom:
        raise PredictionError(f"{not_dicom[0].source}: --output-format dicom-seg needs a DICOM series as input (a "
                              "DICOM SEG references the images it segments); this input is NIfTI")
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise PredictionError("--output-format dicom-seg needs highdicom: pip install \"pu-nnunet[dicom]\"") from None


def _segments(dataset_json: dict) -> list[tuple[int, str]]:
    """(label value, name) of each foreground label, the ignore label left out."""
    segments = []
    for name, value in dataset_json.get("labels", {}).items():
        if not isinstance(value, int):
            raise PredictionError(f"--output-format dicom-seg: label {name!r} is a region {value}; a DICOM SEG is "
                                  "written from integer labels only")
        if value != 0 and name != "ignore":
            segments.append((value, name))
    return sorted(segments)


def _read_sources(files: list[str], folder: Path):
    """The series' slices (no pixel data), with the identifying UIDs an anonymiser may have emptied
    filled in: SOP class and instance from each file's meta header (which holds the same), study and
    series UIDs made up, the same on every run, from the frame of reference."""
    import pydicom
    from pydicom.uid import generate_uid

    sources = [pydicom.dcmread(name, stop_before_pixels=True) for name in files]
    missing = []
    for dataset in sources:
        for uid, meta in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not dataset.get(uid) and dataset.file_meta.get(meta):
                setattr(dataset, uid, dataset.file_meta[meta].value)
        for uid in ("StudyInstanceUID", "SeriesInstanceUID"):
            if not dataset.get(uid):
                if uid not in missing:
                    missing.append(uid)
                setattr(dataset, uid, generate_uid(entropy_srcs=[str(dataset.get("FrameOfReferenceUID", "")), uid]))
    if missing:
        warnings.warn(f"{folder}: the series has no {' and no '.join(missing)} (anonymised?); the DICOM SEG refers to "
                      "UIDs made up from its frame of reference, which no archive holds")
    if not sources[0].get("FrameOfReferenceUID"):
        raise PredictionError(f"{files[0]}: no Frame of Reference UID; a DICOM SEG cannot place its segments")
    return sources


def _algorithm(record: dict):
    import highdicom
    from pydicom.sr.codedict import codes

    parameters = {"plans": str(record.get("plans")), "configuration": str(record.get("configuration")),
                  "folds": ",".join(record.get("folds", [])), "checkpoint": str(record.get("checkpoint"))}
    for fold, digest in (record.get("checkpoint_sha256") or {}).items():
        parameters[f"checkpoint_sha256_fold_{fold}"] = str(digest)
    return highdicom.AlgorithmIdentificationSequence(
        name=str(record.get("trainer")), family=codes.DCM.ArtificialIntelligence,
        version=str(record.get("pu_nnunet")), source=MANUFACTURER, parameters=parameters)


def write_dicom_seg(segmentation: Path, case: InputCase, dataset_json: dict, record: dict, output: Path) -> Path:
    """Writes ``output``: a DICOM SEG of the NIfTI ``segmentation`` (on the series' grid) of the
    DICOM case, one segment per label of ``dataset_json``, frames referencing their slices."""
    import highdicom
    import SimpleITK as sitk
    from highdicom.sr.coding import CodedConcept

    files = dicom_series_files(case)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(segmentation)))  # (slices, rows, columns)
    if labels.shape[0] != len(files):
        raise PredictionError(f"{segmentation}: {labels.shape[0]} slices for the {len(files)} files of the series "
                              f"in {case.source}")
    segments = _segments(dataset_json)
    # highdicom takes a label map whose values are segment numbers 1..N
    numbering = np.zeros(int(max([labels.max(), *(value for value, _ in segments)])) + 1, dtype=np.uint8)
    for number, (value, _) in enumerate(segments, start=1):
        numbering[value] = number
    algorithm = _algorithm(record)
    dataset_name = dataset_json.get("name") or "the model's dataset"
    descriptions = []
    for number, (value, name) in enumerate(segments, start=1):
        description = highdicom.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64], segmented_property_category=CodedConcept(*CATEGORY_CODE),
            segmented_property_type=CodedConcept(str(value), LOCAL_SCHEME, name[:64]),
            algorithm_type=highdicom.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        description.SegmentDescription = f"label {value} ({name}) of {dataset_name}"[:64]
        descriptions.append(description)
    sources = _read_sources(files, case.source)
    try:
        seg = highdicom.seg.Segmentation(
            source_images=sources, pixel_array=numbering[labels], segmentation_type="BINARY",
            segment_descriptions=descriptions, series_instance_uid=highdicom.UID(), series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=highdicom.UID(), instance_number=1, manufacturer=MANUFACTURER,
            manufacturer_model_name=str(record.get("trainer")), software_versions=str(record.get("pu_nnunet")),
            device_serial_number="0", series_description=f"pu-nnunet {record.get('trainer')}"[:64],
            omit_empty_frames=False)
    except (ValueError, TypeError, AttributeError) as error:  # highdicom's checks of the source headers
        raise PredictionError(f"{case.source}: cannot write a DICOM SEG of this series: {error}") from None
    with atomic_write_path(output) as temporary:
        seg.save_as(temporary)
    return output
