"""Boundary metrics of one case: normalised surface distance (NSD) and 95th-percentile Hausdorff (HD95).

Metrics Reloaded (Maier-Hein et al., Nat. Methods 2024) recommends a boundary metric beside
Dice, the NSD first; HD95 is the one most papers report. Both are computed here, on the binary
masks of one label (or of the foreground, every evaluated label merged), with MONAI's definitions
(``monai.metrics.compute_surface_dice`` and ``compute_hausdorff_distance(percentile=95)``,
``use_subvoxels=False``); tests/evaluation/metrics/test_boundary_monai_parity.py checks that both
give MONAI's values on random 2D and 3D masks with anisotropic spacing. Not calling MONAI itself
saves every evaluating process MONAI's import (4-6 s of CPU: its package loads all its submodules)
and half the distance queries (its NSD and HD95 are separate calls, each querying both directions).

Definitions:

- surface: the voxels of a mask that an erosion removes (scipy's binary_erosion with its default
  cross-shaped element, the outside of the array counted empty: its edge voxels); distances are
  Euclidean between voxel centres, scaled by the spacing: millimetres for 3D cases, pixels for
  2D cases (one slice; natural images have no physical spacing), as the volumes. Each surface
  voxel's distance to the other surface is exact (a KD-tree of the other surface's voxels),
  rounded to float32 as MONAI's.
- NSD at tolerance t: the share of the surface voxels of both masks that lie within t of the
  other mask's surface (1 for identical masks, 0 when no surface voxel is within t).
- HD95: the larger of the two directed 95th percentiles of the surface distances (linear
  interpolation, as torch.quantile in MONAI); 0 for identical masks.
- Voxels whose reference is nnU-Net's ignore label are removed from both masks first.

Empty conventions (the same as for Dice, so that every averaging protocol of
:mod:`pu_nnunet.evaluation.metrics.protocols` treats NSD as it treats Dice):

- reference and prediction empty: NSD and HD95 undefined (null; nnU-Net's Dice is NaN there);
- exactly one empty: NSD 0 (no surface voxel has a counterpart) and HD95 undefined (there is no
  finite distance; MONAI returns infinity). HD95 aggregates are therefore over the cases where
  both masks have the label, and the report gives their number.
"""

from __future__ import annotations

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


def _surface(mask: np.ndarray) -> np.ndarray:
    """The edge voxels of a mask: those an erosion removes (the outside counted empty)."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask)


def _surface_distances(from_surface: np.ndarray, to_surface: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance of every voxel of ``from_surface`` to the nearest voxel of ``to_surface`` (float32)."""
    from scipy.spatial import cKDTree

    # a larger leaf than the default 16 is faster for one batched query (MONAI's choice too)
    tree = cKDTree(np.argwhere(to_surface) * spacing, leafsize=32)
    return tree.query(np.argwhere(from_surface) * spacing, k=1)[0].astype(np.float32)


def _scores(pred_mask: np.ndarray, ref_mask: np.ndarray, spacing: Sequence[float],
            tolerance: float) -> tuple[float, float]:
    """(NSD, HD95) of two non-empty masks."""
    scale = np.asarray(spacing, dtype=np.float64)
    pred_surface, ref_surface = _surface(pred_mask), _surface(ref_mask)
    pred_to_ref = _surface_distances(pred_surface, ref_surface, scale)
    ref_to_pred = _surface_distances(ref_surface, pred_surface, scale)
    within = np.float32(tolerance)
    nsd = (np.count_nonzero(pred_to_ref <= within) + np.count_nonzero(ref_to_pred <= within)) / (
        pred_to_ref.size + ref_to_pred.size)
    hd95 = max(np.quantile(pred_to_ref, HD_PERCENTILE / 100), np.quantile(ref_to_pred, HD_PERCENTILE / 100))
    return float(nsd), float(hd95)


def case_boundary(pred: np.ndarray, ref: np.ndarray, classes: Mapping[str, Sequence[int]],
                  spacing: Sequence[float], is_2d: bool, settings: BoundarySettings,
                  ignore_label: int | None = None) -> dict[str, dict[str, float | None]]:
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
            nsd, hd95 = _scores(pred_mask, ref_mask, spacing, settings.tolerance(key))
            results[key] = {"nsd": nsd, "hd95": hd95}
    return results
