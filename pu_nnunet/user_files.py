"""Reading the files a user hands in, so that a damaged one is an error naming it, never a
silently wrong result.

- :func:`read_user_json`: the one reader of user-supplied JSON (dataset.json, splits_final.json,
  cases.json, metrics.json, plans.json): missing, unreadable or malformed files and a wrong
  top-level type become one error ``PATH: what is wrong``.
- :func:`damaged_file_problem`: whether an image file ends where its header says it does and
  holds what its format allows. SimpleITK reads a ``.nii.gz`` cut short without complaint and
  fills the missing voxels with zeros, reads NaN voxels as 0 and a zero voxel size as 1;
  nnU-Net's readers (and so evaluation and prediction) would score or segment that.
- :func:`dicom_file_problem`: whether a DICOM file holds all of its pixel data, in any transfer
  syntax (native, deflated, or encapsulated JPEG / JPEG-LS / JPEG 2000 / RLE).
- :func:`atomic_write_path`: a temporary name beside a file, renamed into place when complete.
  Every temporary this package writes beside a user's file is named by :func:`temporary_name`
  (``.NAME.partial-PID-HOST-TOKEN``) and swept by :func:`sweep_stale_temporaries` when a later
  command starts writing into that folder.

Each part passes its own error class (``DatasetError``, ``EvaluationError``, ``PredictionError``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import socket
import struct
import warnings
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pu_nnunet.user_errors import UserInputError

# decompression chunk: large enough to be fast, small enough to keep memory flat for big volumes
GZIP_CHUNK_BYTES = 1 << 22
NIFTI_ENDINGS = (".nii.gz", ".nii")
GZIP_MAGIC = b"\x1f\x8b"
# sizeof_hdr of the two NIfTI versions; pixdim sits at byte 76 (8 float32) / 104 (8 float64)
NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540
# pixdim and the sform's voxel sizes are written from one geometry; float32 storage makes them
# differ by ~1e-7, a header edited by hand by much more
HEADER_SPACING_RTOL = 1e-3
HEADER_SPACING_ATOL = 1e-4
# sform and qform may map a voxel to points this far apart (mm) before the file is ambiguous:
# both are stored as float32 (quaternion and matrix), which alone moves a corner by ~1e-4 mm
GEOMETRY_FORMS_TOLERANCE_MM = 1e-2
# the sform's axes may be this far from perpendicular (cosine of their angle): float32 storage
# of a rotated grid gives ~1e-7, a sheared one (which no scanner grid is) much more
SHEAR_COSINE_TOLERANCE = 1e-4
# DICOM encapsulated pixel data (PS3.5 A.4): items, each a 4-byte tag (FFFE,E000) and a 4-byte
# little-endian length, then that many bytes; pydicom hands the items without the sequence delimiter
DICOM_ITEM_TAG = b"\xfe\xff\x00\xe0"
DICOM_ITEM_HEADER_BYTES = 8
BITS_PER_BYTE = 8
# marker of temporary files and folders this package writes and renames into place, and of the
# old version moved aside while a new one replaces it; both are followed by PID-TOKEN
PARTIAL_MARKER = ".partial-"
REPLACED_MARKER = ".replaced-"
# hex digits of the host name's hash in a temporary name: 2**32 values, so two machines sharing a
# folder are told apart unless their names collide by chance
HOST_TAG_CHARS = 8

_JSON_TYPE_NAMES = {dict: "an object ({...})", list: "a list ([...])"}


def _reject_constant(token: str) -> None:
    raise ValueError(f"non-standard JSON token {token}")


def read_user_json(path: str | Path, what: str = "JSON file", expected_type: type | None = None,
                   error: type[Exception] = UserInputError, allow_nan: bool = False) -> Any:
    """The content of a JSON file the user hands in.

    Args:
        what: what the file is, for the message ("dataset.json", "split file", ...).
        expected_type: ``dict`` or ``list``: the top-level value must be of this type.
        error: the exception class raised (its message is ``PATH: what is wrong``).
        allow_nan: accept the bare NaN/Infinity tokens nnU-Net writes into its own JSON files.
    """
    path = Path(path)
    if not path.exists():
        raise error(f"{path}: {what} not found")
    if path.is_dir():
        raise error(f"{path}: is a folder, expected the {what} file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: {what} is not UTF-8 text (is it a JSON file?)") from None
    except OSError as failure:
        raise error(f"{path}: cannot read the {what}: {failure.strerror or failure}") from None
    try:
        content = json.loads(text, parse_constant=None if allow_nan else _reject_constant)
    except ValueError as failure:
        problem = "empty file" if not text.strip() else str(failure)
        raise error(f"{path}: {what} is not valid JSON ({problem})") from None
    if expected_type is not None and not isinstance(content, expected_type):
        raise error(f"{path}: {what} must hold {_JSON_TYPE_NAMES.get(expected_type, expected_type.__name__)}, "
                    f"found {type(content).__name__}")
    return content


def read_splits(path: str | Path, error: type[Exception] = UserInputError) -> list[dict[str, list[str]]]:
    """An nnU-Net ``splits_final.json``: a non-empty list of folds ``{"train": [...], "val": [...]}``
    of case ids, each with validation cases and without a case on both sides."""
    path = Path(path)
    splits = read_user_json(path, "split file", list, error)
    if not splits:
        raise error(f"{path}: the split file holds no fold (an empty list)")
    for fold, split in enumerate(splits):
        if not isinstance(split, dict) or not all(
                isinstance(split.get(side), list) and all(isinstance(c, str) for c in split[side])
                for side in ("train", "val")):
            raise error(f"{path}: fold {fold} must be {{\"train\": [case ids], \"val\": [case ids]}}, "
                        f"found {str(split)[:80]}")
        if not split["val"] or not split["train"]:
            raise error(f"{path}: fold {fold} has no {'validation' if not split['val'] else 'training'} cases")
        overlap = sorted(set(split["train"]) & set(split["val"]))
        if overlap:
            raise error(f"{path}: fold {fold} has {len(overlap)} case(s) in both train and val, e.g. {overlap[0]}")
    return splits


def check_fold_number(fold: int, num_folds: int, path: str | Path, error: type[Exception] = UserInputError) -> None:
    """Folds are numbered 0 .. num_folds-1; a negative number would silently pick a fold from the end."""
    if not 0 <= fold < num_folds:
        raise error(f"{path}: no fold {fold}; the split file has folds 0 to {num_folds - 1}")


def _gzip_size(path: Path) -> int:
    """Decompressed size of a gzip file; raises EOFError / OSError / zlib.error if damaged."""
    size = 0
    with gzip.open(path, "rb") as stream:
        while True:
            chunk = stream.read(GZIP_CHUNK_BYTES)
            if not chunk:
                return size
            size += len(chunk)


def _starts_like_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def _raw_voxel_sizes(path: Path, count: int) -> list[float] | None:
    """pixdim[1..count] as stored (nibabel's header "fixes" a zero to 1 while loading); None for a
    header that is not NIfTI-1 or NIfTI-2."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as stream:
        raw = stream.read(NIFTI2_HEADER_BYTES)
    for order in "<>":
        if len(raw) >= NIFTI1_HEADER_BYTES and struct.unpack(order + "i", raw[:4])[0] == NIFTI1_HEADER_BYTES:
            return list(struct.unpack(order + "8f", raw[76:108]))[1: 1 + count]
        if len(raw) >= NIFTI2_HEADER_BYTES and struct.unpack(order + "i", raw[:4])[0] == NIFTI2_HEADER_BYTES:
            return list(struct.unpack(order + "8d", raw[104:168]))[1: 1 + count]
    return None


def _sform_voxel_sizes(header, count: int) -> list[float] | None:
    """Column lengths of the sform's 3x3 part, or None when the header has no sform."""
    import numpy as np

    if not count or int(header["sform_code"]) <= 0:
        return None
    matrix = np.stack([header["srow_x"], header["srow_y"], header["srow_z"]])[:, :3].astype(float)
    return [float(v) for v in np.sqrt((matrix ** 2).sum(axis=0))[:count]]


def _grid_corners(shape) -> "np.ndarray":
    """The voxel indices of the image grid's corners (4 x N homogeneous columns)."""
    import itertools

    import numpy as np

    extents = [(0, max(int(n) - 1, 0)) for n in (list(shape[:3]) + [1, 1, 1])[:3]]
    return np.array([[*corner, 1.0] for corner in itertools.product(*extents)], dtype=float).T


def _geometry_problem(header, shape) -> str | None:
    """A sheared sform, or an sform and a qform (both set) that put the image in different places:
    SimpleITK reads one of them, nibabel and other tools may read the other, and a mask would land
    elsewhere in each."""
    import numpy as np

    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform is not None:
        axes = sform[:3, :3] / np.maximum(np.linalg.norm(sform[:3, :3], axis=0), 1e-12)
        cosines = np.abs(axes.T @ axes - np.eye(3))
        if cosines.max() > SHEAR_COSINE_TOLERANCE:
            angle = float(np.degrees(np.arcsin(min(1.0, cosines.max()))))
            return (f"the sform holds a shear (its axes are {angle:.2f} degrees off perpendicular), which ITK and "
                    "nnU-Net cannot represent, so readers disagree on where each voxel lies; resample the image to an "
                    "unsheared grid, or keep the qform (e.g. nibabel: img.set_sform(img.get_qform()))")
    if sform is None or qform is None:
        return None
    corners = _grid_corners(shape)
    distance = float(np.linalg.norm((sform - qform) @ corners, axis=0).max())
    if distance > GEOMETRY_FORMS_TOLERANCE_MM:
        return (f"sform (code {int(sform_code)}) and qform (code {int(qform_code)}) disagree: the same voxel lies up "
                f"to {distance:.3g} mm apart in the two; readers differ in which one they use, so the image is "
                "ambiguous; keep the right one and write it into both, e.g. nibabel: img.set_qform(img.get_sform()) "
                "(or img.set_sform(img.get_qform())), then save")
    return None


def _nifti_problem(path: Path, size: int) -> str | None:
    """What is wrong with a NIfTI file holding ``size`` bytes (decompressed): fewer bytes than its
    header promises, a voxel size that is zero or not finite (SimpleITK and nibabel silently read
    it as 1), or NaN/Inf voxels (SimpleITK silently reads them as 0)."""
    import nibabel
    import numpy as np

    try:
        # nibabel logs its own header fixes ("setting 0 dims to 1") to stderr: our message says more
        logger, was_disabled = nibabel.imageglobals.logger, nibabel.imageglobals.logger.disabled
        logger.disabled = True
        try:
            image = nibabel.load(str(path))
        finally:
            logger.disabled = was_disabled
    except Exception as failure:  # nibabel raises many types for broken headers
        return f"not a readable NIfTI file ({type(failure).__name__}: {failure})"
    header = image.header
    shape = header.get_data_shape()
    # the array proxy knows where the voxels start (the loaded header's own offset may read 0)
    expected = int(getattr(image.dataobj, "offset", 0)) + int(np.prod(shape, dtype=np.int64)) * \
        header.get_data_dtype().itemsize
    if size < expected:
        return f"truncated: the header promises {expected} bytes of image data and header, the file holds {size}"
    spacing = _raw_voxel_sizes(path, min(len(shape), 3))
    if spacing is not None and not all(np.isfinite(s) and s > 0 for s in spacing):
        return f"voxel spacing {spacing} in the header is not finite and positive"
    sform_sizes = _sform_voxel_sizes(header, len(spacing or []))
    if spacing and sform_sizes is not None and not np.allclose(sform_sizes, spacing, rtol=HEADER_SPACING_RTOL,
                                                                   atol=HEADER_SPACING_ATOL):
        return (f"the header contradicts itself: voxel sizes {[round(s, 6) for s in spacing]} (pixdim) but "
                f"{[round(s, 6) for s in sform_sizes]} (sform); readers disagree on which one holds")
    geometry = _geometry_problem(header, shape)
    if geometry is not None:
        return geometry
    if np.issubdtype(header.get_data_dtype(), np.floating):
        bad = int(np.count_nonzero(~np.isfinite(np.asanyarray(image.dataobj))))
        if bad:
            return f"{bad} voxel(s) are NaN or infinite"
    return None


def _png_problem(path: Path) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as failure:  # PIL raises many types for broken files
        return f"damaged or truncated PNG ({type(failure).__name__}: {failure})"
    return None


def broken_link_problem(path: str | Path) -> str | None:
    """A symbolic link whose target is gone (listings skip it as "not a file"), or None."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    return None


def check_no_broken_links(folder: str | Path, error: type[Exception] = UserInputError, pattern: str = "*") -> None:
    """Every entry of ``folder`` matching ``pattern`` that is a broken symbolic link is an error
    naming it: a listing that keeps only files would otherwise drop that case without a word."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    broken = [(entry, broken_link_problem(entry)) for entry in sorted(folder.glob(pattern))]
    broken = [(entry, problem) for entry, problem in broken if problem is not None]
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise error(f"{broken[0][0]}: {broken[0][1]}{more}; restore the file or remove the link")


def nifti_twin_problem(path: str | Path) -> str | None:
    """Whether another file of the same case lies beside a NIfTI file under the other NIfTI
    ending (``case.nii`` beside ``case.nii.gz``, in any spelling of the ending).

    Two files for one case are refused wherever a command reads one: asked for ``case.nii.gz``,
    SimpleITK (nifti_findhdrname) opens ``case.nii`` when both exist, so the file checked and
    hashed would not be the file scored or predicted."""
    path = Path(path)
    lower = path.name.lower()
    ending = next((e for e in NIFTI_ENDINGS if lower.endswith(e)), None)
    if ending is None:
        return None
    stem = path.name[: -len(ending)]
    try:
        twins = sorted(entry.name for entry in path.parent.iterdir() if entry.name != path.name
                       and entry.name.lower() in {stem.lower() + e for e in NIFTI_ENDINGS})
    except OSError:
        return None  # an unreadable folder: the read itself reports it
    if not twins:
        return None
    return (f"another file of the same case lies beside it ({', '.join(twins)}): two files for one case are "
            f"ambiguous (asked for {path.name}, SimpleITK may open {twins[0]}); remove or rename one")


def damaged_file_problem(path: str | Path) -> str | None:
    """What is wrong with an image file that is truncated, corrupt or holds values its format
    does not allow, or None when it is sound.

    ``.nii.gz``: the gzip stream must end with its end marker and checksum, and hold as many
    bytes as the header promises; ``.nii``: the file size must; both: finite positive voxel
    sizes, no NaN/Inf voxels, an unsheared sform that agrees with the qform; ``.png``: must decode;
    ``.dcm``: :func:`dicom_file_problem`; other ``.gz``: the stream must be complete. Other formats
    are left to their readers.
    """
    path = Path(path)
    name = path.name.lower()
    link = broken_link_problem(path)
    if link is not None:
        return link
    twin = nifti_twin_problem(path)
    if twin is not None:
        return twin
    try:
        if name.endswith(".gz"):
            try:
                size = _gzip_size(path)
            except FileNotFoundError:
                return "file not found"
            except EOFError:
                return "truncated: the gzip stream ends before its end marker (file cut short?)"
            except (OSError, zlib.error) as failure:
                if _starts_like_gzip(path):
                    return f"corrupt gzip data ({failure})"
                return "not a gzip-compressed file (damaged, or not what its name says)"
        elif name.endswith(".nii"):
            size = path.stat().st_size
        elif name.endswith(".png"):
            return _png_problem(path)
        elif name.endswith(".dcm"):
            return dicom_file_problem(path)
        else:
            return None
        if name.endswith(NIFTI_ENDINGS):
            return _nifti_problem(path, size)
    except FileNotFoundError:
        return "file not found"
    return None


def _encapsulated_problem(pixel_data: bytes, frames: int) -> str | None:
    """Every item of encapsulated pixel data must be whole, and there must be an item (after the
    basic offset table, the first) per frame at least."""
    offset, items = 0, 0
    while offset < len(pixel_data):
        header = pixel_data[offset: offset + DICOM_ITEM_HEADER_BYTES]
        if len(header) < DICOM_ITEM_HEADER_BYTES or header[:4] != DICOM_ITEM_TAG:
            return f"damaged encapsulated pixel data: no item header at byte {offset} of the pixel data"
        length = struct.unpack("<I", header[4:])[0]
        offset += DICOM_ITEM_HEADER_BYTES + length
        if offset > len(pixel_data):
            return (f"truncated: a compressed pixel data item of {length} bytes ends {offset - len(pixel_data)} bytes "
                    "past the pixel data (file cut short?)")
        items += 1
    if items - 1 < frames:
        return f"truncated: {max(items - 1, 0)} compressed fragment(s) for {frames} frame(s) of pixel data"
    return None


def dicom_file_problem(path: str | Path) -> str | None:
    """What is wrong with a DICOM image file whose pixel data is incomplete, or None when it is
    whole. The file size says nothing once the pixels are compressed (a JPEG 2000 CT slice holds a
    third of its raw bytes), so the data itself is checked: native pixel data must hold
    rows x columns x samples x frames x bits allocated; a deflated data set must inflate to its
    end; encapsulated (JPEG, JPEG-LS, JPEG 2000, RLE) pixel data must end with its sequence
    delimiter, every item whole, at least one fragment per frame. Whether the compressed bytes
    decode is left to the reader (GDCM)."""
    import pydicom

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # pydicom warns and drops the pixel data when its delimiter is missing: said below
            warnings.simplefilter("ignore")
            # force: GDCM also reads files without the part 10 header (no preamble, no file meta)
            dataset = pydicom.dcmread(path, force=True)
    except FileNotFoundError:
        return "file not found"
    except zlib.error as failure:
        return f"truncated or corrupt deflated DICOM data ({failure})"
    except Exception as failure:  # pydicom raises many types for broken files
        return f"not a readable DICOM file ({type(failure).__name__}: {failure})"
    if "PixelData" not in dataset:
        return "no complete pixel data: the file ends before its pixel data does (cut short?), or holds no image"
    frames = int(dataset.get("NumberOfFrames") or 1)
    syntax = getattr(dataset, "file_meta", {}).get("TransferSyntaxUID")
    if syntax is not None and syntax.is_encapsulated:
        return _encapsulated_problem(dataset.PixelData, frames)
    values = int(dataset.get("Rows", 0)) * int(dataset.get("Columns", 0)) * int(dataset.get("SamplesPerPixel", 1))
    expected = -(-values * frames * int(dataset.get("BitsAllocated", 0)) // BITS_PER_BYTE)  # whole bytes
    if len(dataset.PixelData) < expected:
        return f"truncated: {len(dataset.PixelData)} bytes of pixel data where its header promises {expected}"
    return None


def _host_tag() -> str:
    """This machine's name, hashed to HOST_TAG_CHARS hex digits (a name may be long or hold '-')."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:HOST_TAG_CHARS]


def _run_token() -> str:
    # PID-HOST-RANDOM: the PID lets a later run tell a killed run's leftovers from a running one's,
    # the host keeps a run on another machine sharing the folder (a SLURM node) from taking a live
    # writer's PID for a dead one
    return f"{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:8]}"


def temporary_name(path: str | Path) -> Path:
    """A hidden name in the same folder (same file system, so the rename is atomic)."""
    path = Path(path)
    return path.parent / f".{path.name}{PARTIAL_MARKER}{_run_token()}"


def work_names(folder: Path, stem: str) -> tuple[Path, Path]:
    """Names for a run writing into ``folder``: (work, set_aside), ``.STEM.partial-PID-HOST-TOKEN`` for
    what is being written and ``.STEM.replaced-PID-HOST-TOKEN`` for an old version moved aside. First
    removes, with a warning, such entries left by runs that were killed."""
    sweep_stale_temporaries(folder)
    token = _run_token()
    return folder / f".{stem}{PARTIAL_MARKER}{token}", folder / f".{stem}{REPLACED_MARKER}{token}"


@contextmanager
def atomic_write_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path to write; renamed to ``path`` when the block ends without an
    error, removed otherwise. A reader thus sees the complete file or none."""
    path = Path(path)
    temporary = temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def temporaries_of(path: str | Path) -> list[Path]:
    """Every temporary name of ``path`` (``.NAME.partial-*``) that exists, whoever wrote it."""
    path = Path(path)
    prefix = f".{path.name}{PARTIAL_MARKER}"
    folder = path.parent if str(path.parent) else Path(".")
    return sorted(entry for entry in folder.iterdir() if entry.name.startswith(prefix)) if folder.is_dir() else []


def stale_partial_entries(folder: str | Path) -> list[Path]:
    """Temporary files/folders (``.*.partial-PID-HOST-TOKEN``, or ``-PID-TOKEN`` from before hosts
    were recorded) in ``folder`` whose writing process on this machine has ended: left behind by a
    run that was killed (SIGKILL, power loss) before it could clean up. Another machine's are left
    alone: its PIDs mean nothing here."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = []
    for entry in folder.iterdir():
        for marker in (PARTIAL_MARKER, REPLACED_MARKER):
            position = entry.name.rfind(marker)
            if not entry.name.startswith(".") or position < 0:
                continue
            fields = entry.name[position + len(marker):].split("-")
            host = fields[1] if len(fields) > 2 else _host_tag()
            if fields[0].isdigit() and host == _host_tag() and not process_is_alive(int(fields[0])):
                stale.append(entry)
                break
    return sorted(stale)


def remove_stale_partial_entries(folder: str | Path) -> list[Path]:
    """Removes :func:`stale_partial_entries`; returns what was removed (callers warn about it)."""
    return _remove_entries(stale_partial_entries(folder))


def _remove_entries(entries: list[Path]) -> list[Path]:
    import shutil

    removed = []
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        if not entry.exists():
            removed.append(entry)
    return removed


def sweep_stale_temporaries(folder: str | Path) -> list[Path]:
    """What a command that writes into ``folder`` does first: removes, with a warning each, the
    temporaries that killed runs left there (:func:`stale_partial_entries`)."""
    removed = []
    for entry in stale_partial_entries(folder):
        kind = "folder" if entry.is_dir() and not entry.is_symlink() else "file"
        if _remove_entries([entry]):
            warnings.warn(f"{entry}: removed a temporary {kind} left behind by an earlier run that was killed")
            removed.append(entry)
    return removed
