"""DICOM series in every transfer syntax GDCM reads: the real JPEG 2000 series (../shared/data/real-ct)
is accepted, and three of its slices re-encoded as JPEG lossless, JPEG-LS, RLE, deflated and native
read to the same HU values; a truncated slice of each is refused with the file named."""

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.encaps import encapsulate
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGLosslessSV1, JPEGLSLossless,
                         RLELossless)

from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.inference.inputs import check_channels, find_input_cases, read_dicom_series
from pu_nnunet.user_files import damaged_file_problem, dicom_file_problem

SLICES = 3
# the real series' shape and HU range (SimpleITK applies the rescale: stored 0..2460, intercept -1024)
REAL_SERIES_SIZE = (512, 512, 20)
REAL_HU_RANGE = (-1024, 1839)


def _real_slices(real_ct) -> list:
    return sorted((real_ct / "dicom_series").iterdir())


def _jpeg_lossless_fragment(stored: np.ndarray, scratch) -> bytes:
    """GDCM's JPEG lossless (process 14) encoding of one slice: pydicom has no such encoder."""
    path = scratch / "gdcm_jpeg.dcm"
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.SetFileName(str(path))
    writer.UseCompressionOn()
    writer.SetCompressor("JPEG")
    writer.Execute(sitk.GetImageFromArray(stored))
    written = pydicom.dcmread(path)
    assert written.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    return next(pydicom.encaps.generate_frames(written.PixelData, number_of_frames=1))


def _reencode(source, target, syntax: str, scratch) -> None:
    dataset = pydicom.dcmread(source)
    stored = dataset.pixel_array
    if syntax in (JPEGLSLossless, RLELossless):
        dataset.compress(syntax, stored)
    elif syntax == JPEGLosslessSV1:
        dataset.PixelData = encapsulate([_jpeg_lossless_fragment(stored, scratch)])
        dataset["PixelData"].VR = "OB"
        dataset.file_meta.TransferSyntaxUID = syntax
    else:  # native: explicit VR little endian, or the same deflated
        dataset.decompress()
        dataset.file_meta.TransferSyntaxUID = syntax
    dataset.save_as(target, enforce_file_format=True)
    assert pydicom.dcmread(target).file_meta.TransferSyntaxUID == syntax


SYNTAXES = {"jpeg2000": None, "jpeg_lossless": JPEGLosslessSV1, "jpeg_ls": JPEGLSLossless, "rle": RLELossless,
            "deflate": DeflatedExplicitVRLittleEndian, "native": ExplicitVRLittleEndian}


@pytest.fixture(scope="module")
def series_by_syntax(real_ct, tmp_path_factory):
    """The first slices of the real series, one folder per transfer syntax (jpeg2000: the files
    as they are)."""
    root = tmp_path_factory.mktemp("syntaxes")
    folders = {}
    for name, syntax in SYNTAXES.items():
        folder = root / name
        folder.mkdir()
        for source in _real_slices(real_ct)[:SLICES]:
            if syntax is None:
                shutil.copy(source, folder / source.name)
            else:
                _reencode(source, folder / source.name, syntax, root)
        folders[name] = folder
    return folders


def test_the_real_jpeg2000_series_is_accepted(real_ct):
    case = find_input_cases(real_ct / "dicom_series", 1)[0]
    assert pydicom.dcmread(_real_slices(real_ct)[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    check_channels([case], {"0": "CT"})
    image = read_dicom_series(case)
    values = sitk.GetArrayViewFromImage(image)
    assert image.GetSize() == REAL_SERIES_SIZE and (int(values.min()), int(values.max())) == REAL_HU_RANGE


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_every_compressed_syntax_reads_the_same_hu(series_by_syntax, syntax):
    case = find_input_cases(series_by_syntax[syntax], 1)[0]
    check_channels([case], {"0": "CT"})
    expected = sitk.GetArrayFromImage(read_dicom_series(find_input_cases(series_by_syntax["jpeg2000"], 1)[0]))
    assert np.array_equal(sitk.GetArrayFromImage(read_dicom_series(case)), expected)
    assert all(dicom_file_problem(path) is None for path in series_by_syntax[syntax].iterdir())


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_a_truncated_slice_of_every_syntax_is_refused(series_by_syntax, syntax, keep, tmp_path):
    folder = shutil.copytree(series_by_syntax[syntax], tmp_path / syntax)
    damaged = sorted(folder.iterdir())[1]
    data = damaged.read_bytes()
    damaged.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(PredictionError) as error:
        find_input_cases(folder, 1)  # before GDCM scans the folder (seconds per cut compressed file)
    message = str(error.value)
    assert message.startswith(f"{damaged}: damaged DICOM file: ") and message.endswith("; repair or remove it")
    # what is missing, where GDCM alone would leave the file out of the series without a word
    expected = {"deflate": "truncated or corrupt deflated DICOM data",
                "native": "truncated: "}.get(syntax, "no complete pixel data: the file ends before its pixel data")
    assert expected in message


def test_an_encapsulated_item_cut_short_is_named(series_by_syntax, tmp_path):
    """An item that claims more bytes than the pixel data holds (delimiter present): the check walks
    the items, not the file size."""
    dataset = pydicom.dcmread(sorted(series_by_syntax["rle"].iterdir())[0])
    frame = next(pydicom.encaps.generate_frames(dataset.PixelData, number_of_frames=1))
    dataset.PixelData = encapsulate([frame])[:-100]
    dataset.save_as(tmp_path / "cut.dcm")
    assert dicom_file_problem(tmp_path / "cut.dcm") == (
        "truncated: a compressed pixel data item of %d bytes ends 100 bytes past the pixel data (file cut short?)"
        % len(frame))
    assert damaged_file_problem(tmp_path / "cut.dcm") == dicom_file_problem(tmp_path / "cut.dcm")
