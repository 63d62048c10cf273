"""What ``pu-nnunet predict`` reads: a NIfTI file, a folder of them, or a DICOM series folder.

Each input becomes an :class:`InputCase`: its output name and the files holding its channels,
in channel order. Files follow nnU-Net's naming where they can (``CASE_0000.nii.gz``,
``CASE_0001.nii.gz``, ... for a model with several channels) but a plain ``CASE.nii.gz`` is a
case too. Headers are read here, before any model is loaded, so that an unreadable file or a
wrong channel count stops the command at once with the file named.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.user_errors import error_reason
from pu_nnunet.user_files import (broken_link_problem, check_no_broken_links, damaged_file_problem,
                                  dicom_file_problem)

# longest first: "x.nii.gz" also ends with ".gz" but never with ".nii"
NIFTI_ENDINGS = (".nii.gz", ".nii")
# every segmentation is written as compressed NIfTI, whatever the model was trained on
OUTPUT_ENDING = ".nii.gz"
# beside it with --save_probabilities, as nnU-Net's export writes them
PROBABILITY_ENDINGS = (".npz", ".pkl")
# nnU-Net's channel suffix: CASE_XXXX with four digits (documentation/dataset_format.md)
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
# SimpleITK stores several channels in one file as a 4th image dimension (nnU-Net's SimpleITKIO
# reads them as channels)
CHANNEL_DIMENSION = 4
# DICOM part 10 files: a 128-byte preamble, then these four bytes
DICOM_PREAMBLE_BYTES = 128
DICOM_MAGIC = b"DICM"
# slice positions may step this much (relative) apart from the series' usual step: DICOM stores
# positions as decimal strings, rounded
SLICE_SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class InputCase:
    """One volume to segment; the segmentation goes to ``OUTPUT_DIR/case_id.nii.gz``.

    A NIfTI case lists its channel files; a DICOM case names its folder and series instead.
    """

    case_id: str
    source: Path
    channel_files: tuple[Path, ...] = ()
    dicom_series_id: str | None = None

    @property
    def is_dicom(self) -> bool:
        return self.dicom_series_id is not None

    @property
    def output_name(self) -> str:
        return self.case_id + OUTPUT_ENDING


def nifti_stem(path: Path) -> str | None:
    """The file name without its NIfTI ending, or None for a file that is not NIfTI."""
    for ending in NIFTI_ENDINGS:
        if path.name.lower().endswith(ending):
            return path.name[: -len(ending)]
    return None


def _split_channel(stem: str) -> tuple[str, int | None]:
    match = CHANNEL_SUFFIX.match(stem)
    if match is None:
        return stem, None
    return match["case"], int(match["channel"])


def _group_nifti_files(files: list[Path], num_channels: int) -> list[InputCase]:
    """Groups CASE_0000 .. CASE_{n-1} into one case; every other NIfTI file is a case of its own.

    Only a file ending in _0000 opens a group, so numbered case names such as ``amos_0001`` are
    cases, not channels, for a one-channel model.
    """
    by_stem: dict[str, Path] = {}
    for path in files:
        if nifti_stem(path) in by_stem:  # CASE.nii beside CASE.nii.gz
            case_id, channel = _split_channel(nifti_stem(path))
            output = (case_id if channel == 0 else nifti_stem(path)) + OUTPUT_ENDING
            raise PredictionError(f"{by_stem[nifti_stem(path)]} and {path} would both be written to {output}; "
                                  "rename one of them")
        by_stem[nifti_stem(path)] = path
    numbered: dict[str, list[tuple[int, Path]]] = defaultdict(list)  # case id -> its CASE_XXXX files
    for stem, path in by_stem.items():
        case_id, channel = _split_channel(stem)
        if channel is not None:
            numbered[case_id].append((channel, path))
    cases, used = [], set()
    for stem, path in sorted(by_stem.items()):
        case_id, channel = _split_channel(stem)
        if channel != 0:
            continue
        channel_files = [path]
        for index in range(1, num_channels):
            sibling = by_stem.get(f"{case_id}_{index:04d}")
            if sibling is None:
                ending = path.name[len(stem):]
                raise PredictionError(
                    f"{path.parent / f'{case_id}_{index:04d}{ending}'} is missing: the model expects "
                    f"{num_channels} channels, one file each ({case_id}_0000 .. {case_id}_{num_channels - 1:04d})")
            channel_files.append(sibling)
        extra = sorted(other.name for number, other in numbered[case_id] if number >= num_channels)
        if extra:
            expected = f"{case_id}_0000" + (f" .. {case_id}_{num_channels - 1:04d}" if num_channels > 1 else " only")
            # nnU-Net's naming makes these further channels of one case, not cases of their own
            raise PredictionError(
                f"{path.parent}: {path.name} and {', '.join(extra)} are channels of one case {case_id} (nnU-Net "
                f"naming CASE_XXXX), but the model takes {num_channels} channel(s) ({expected}); remove the extra "
                "channel file(s), or give separate cases names that do not end in _0000, _0001")
        used.update(channel_files)
        cases.append(InputCase(case_id, path, tuple(channel_files)))
    for stem, path in sorted(by_stem.items()):
        if path not in used:
            cases.append(InputCase(stem, path, (path,)))
    return sorted(cases, key=lambda case: case.case_id)


def _dicom_cases(folder: Path) -> list[InputCase]:
    import SimpleITK as sitk

    _check_dicom_files(folder)
    # ITK warns on stderr for a folder without a series; our own message says it better
    series_ids = sorted(_quietly(sitk.ImageSeriesReader.GetGDCMSeriesIDs, str(folder)))
    if len(series_ids) == 1:
        # the usual layout, one series per folder: the folder names the patient or study
        return [InputCase(folder.name, folder, dicom_series_id=series_ids[0])]
    return [InputCase(series_id, folder, dicom_series_id=series_id) for series_id in series_ids]


def find_input_cases(input_path: str | Path, num_channels: int) -> list[InputCase]:
    """The cases in INPUT (a NIfTI file, a folder of NIfTI files, or a DICOM series folder).

    ``num_channels`` is the model's (dataset.json ``channel_names``): it decides which
    ``CASE_XXXX`` files belong together.
    """
    path = Path(input_path)
    link = broken_link_problem(path)
    if link is not None:
        raise PredictionError(f"{path}: {link}")
    if not path.exists():
        raise PredictionError(f"{path}: input not found")
    if path.is_file():
        if nifti_stem(path) is None:
            raise PredictionError(f"input {path} is not a NIfTI file (.nii, .nii.gz); give a NIfTI file, a folder "
                                  "of them or a DICOM series folder")
        case_id, channel = _split_channel(nifti_stem(path))
        if channel == 0:
            check_no_broken_links(path.parent, PredictionError, f"{case_id}_*")
            siblings = [f for f in path.parent.iterdir() if f.is_file() and nifti_stem(f) is not None
                        and _split_channel(nifti_stem(f))[0] == case_id]
            return [case for case in _group_nifti_files(siblings, num_channels) if case.source == path]
        return [InputCase(nifti_stem(path), path, (path,))]
    check_no_broken_links(path, PredictionError)  # a listing of files would skip the case silently
    nifti_files = sorted(f for f in path.iterdir() if f.is_file() and nifti_stem(f) is not None)
    cases = _group_nifti_files(nifti_files, num_channels) if nifti_files else _dicom_cases(path)
    if not cases:
        raise PredictionError(f"no NIfTI images (.nii, .nii.gz) and no DICOM series in {path}")
    _check_unique_outputs(cases)
    return cases


def _check_unique_outputs(cases: list[InputCase]) -> None:
    seen: dict[str, InputCase] = {}
    for case in cases:
        if case.case_id in seen:
            raise PredictionError(f"{seen[case.case_id].source} and {case.source} would both be written to "
                                  f"{case.output_name}; rename one of them")
        seen[case.case_id] = case


def _header(path: Path):
    """SimpleITK's reader with the header of ``path`` read (no voxels)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise PredictionError(f"{path}: cannot read: {error_reason(error)}") from None
    return reader


def check_spacing(spacing, path: Path) -> None:
    """A zero, negative or NaN voxel size would be resampled into garbage without an error."""
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise PredictionError(f"{path}: voxel spacing {tuple(spacing)} is not finite and positive")


def count_channels(case: InputCase) -> int:
    """Channels in the case's files, from their headers; an unreadable file is a PredictionError."""
    if case.is_dicom:
        return 1
    total = 0
    for path in case.channel_files:
        reader = _header(path)
        check_spacing(reader.GetSpacing(), path)
        total += reader.GetSize()[-1] if reader.GetDimension() == CHANNEL_DIMENSION else 1
    return total


def check_complete(case: InputCase) -> None:
    """Every file of the case holds all the data its header promises (SimpleITK would fill a
    truncated .nii.gz with zeros, and prediction would segment that), and a DICOM series holds
    every slice of its folder."""
    if case.is_dicom:
        dicom_series_files(case)
        return
    for path in case.channel_files:
        problem = damaged_file_problem(path)
        if problem is not None:
            raise PredictionError(f"{path}: {problem}")


def check_channels(cases: list[InputCase], channel_names: dict[str, str]) -> None:
    """Every case must hold as many channels as the model was trained on, in complete files."""
    expected = len(channel_names)
    for case in cases:
        check_complete(case)
        found = count_channels(case)
        if found != expected:
            names = ", ".join(channel_names.values())
            raise PredictionError(f"{case.source}: the model expects {expected} channel(s) ({names}) but this input "
                                  f"has {found}")


def _quietly(function, *args):
    """Calls a SimpleITK function with ITK's own stderr warnings off (our messages say more)."""
    import SimpleITK as sitk

    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return function(*args)
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _looks_like_dicom(path: Path) -> bool:
    """DICOM part 10 files carry "DICM" after a 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            handle.seek(DICOM_PREAMBLE_BYTES)
            return handle.read(len(DICOM_MAGIC)) == DICOM_MAGIC
    except OSError:
        return False


def _check_dicom_files(folder: Path) -> None:
    """Every DICOM file of the folder holds all of its pixel data (:func:`dicom_file_problem`: in
    any transfer syntax; the file size says nothing once compressed). Checked before GDCM scans
    the folder: GDCM leaves a cut file out of the series without a word, after seconds spent
    searching it for the end of its pixel data."""
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if _looks_like_dicom(path):
            problem = dicom_file_problem(path)
            if problem is not None:
                raise PredictionError(f"{path}: damaged DICOM file: {problem}; repair or remove it")


def dicom_series_files(case: InputCase) -> list[str]:
    """The slice files of the case's series, each checked: GDCM leaves a slice it cannot parse
    out of the series without a word, which would shorten the volume and change its spacing.
    So every DICOM file of the folder must be complete (checked when the case is found, see
    :func:`_check_dicom_files`) and belong to a series, every slice's header must read and its
    pixels decode, and the slices must be evenly spaced."""
    import SimpleITK as sitk

    folder = case.source
    files = list(_quietly(sitk.ImageSeriesReader.GetGDCMSeriesFileNames, str(folder), case.dicom_series_id))
    in_series = {Path(f).resolve() for f in _all_series_files(folder)}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        if path.resolve() not in in_series and _looks_like_dicom(path):
            raise PredictionError(f"{path}: a DICOM file that belongs to no readable series (damaged slice?); "
                                  "repair or remove it")
    positions = []
    for name in files:
        reader = _header(Path(name))
        check_spacing(reader.GetSpacing()[:2], Path(name))
        try:
            image = _quietly(reader.Execute)
        except RuntimeError as error:
            raise PredictionError(f"{name}: damaged DICOM slice: {error_reason(error)}") from None
        positions.append(image.GetOrigin())
    _check_even_slice_spacing(files, positions)
    return files


def _all_series_files(folder: Path) -> list[str]:
    import SimpleITK as sitk

    names = []
    for series in _quietly(sitk.ImageSeriesReader.GetGDCMSeriesIDs, str(folder)):
        names += _quietly(sitk.ImageSeriesReader.GetGDCMSeriesFileNames, str(folder), series)
    return names


def _check_even_slice_spacing(files: list[str], positions: list[tuple[float, ...]]) -> None:
    """A missing slice shows as a gap between slice positions; ITK would only warn and stretch."""
    if len(positions) < 3:
        return
    points = [tuple(float(c) for c in p) for p in positions]
    steps = [math.dist(a, b) for a, b in zip(points, points[1:])]
    typical = sorted(steps)[len(steps) // 2]
    for index, step in enumerate(steps):
        if typical <= 0 or abs(step - typical) > SLICE_SPACING_TOLERANCE * typical:
            raise PredictionError(f"{files[index + 1]}: slice {step:.3f} mm from the previous one where the series "
                                  f"steps {typical:.3f} mm; a slice is missing or duplicated")


def read_dicom_series(case: InputCase):
    """The case's DICOM series as one SimpleITK image (geometry from the slice positions)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(dicom_series_files(case))
    try:
        return _quietly(reader.Execute)
    except RuntimeError as error:
        raise PredictionError(f"cannot read the DICOM series {case.dicom_series_id} in {case.source}: "
                              f"{error_reason(error)}") from None


def materialise_case(case: InputCase, scratch: Path) -> list[str]:
    """Files nnU-Net's reader can open for the case: its NIfTI files, or its DICOM series written
    to one NIfTI file in ``scratch`` (so both go through the model's own reader)."""
    if not case.is_dicom:
        return [str(f) for f in case.channel_files]
    import SimpleITK as sitk

    target = scratch / f"{case.case_id}_0000{OUTPUT_ENDING}"
    sitk.WriteImage(read_dicom_series(case), str(target), True)
    return [str(target)]
