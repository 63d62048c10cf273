"""Operating points: image-level false-positive rate on normal cases against lesion Dice and
lesion-level sensitivity, as the minimum component size and the probability threshold vary.

"Fewer false positives" is only a gain if sensitivity is kept: a model that predicts less
everywhere has fewer false positives and misses more lesions. So each model is scored over a
grid of operating points, and two models are compared at matched sensitivity (the FPR each
reaches while detecting the same share of lesions), not at one threshold.

Definitions (one foreground: the union of every label):
- a *normal* case has an empty reference; it is a false positive at an operating point when a
  predicted component of at least the minimum size remains (image-level FPR = false-positive
  normal cases / normal cases, with its exact Clopper-Pearson interval);
- a *lesion* is a connected component of a reference (face connectivity, scipy's default and
  nnU-Net's keep-largest-component postprocessing's); it is *hit* when a kept predicted
  component overlaps it. Lesion sensitivity = lesions hit / lesions, pooled over lesion cases;
- lesion Dice: the mean over lesion cases (reference non-empty) of the foreground Dice of the
  kept prediction.

Each case is reduced once per threshold to its predicted components (size, true-positive
voxels, lesions touched), so a whole grid of minimum sizes costs one labelling per threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from pu_nnunet.evaluation.metrics.protocols import clopper_pearson

# The threshold of the saved label maps (nnU-Net's argmax), as opposed to a softmax threshold.
LABEL_MAP = "label map"
# Default grids: minimum component sizes in voxels (1 = every component) and softmax thresholds.
DEFAULT_MIN_SIZES = (1, 5, 10, 20, 50, 100, 200, 500)
DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# Sensitivity levels the matched comparison always reports (beside each model's default point).
DEFAULT_MATCHED_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class MinSize:
    """A minimum component size: in voxels, or a physical size (mm^2 in 2D, mm^3 in 3D) that is
    turned into voxels per case from its spacing (rounded up: a component reaches the size)."""

    value: float
    unit: str  # "voxels" or "mm"

    def voxels(self, voxel_size_mm: float) -> int:
        if self.unit == "voxels":
            return int(self.value)
        return max(1, math.ceil(self.value / voxel_size_mm - 1e-9))

    def label(self) -> str:
        return f"{self.value:g} vox" if self.unit == "voxels" else f"{self.value:g} mm"


def voxel_size_mm(spacing: Sequence[float], is_2d: bool) -> float:
    """Area (2D, mm^2) or volume (3D, mm^3) of one voxel."""
    axes = list(spacing)[1:] if is_2d and len(spacing) == 3 else list(spacing)
    return float(np.prod(axes))


@dataclass
class CaseComponents:
    """One case at one threshold: its predicted components and the lesions they touch."""

    sizes: np.ndarray  # voxels of each predicted component
    true_positives: np.ndarray  # of each predicted component, voxels inside the reference
    touches: np.ndarray  # (k, 2) pairs (predicted component, lesion) that overlap
    n_lesions: int
    reference_voxels: int
    voxel_size_mm: float

    def kept(self, min_voxels: int) -> np.ndarray:
        return self.sizes >= min_voxels

    def largest_only(self) -> np.ndarray:
        """nnU-Net's keep-largest-component postprocessing (ties: every largest one is kept,
        as acvl_utils' remove_all_but_largest_component)."""
        return self.sizes == self.sizes.max() if self.sizes.size else np.zeros(0, bool)

    def scores(self, kept: np.ndarray) -> dict[str, Any]:
        predicted = int(self.sizes[kept].sum())
        tp = int(self.true_positives[kept].sum())
        hit = np.unique(self.touches[kept[self.touches[:, 0]], 1]) if self.touches.size else np.zeros(0)
        denominator = predicted + self.reference_voxels
        return {"predicted": predicted, "dice": 2 * tp / denominator if denominator else None,
                "lesions_hit": int(hit.size)}


def case_components(prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float],
                    is_2d: bool) -> CaseComponents:
    """Predicted components of a foreground mask against the reference foreground mask."""
    from scipy import ndimage

    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction shape {prediction.shape} != reference shape {reference.shape}")
    predicted_labels, n_predicted = ndimage.label(prediction)
    lesion_labels, n_lesions = ndimage.label(reference)
    sizes = np.bincount(predicted_labels.ravel(), minlength=n_predicted + 1)[1:]
    true_positives = np.bincount(predicted_labels[reference], minlength=n_predicted + 1)[1:]
    overlap = (predicted_labels > 0) & (lesion_labels > 0)
    pairs = np.unique(np.stack([predicted_labels[overlap], lesion_labels[overlap]], axis=1), axis=0) - 1 \
        if overlap.any() else np.zeros((0, 2), np.int64)
    return CaseComponents(sizes.astype(np.int64), true_positives.astype(np.int64), pairs.astype(np.int64),
                          int(n_lesions), int(reference.sum()), voxel_size_mm(spacing, is_2d))


def score_point(cases: Sequence[CaseComponents], choose: Any) -> dict[str, Any]:
    """One operating point over a set of cases; ``choose(case) -> kept mask`` of its components."""
    normal = [case for case in cases if case.reference_voxels == 0]
    lesion_cases = [case for case in cases if case.reference_voxels > 0]
    # a normal case is a false positive when any of its components is kept
    false_positives = sum(1 for case in normal if choose(case).any())
    lesion_scores = [case.scores(choose(case)) for case in lesion_cases]
    n_lesions = sum(case.n_lesions for case in lesion_cases)
    hit = sum(score["lesions_hit"] for score in lesion_scores)
    dices = [score["dice"] for score in lesion_scores]
    return {
        "false_positive_cases": false_positives, "n_normal": len(normal),
        "fpr": false_positives / len(normal) if normal else None,
        "fpr_ci": clopper_pearson(false_positives, len(normal)),
        "lesions_hit": hit, "n_lesions": n_lesions,
        "lesion_sensitivity": hit / n_lesions if n_lesions else None,
        "lesion_cases_detected": sum(1 for score in lesion_scores if score["lesions_hit"]),
        "n_lesion_cases": len(lesion_cases),
        "lesion_dice": float(np.mean(dices)) if dices else None,
    }


def grid_points(cases_by_threshold: dict[Any, list[CaseComponents]], min_sizes: Sequence[MinSize]
                ) -> list[dict[str, Any]]:
    """Every (threshold, minimum size) point; thresholds as given (a float or LABEL_MAP)."""
    points = []
    for threshold, cases in cases_by_threshold.items():
        for size in min_sizes:
            point = score_point(cases, lambda case: case.kept(size.voxels(case.voxel_size_mm)))
            points.append({"threshold": threshold, "min_size": size.value, "min_size_unit": size.unit, **point})
    return points


def frontier(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats: for each sensitivity, the lowest FPR reached at that or a
    higher sensitivity. Sorted by sensitivity; the curve the matched comparison reads."""
    usable = [p for p in points if p["fpr"] is not None and p["lesion_sensitivity"] is not None]
    ordered = sorted(usable, key=lambda p: (-p["lesion_sensitivity"], p["fpr"]))
    kept, best = [], math.inf
    for point in ordered:
        if point["fpr"] < best:
            kept.append(point)
            best = point["fpr"]
    return kept[::-1]


def fpr_at_sensitivity(curve: Sequence[dict[str, Any]], level: float) -> float | None:
    """FPR of a frontier at a lesion sensitivity, linear between its two neighbouring points
    (mixing two operating points case by case reaches every point between them); None where
    the model never reaches that sensitivity."""
    sensitivities = [p["lesion_sensitivity"] for p in curve]
    rates = [p["fpr"] for p in curve]
    if not curve or level > sensitivities[-1] + 1e-12:
        return None
    if level <= sensitivities[0]:
        return rates[0]  # a lower sensitivity never needs a higher FPR than the lowest point's
    return float(np.interp(level, sensitivities, rates))


def matched_comparison(curves: dict[str, Sequence[dict[str, Any]]], default_points: dict[str, dict[str, Any]],
                       levels: Sequence[float] = DEFAULT_MATCHED_LEVELS) -> list[dict[str, Any]]:
    """FPR of each model at common lesion sensitivities: the given levels and each model's
    sensitivity at its default operating point (where the unmatched comparison is made)."""
    wanted = {round(float(level), 6): "grid" for level in levels}
    for name, point in default_points.items():
        if point.get("lesion_sensitivity") is not None:
            wanted[round(point["lesion_sensitivity"], 6)] = f"default point of {name}"
    rows = []
    for level, source in sorted(wanted.items()):
        rows.append({"lesion_sensitivity": level, "level_from": source,
                     "fpr": {name: fpr_at_sensitivity(curve, level) for name, curve in curves.items()}})
    return rows
