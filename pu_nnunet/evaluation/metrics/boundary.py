"""Boundary metrics of one case: normalised surface distance (NSD) and 95th-percentile Hausdorff (HD95).

Metrics Reloaded (Maier-Hein et al., Nat. Methods 2024) recommends a boundary metric beside
Dice, the NSD first; HD95 is the one most papers report. Both are computed with MONAI
(``monai.metrics.compute_surface_dice`` and ``compute_hausdorff_distance(percentile=95)``) on
the binary masks of one label (or of the foreground, every evaluated label merged), so that the
surface extraction and the distances are a maintained library's, not this package's.

Definitions (MONAI's, ``use_subvoxels=False``):

- surface: the voxels of a mask that an erosion removes (its edge voxels); distances are
  Euclidean between voxel centres, scaled by the spacing: millimetres for 3D cases, pixels for
  2D cases (one slice; natural images have no physical spacing), as the volumes.
- NSD at tolerance t: the share of the surface voxels of both masks that lie within t of the
  other mask's surface (1 for identical masks, 0 when no surface voxel is within t).
- HD95: the larger of the two directed 95th percentiles of the surface distances (MONAI's,
  torch.quantile with linear interpolation); 0 for identical masks.
- Voxels whose reference is nnU-Net's ignore label are removed from both masks first.

Empty conventions (the same as for Dice, so that every averaging protocol of
:mod:`pu_nnunet.evaluation.metrics.protocols` treats NSD as it treats Dice):

- reference and prediction empty: NSD and HD95 undefined (null; nnU-Net's Dice is NaN there);
- exactly one empty: NSD 0 (no surface voxel has a counterpart) and HD95 undefined (there is no
  finite distance; MONAI returns infinity). HD95 aggregates are therefore over the cases where
  both masks have the label, and the report gives their number.

The GPU is used where MONAI has a GPU distance transform (cuCIM installed) and the evaluation
counts on CUDA; otherwise the CPU, where MONAI queries a KD-tree of the surface voxels (faster
than a dense transform on the GPU without cuCIM).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from pu_nnunet.evaluation.errors import EvaluationError

# No single value fits every task: Metrics Reloaded asks for a task-specific tolerance (e.g. the
# inter-rater variation); 2 mm is about one to two voxels of typical CT/MR and is to be set per
# label with --nsd-tolerance.
DEFAULT_NSD_TOLERANCE = 2.0
# HD95's percentile (Metrics Reloaded's name for the robust Hausdorff variant).
HD_PERCENTILE = 95.0
# Label values up to this bound go to scipy's find_objects (one list entry per value) for the
# bounding boxes; larger values (rare int64 maps) are scored uncropped.
MAX_BOX_LABEL_VALUE = 65535


@dataclass(frozen=True)
class BoundarySettings:
    """What the boundary metrics of an evaluation are computed with."""

    tolerances: Mapping[str, float] = field(default_factory=dict)  # label key -> mm (pixels in 2D)
    default_tolerance: float = DEFAULT_NSD_TOLERANCE

    def tolerance(self, key: str) -> float:
        return float(self.tolerances.get(key, self.default_tolerance))


def parse_tolerances(entries: Sequence[str] | None) -> BoundarySettings:
    """``--nsd-tolerance`` entries: ``MM`` (every label) and/or ``LABEL=MM`` (one label or
    ``foreground``); a later entry for the same key wins. Refuses non-numbers and negatives."""
    default, per_label = DEFAULT_NSD_TOLERANCE, {}
    for entry in entries or []:
        key, _, value = entry.rpartition("=")
        try:
            millimetres = float(value)
        except ValueError:
            raise EvaluationError(f"--nsd-tolerance {entry!r}: expected MM or LABEL=MM, e.g. 2 or 1=1.5") from None
        if not np.isfinite(millimetres) or millimetres < 0:
            raise EvaluationError(f"--nsd-tolerance {entry!r}: the tolerance must be a finite number >= 0")
        if key:
            per_label[key.strip()] = millimetres
        else:
            default = millimetres
    return BoundarySettings(per_label, default)


def boundary_device(counting_device: str) -> str:
    """'cuda...' when the counts run on CUDA and cuCIM gives MONAI a GPU distance transform, else 'cpu'."""
    if not counting_device.startswith("cuda"):
        return "cpu"
    import importlib.util

    return counting_device if importlib.util.find_spec("cucim") is not None else "cpu"


def _boxes(array: np.ndarray) -> list:
    """Bounding box per label value (find_objects: entry v-1 for value v, None where absent)."""
    from scipy.ndimage import find_objects

    return find_objects(array)


def _union_box(boxes: list, values: Sequence[int], shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """Bounding box of every value's voxels in the label maps of ``boxes``, one voxel wider
    (MONAI's crop margin, so that the erosion sees the outside), or None when none occurs."""
    found = [box for boxes_of_map in boxes for value in values
             if 0 < value <= len(boxes_of_map) and (box := boxes_of_map[value - 1]) is not None]
    if not found:
        return None
    return tuple(slice(max(min(b[axis].start for b in found) - 1, 0), min(max(b[axis].stop for b in found) + 1, size))
                 for axis, size in enumerate(shape))


def _scores(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float], tolerance: float,
            device: str) -> tuple[float, float]:
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    as_batch = lambda mask: torch.from_numpy(np.ascontiguousarray(mask))[None, None].to(device)
    pred, ref = as_batch(pred_mask), as_batch(ref_mask)
    spacing = [float(s) for s in spacing]
    nsd = compute_surface_dice(pred, ref, [tolerance], include_background=True, spacing=spacing)
    hd95 = compute_hausdorff_distance(pred, ref, include_background=True, percentile=HD_PERCENTILE, spacing=spacing)
    return float(nsd[0, 0]), float(hd95[0, 0])


def case_boundary(pred: np.ndarray, ref: np.ndarray, classes: Mapping[str, Sequence[int]],
                  spacing: Sequence[float], is_2d: bool, settings: BoundarySettings,
                  ignore_label: int | None = None, device: str = "cpu") -> dict[str, dict[str, float | None]]:
    """{key: {"nsd": ..., "hd95": ...}} of every class (label key -> its label values, the
    foreground -> all of them) of one case; see the module docstring for the conventions."""
    if is_2d:  # nnU-Net's 2D layout (1, X, Y); distances in pixels
        pred, ref, spacing = pred[0], ref[0], (1.0, 1.0)
    top = max(int(pred.max(initial=0)), int(ref.max(initial=0)))
    boxes = [_boxes(pred), _boxes(ref)] if top <= MAX_BOX_LABEL_VALUE else None
    results = {}
    for key, values in classes.items():
        box = _union_box(boxes, values, ref.shape) if boxes is not None else tuple(slice(0, s) for s in ref.shape)
        if box is None:
            results[key] = {"nsd": None, "hd95": None}
            continue
        ref_mask = np.isin(ref[box], values)
        pred_mask = np.isin(pred[box], values)
        if ignore_label is not None:
            pred_mask &= ref[box] != ignore_label
        has_ref, has_pred = bool(ref_mask.any()), bool(pred_mask.any())
        if not has_ref and not has_pred:
            results[key] = {"nsd": None, "hd95": None}
        elif not has_ref or not has_pred:
            results[key] = {"nsd": 0.0, "hd95": None}
        else:
            with warnings.catch_warnings():  # MONAI warns of empty masks (none here) and of its own deprecations
                warnings.simplefilter("ignore")
                nsd, hd95 = _scores(pred_mask, ref_mask, spacing, settings.tolerance(key), device)
            results[key] = {"nsd": nsd, "hd95": hd95}
    return results
