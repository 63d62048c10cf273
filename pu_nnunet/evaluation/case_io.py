"""Finding, pairing and reading cases with nnU-Net's own readers.

Predictions and references are read with the reader nnU-Net itself would use for the dataset:
the ``overwrite_image_reader_writer`` of the dataset's ``dataset.json`` when one names it, else
the first of nnU-Net's readers that supports the file ending and opens a reference file
(``SimpleITKIO`` for .nii.gz, ``NaturalImage2DIO`` for .png, ...).

``dataset.json`` default: ``PRED_DIR/dataset.json`` (``nnUNetv2_predict`` copies it there), else
``REF_DIR/../dataset.json`` (the nnU-Net raw layout), else none: the file ending is inferred
from the reference files and the labels from the label values found.

A region-based dataset.json (a label given as a list of values, e.g. BraTS's
``"whole tumour": [1, 2, 3]``) is evaluated as nnU-Net evaluates it: one score per region, the
mask of a region being the voxels holding any of its values, keyed as nnU-Net keys it
(``"(1, 2, 3)"``; a single value as ``"3"``), with its ignore label.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pu_nnunet.evaluation.metrics.confusion import as_label_map
from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.evaluation.jsonio import read_json
from pu_nnunet.user_files import check_no_broken_links, damaged_file_problem

# Longest first, so that "x.nii.gz" is not taken for a ".gz" or ".nii" file.
KNOWN_FILE_ENDINGS = (".nii.gz", ".nrrd", ".mha", ".gipl", ".nii", ".png", ".bmp", ".tif", ".tiff")

# nnU-Net's verify_dataset_integrity compares geometry with np.allclose; the absolute tolerance
# is raised to 1e-4 (mm) because headers store float32 and converters round-trip through them.
GEOMETRY_RTOL = 1e-5
GEOMETRY_ATOL = 1e-4

# nnU-Net names image channels CASE_0000.ext, CASE_0001.ext, ...; overlays use the first.
FIRST_CHANNEL_SUFFIX = "_0000"


@dataclass
class DatasetInfo:
    """What evaluation needs to know about the dataset, from dataset.json or the files."""

    file_ending: str
    reader_class: type
    dataset_json_path: str | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    ignore_label: int | None = None
    # region-based dataset.json: nnU-Net's key of each region -> (its label values, its name)
    regions: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)

    def label_values(self) -> set[int]:
        """Every label value dataset.json names (labels, or the values of its regions)."""
        return set(self.label_names) | {v for values, _ in self.regions.values() for v in values}


@dataclass
class CasePair:
    """One case's label maps (spatial axes only) and voxel geometry."""

    case: str
    pred: np.ndarray | None  # None when the prediction is missing
    ref: np.ndarray
    spacing: tuple[float, ...]  # nnU-Net order (z, y, x) in mm; 2D readers put 999 in z
    is_2d: bool
    reference_sha256: str | None = None  # of the reference file, filled in by evaluate


def _file_ending(name: str) -> str | None:
    for ending in KNOWN_FILE_ENDINGS:
        if name.lower().endswith(ending):
            return ending
    return None


def find_dataset_json(pred_dir: Path, ref_dir: Path, dataset_json: str | None) -> Path | None:
    if dataset_json is not None:
        return Path(dataset_json)  # read_json names it when it is missing
    for candidate in (pred_dir / "dataset.json", ref_dir.parent / "dataset.json"):
        if candidate.is_file():
            return candidate
    return None


def region_key(values: tuple[int, ...]) -> str:
    """nnU-Net's summary.json key of a region (label_or_region_to_key): "(1, 2)", "3" for one value."""
    return str(values[0]) if len(values) == 1 else str(tuple(values))


def _labels_from_dataset_json(content: dict, path: Path
                              ) -> tuple[dict[int, str], int | None, dict[str, tuple[tuple[int, ...], str]]]:
    """(label value -> name, ignore label, regions); regions (nnU-Net: a value that is a list of
    more than one label) replace the labels."""
    labels = content.get("labels", {})
    ignore = labels.get("ignore")
    if ignore is not None and (not isinstance(ignore, int) or isinstance(ignore, bool)):
        raise EvaluationError(f"{path}: the ignore label must be one integer (nnU-Net's rule), found {ignore!r}")
    values = {}
    for name, value in labels.items():
        entries = value if isinstance(value, (list, tuple)) else [value]
        if not entries or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in entries):
            raise EvaluationError(f"{path}: label {name!r} must be a value 0, 1, ... or a list of them (a region), "
                                  f"found {value!r}")
        if name != "ignore":
            values[name] = tuple(dict.fromkeys(int(v) for v in entries))
    if not any(len(v) > 1 for v in values.values()):
        return {v[0]: name for name, v in values.items() if v[0] != 0}, ignore, {}
    # nnU-Net's LabelManager: regions in dataset.json order, those of background alone left out
    regions = {region_key(v): (v, name) for name, v in values.items() if set(v) != {0}}
    return {}, ignore, regions


def describe_dataset(pred_dir: Path, ref_dir: Path, dataset_json: str | None = None) -> DatasetInfo:
    """File ending, reader class, label names and ignore label for a reference folder."""
    from nnunetv2.imageio.reader_writer_registry import (
        determine_reader_writer_from_dataset_json, determine_reader_writer_from_file_ending)

    if not ref_dir.is_dir():
        raise EvaluationError(f"{ref_dir}: reference folder not found")
    if not pred_dir.is_dir():
        raise EvaluationError(f"{pred_dir}: prediction folder not found")
    json_path = find_dataset_json(pred_dir, ref_dir, dataset_json)
    content = read_json(json_path, "dataset.json", dict) if json_path else {}
    ending = content.get("file_ending")
    if ending is not None and (not isinstance(ending, str) or not ending.startswith(".")):
        raise EvaluationError(f"{json_path}: file_ending must be text like \".nii.gz\", found {ending!r}")
    if not isinstance(content.get("labels", {}), dict):
        raise EvaluationError(f"{json_path}: labels must be an object like {{\"background\": 0, \"lesion\": 1}}, "
                              f"found {content['labels']!r}")
    if ending is None:
        endings = [e for e in (_file_ending(p.name) for p in ref_dir.iterdir() if p.is_file()) if e]
        if not endings:
            raise EvaluationError(f"{ref_dir}: no segmentation files ({', '.join(KNOWN_FILE_ENDINGS)})")
        ending = max(set(endings), key=endings.count)
    references = sorted(ref_dir.glob(f"*{ending}"))
    if not references:
        raise EvaluationError(f"{ref_dir}: no reference files ending in {ending}")
    example = str(references[0])
    try:
        if content:
            reader = determine_reader_writer_from_dataset_json(content, example, verbose=False)
        else:
            reader = determine_reader_writer_from_file_ending(ending, example, verbose=False)
    except RuntimeError as error:
        raise EvaluationError(f"no nnU-Net reader opens {example}: {error}") from None
    names, ignore, regions = _labels_from_dataset_json(content, json_path) if content else ({}, None, {})
    return DatasetInfo(ending, reader, str(json_path) if json_path else None, names, ignore, regions)


def pair_cases(pred_dir: Path, ref_dir: Path, file_ending: str) -> tuple[list[str], list[str], list[str]]:
    """(reference cases, those without a prediction, predictions without a reference)."""
    strip = lambda paths: {p.name[: -len(file_ending)] for p in paths if p.is_file()}
    for folder in (ref_dir, pred_dir):  # is_file() would drop a broken link's case without a word
        check_no_broken_links(folder, EvaluationError, f"*{file_ending}")
    refs = strip(ref_dir.glob(f"*{file_ending}"))
    preds = strip(pred_dir.glob(f"*{file_ending}"))
    return sorted(refs), sorted(refs - preds), sorted(preds - refs)


def predictions_under_other_endings(pred_dir: Path, cases: list[str], file_ending: str) -> dict[str, str]:
    """Case -> file name of predictions missing under ``file_ending`` but present under another
    known ending (``case.nii`` where the references are ``.nii.gz``): named, not scored as empty."""
    found = {}
    for case in cases:
        for ending in KNOWN_FILE_ENDINGS:
            if ending != file_ending and (pred_dir / f"{case}{ending}").is_file():
                found[case] = f"{case}{ending}"
                break
    return found


def check_complete(path: Path, case: str, role: str) -> None:
    """A truncated file would be read with zeros in place of the missing voxels and scored."""
    problem = damaged_file_problem(path)
    if problem is not None:
        raise EvaluationError(f"{path}: {problem} ({role} of case {case})")


def _check_label_values(labels: np.ndarray, path: Path, case: str, role: str, info: DatasetInfo) -> None:
    """With dataset.json's labels known, a value outside them is an error, not a silent background:
    typically a 0/255 mask where nnU-Net expects 0..N."""
    if not info.label_values():
        return
    allowed = {0, *info.label_values()} | ({info.ignore_label} if info.ignore_label is not None else set())
    found = np.unique(labels) if labels.dtype != np.uint8 else np.flatnonzero(np.bincount(labels.reshape(-1)))
    unexpected = sorted(int(v) for v in found if int(v) not in allowed)
    if unexpected:
        raise EvaluationError(f"{path}: label values {unexpected[:8]} are not in the labels of "
                              f"{info.dataset_json_path} ({', '.join(map(str, sorted(allowed)))}) ({role} of case "
                              f"{case}; a 0/255 mask where nnU-Net expects 0..N?)")


def _read(reader_class: type, path: Path, case: str, role: str, info: DatasetInfo | None = None
          ) -> tuple[np.ndarray, dict]:
    check_complete(path, case, role)
    try:
        array, properties = reader_class().read_seg(str(path))
    except Exception as error:  # nnU-Net's readers raise anything from RuntimeError to ITK errors
        raise EvaluationError(f"{path}: cannot read the {role} of case {case}: {type(error).__name__}: {error}"
                              ) from None
    if array.shape[0] != 1:
        raise EvaluationError(f"{path}: {role} of case {case} has {array.shape[0]} channels; a label map has 1")
    labels = as_label_map(array[0], f"{path} ({role} of case {case})")
    if info is not None:
        _check_label_values(labels, path, case, role, info)
    return labels, properties


def _geometry(properties: dict) -> dict[str, np.ndarray]:
    geometry = {"spacing": np.asarray(properties["spacing"], dtype=float)}
    nibabel_stuff = properties.get("nibabel_stuff", {})
    for key in ("sitk_stuff", "nibabel_stuff"):
        for name, value in properties.get(key, {}).items():
            # NibabelIOWithReorient returns the arrays on the reoriented (RAS) grid: the voxel order
            # each file stores (its original_affine) is undone already and need not agree
            if name == "spacing" or (name == "original_affine" and "reoriented_affine" in nibabel_stuff):
                continue
            geometry[name] = np.asarray(value, dtype=float)
    return geometry


def _voxel_grid(properties: dict) -> dict | None:
    """The grid of the array as read, as ITK states it (spacing, origin, direction of the x, y, z
    index axes): SimpleITKIO's ``sitk_stuff``, or NibabelIO's affine (the array's grid: the
    reoriented affine where the reader reoriented) split the same way. The two readers' world
    frames differ (LPS, RAS), so only grids read by one reader are compared."""
    if "sitk_stuff" in properties:
        return properties["sitk_stuff"]
    nibabel_stuff = properties.get("nibabel_stuff", {})
    affine = nibabel_stuff.get("reoriented_affine", nibabel_stuff.get("original_affine"))
    if affine is None:
        return None
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        return None
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not (spacing > 0).all():
        return None
    return {"spacing": spacing, "origin": affine[:3, 3], "direction": (affine[:3, :3] / spacing).reshape(-1)}


def _geometry_difference(ref_props: dict, pred_props: dict, ref_shape, pred_shape) -> str | None:
    """How the prediction's voxel grid differs from the reference's, or None when they agree."""
    if pred_shape != ref_shape:
        return f"prediction shape {pred_shape} != reference shape {ref_shape}"
    ref_geometry, pred_geometry = _geometry(ref_props), _geometry(pred_props)
    for name, expected in ref_geometry.items():
        found = pred_geometry.get(name)
        if found is not None and (found.shape != expected.shape or
                                  not np.allclose(found, expected, rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL)):
            return f"prediction {name} {found.tolist()} != reference {name} {expected.tolist()}"
    return None


def _index_to_world(sitk_stuff: dict) -> np.ndarray:
    """The 4x4 affine from a voxel index (x, y, z) to a physical point (mm), as ITK defines it."""
    direction = np.asarray(sitk_stuff["direction"], dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(sitk_stuff["spacing"], dtype=float)
    affine[:3, 3] = np.asarray(sitk_stuff["origin"], dtype=float)
    return affine


def align_voxel_order(labels: np.ndarray, geometry: dict | None, target_shape, target: dict | None
                      ) -> tuple[np.ndarray, str] | None:
    """``labels`` (z, y, x) moved onto ``target``'s voxel grid when both grids are the same points
    in another voxel order (axes permuted or flipped, the origin at another corner), with the
    change in words; None when they are not (a resampling would be needed, which evaluation does
    not do) or a grid is unknown (``_voxel_grid``: SimpleITKIO's or NibabelIO's 3D geometry).

    Lossless: only a transpose and flips. The moved grid's geometry must then equal the target's
    within the tolerance used for equal grids."""
    if not geometry or not target or len(geometry.get("spacing", ())) != 3 or len(target.get("spacing", ())) != 3:
        return None
    # voxel index of the target -> voxel index of ``labels``: must be a signed permutation
    index_map = np.linalg.inv(_index_to_world(geometry)) @ _index_to_world(target)
    rotation = np.round(index_map[:3, :3])
    if not (np.abs(rotation).sum(axis=0) == 1).all() or not (np.abs(rotation).sum(axis=1) == 1).all():
        return None
    source_axis = [int(np.flatnonzero(rotation[:, axis])[0]) for axis in range(3)]  # x, y, z order
    flipped = [rotation[source_axis[axis], axis] < 0 for axis in range(3)]
    xyz = np.transpose(labels, (2, 1, 0)).transpose(source_axis)
    for axis in range(3):
        if flipped[axis]:
            xyz = np.flip(xyz, axis)
    if tuple(xyz.shape[::-1]) != tuple(target_shape):
        return None
    # the geometry of the moved grid, from ``labels``' own: it must be the target's
    source_spacing = np.asarray(geometry["spacing"], dtype=float)
    source_direction = np.asarray(geometry["direction"], dtype=float).reshape(3, 3)
    first_voxel = np.array([(labels.shape[2 - source_axis[a]] - 1) if flipped[a] else 0 for a in range(3)], float)
    start = np.zeros(3)
    start[source_axis] = first_voxel
    moved = {"spacing": source_spacing[source_axis],
             "direction": (source_direction[:, source_axis] * np.where(flipped, -1.0, 1.0)).reshape(-1),
             "origin": (_index_to_world(geometry) @ np.append(start, 1.0))[:3]}
    for name, value in moved.items():
        if not np.allclose(value, np.asarray(target[name], dtype=float), rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL):
            return None
    axis_names = "xyz"
    steps = [f"its {axis_names[source_axis[a]]} axis is the prediction's {axis_names[a]}"
             for a in range(3) if source_axis[a] != a]
    steps += [f"its {axis_names[source_axis[a]]} axis reversed" for a in range(3) if flipped[a]]
    return np.ascontiguousarray(np.transpose(xyz, (2, 1, 0))), ", ".join(steps)


def read_case(case: str, pred_dir: Path | None, ref_dir: Path, info: DatasetInfo) -> CasePair:
    """Reads one case's pair; ``pred_dir`` None means the prediction is missing."""
    ref, ref_props = _read(info.reader_class, ref_dir / f"{case}{info.file_ending}", case, "reference", info)
    pred = None
    if pred_dir is not None:
        pred_path = pred_dir / f"{case}{info.file_ending}"
        pred, pred_props = _read(info.reader_class, pred_path, case, "prediction", info)
        difference = _geometry_difference(ref_props, pred_props, ref.shape, pred.shape)
        if difference is not None:
            aligned = align_voxel_order(ref, _voxel_grid(ref_props), pred.shape, _voxel_grid(pred_props))
            if aligned is None:
                raise EvaluationError(f"case {case}: {difference}; not the same voxel grid in another axis order "
                                      "either (resample one onto the other's grid)")
            ref, change = aligned
            # the reference now lies on the prediction's voxel grid, in its axis order
            ref_props = pred_props
            warnings.warn(f"case {case}: the reference {ref_dir / f'{case}{info.file_ending}'} stores the "
                          f"prediction's physical grid in another voxel order ({change}); aligned losslessly to "
                          "the prediction's order before scoring")
    spacing = tuple(float(s) for s in ref_props["spacing"])
    # nnU-Net reads 2D files as a single slice (shape 1, X, Y)
    return CasePair(case, pred, ref, spacing, is_2d=ref.shape[0] == 1)


def read_meta(meta: str | Path | dict | None) -> dict[str, dict[str, Any]]:
    """cases.json (case id -> {"class": ..., "split": ..., ...}) or an already loaded dict."""
    if meta is None:
        return {}
    content = meta if isinstance(meta, dict) else read_json(meta, "cases.json", dict)
    for case, entry in content.items():
        if not isinstance(entry, dict):
            raise EvaluationError(f"{meta}: case {case} must map to an object like {{\"class\": \"benign\"}}, "
                                  f"found {entry!r}")
        if not isinstance(entry.get("class"), str):
            raise EvaluationError(f"{meta}: case {case} has no \"class\" text (found {entry.get('class')!r})")
    return content


def read_display_image(images_dir: Path | None, case: str, info: DatasetInfo) -> np.ndarray | None:
    """The case's first image channel (or RGB for natural images), spatial axes, for overlays.

    Returns None when no image folder was given or it has no CASE_0000 file: the overlay is
    then drawn on a blank background.
    """
    if images_dir is None:
        return None
    path = images_dir / f"{case}{FIRST_CHANNEL_SUFFIX}{info.file_ending}"
    if not path.is_file():
        warnings.warn(f"case {case}: no image {path}; overlay drawn on a blank background")
        return None
    check_complete(path, case, "image")
    try:
        image, _ = info.reader_class().read_images((str(path),))
    except Exception as error:
        raise EvaluationError(f"case {case}: cannot read image {path}: {type(error).__name__}: {error}") from None
    # NaturalImage2DIO returns RGB(A) as channels (3 or 4, 1, X, Y): keep colour for display
    return np.moveaxis(image[:3], 0, -1) if image.shape[0] in (3, 4) else image[0]
