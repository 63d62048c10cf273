"""Case metrics (Dice, IoU, NSD, HD95, counts, volumes, detection flags) and their aggregates.

Definitions, per label and for the foreground (the union of all evaluated labels as one label):

- Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN); undefined (null) when reference and
  prediction are both empty, 0 when only one of them is (as nnU-Net's evaluator).
- NSD (at the label's tolerance) and HD95: :mod:`pu_nnunet.evaluation.metrics.boundary` (same
  empty conventions as Dice for NSD; HD95 undefined unless both masks have the label). Absent
  from the records of an evaluation made with ``boundary=False`` (``--no-boundary``).
- A case is *reference-empty* for a label when the reference has no voxel of it. There it is a
  false positive when the prediction has at least ``min_size`` voxels (K, default 1). Where the
  reference is not empty it is a false negative when the prediction has fewer than K voxels.
  K is a detection threshold only: Dice, IoU, NSD, HD95 and every averaging protocol count every
  predicted voxel whatever K (so they stay comparable with nnU-Net's and across K; removing small
  components is post-processing, nnU-Net's ``nnUNetv2_apply_postprocessing``).
- Aggregates: mean/median/std of Dice, IoU and NSD over reference-non-empty cases, of HD95 over
  the cases where it is defined (``n_hd95``); the case-level false-positive rate = false
  positives / reference-empty cases; the false-negative rate = false negatives /
  reference-non-empty cases, each with its exact (Clopper-Pearson) 95 % interval.
  ``dice_mean_nnunet`` is nnU-Net's own mean (over every case with a prediction where Dice is
  defined, so reference-empty false positives count as 0 and cases without a prediction are
  left out, as ``nnUNetv2_evaluate_folder --chill``); for the foreground it is nnU-Net's
  ``foreground_mean``, the mean of the label means. ``dice_protocols`` (``nsd_protocols``) hold
  the averaging protocols of :mod:`pu_nnunet.evaluation.metrics.protocols` side by side.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

import numpy as np

from pu_nnunet.evaluation.metrics.confusion import LabelConfusion
from pu_nnunet.evaluation.metrics.protocols import (NNUNET, clopper_pearson, dice_protocols, nnunet_foreground_mean,
                                                     score_protocols)

FOREGROUND = "foreground"

# mm^3 per millilitre: spacings are in mm, volumes are reported in ml.
MM3_PER_ML = 1000.0

# Default K of the false-positive rate: any predicted voxel on a reference-empty case counts.
DEFAULT_MIN_SIZE = 1

# Classes of cases absent from cases.json are grouped under this name.
UNKNOWN_CLASS = "unknown"


def overlap_scores(tp: int, fp: int, fn: int) -> tuple[float | None, float | None]:
    """(Dice, IoU), None for both when reference and prediction are empty."""
    if tp + fp + fn == 0:
        return None, None
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


def label_record(counts: dict[str, int], voxel_volume: float, min_size: int,
                 boundary: dict[str, float | None] | None = None) -> dict[str, Any]:
    """Per-case metrics of one label (or the foreground) from its TP/FP/FN/n_pred/n_ref and,
    unless None, its boundary metrics {"nsd": ..., "hd95": ...}."""
    dice, iou = overlap_scores(counts["tp"], counts["fp"], counts["fn"])
    ref_empty = counts["n_ref"] == 0
    predicted = counts["n_pred"] >= min_size
    return {
        "dice": dice,
        "iou": iou,
        **(boundary or {}),
        **counts,
        "ref_volume": counts["n_ref"] * voxel_volume,
        "pred_volume": counts["n_pred"] * voxel_volume,
        "ref_empty": ref_empty,
        "false_positive": predicted if ref_empty else None,
        "false_negative": None if ref_empty else not predicted,
    }


def case_record(case: str, confusion: LabelConfusion, classes: dict[str, tuple[int, ...]],
                spacing: tuple[float, ...], is_2d: bool, min_size: int, meta_entry: dict | None,
                missing_prediction: bool, boundary: dict[str, dict[str, float | None]] | None = None
                ) -> dict[str, Any]:
    """Everything reported about one case; ``classes``: label key -> its label values ("1" ->
    (1,), a region "(1, 2)" -> (1, 2)); ``boundary`` the case's boundary metrics per label key
    (None: not computed)."""
    voxel_volume = 1.0 if is_2d else float(np.prod(spacing)) / MM3_PER_ML
    of = lambda key: None if boundary is None else boundary.get(key, {"nsd": None, "hd95": None})
    per_label = {key: label_record(confusion.counts(values), voxel_volume, min_size, of(key))
                 for key, values in classes.items()}
    every_value = sorted({value for values in classes.values() for value in values})
    per_label[FOREGROUND] = label_record(confusion.counts(every_value), voxel_volume, min_size, of(FOREGROUND))
    meta_entry = meta_entry or {}
    return {
        "case": case,
        "class": meta_entry.get("class"),
        "split": meta_entry.get("split"),
        "missing_prediction": missing_prediction,
        "spacing": list(spacing),
        "volume_unit": "pixels" if is_2d else "ml",
        "labels": per_label,
    }


def _summary(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, median, sample std); std needs two values."""
    if not values:
        return None, None, None
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else None
    return float(array.mean()), float(np.median(array)), std


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def has_boundary(records: Iterable[dict[str, Any]]) -> bool:
    """Whether label records hold NSD/HD95 (not in evaluations made before them or with --no-boundary)."""
    return all("nsd" in r and "hd95" in r for r in records)


def _boundary_aggregates(records: list[dict[str, Any]], predicted: list[bool]) -> dict[str, Any]:
    nonempty = [r for r in records if not r["ref_empty"]]
    nsd_mean, nsd_median, nsd_std = _summary([r["nsd"] for r in nonempty])
    hd95 = [r["hd95"] for r in records if r["hd95"] is not None]
    hd95_mean, hd95_median, hd95_std = _summary(hd95)
    return {"nsd_mean": nsd_mean, "nsd_median": nsd_median, "nsd_std": nsd_std, "n_hd95": len(hd95),
            "hd95_mean": hd95_mean, "hd95_median": hd95_median, "hd95_std": hd95_std,
            "nsd_protocols": score_protocols(records, "nsd", predicted)}


def aggregate_label(records: list[dict[str, Any]], predicted: list[bool] | None = None) -> dict[str, Any]:
    """Aggregates of one label's per-case records (see the module docstring); ``predicted[i]``
    says whether case i has a prediction (default: all), for nnU-Net's mean."""
    predicted = [True] * len(records) if predicted is None else predicted
    nonempty = [r for r in records if not r["ref_empty"]]
    empty = [r for r in records if r["ref_empty"]]
    dice_mean, dice_median, dice_std = _summary([r["dice"] for r in nonempty])
    iou_mean, iou_median, iou_std = _summary([r["iou"] for r in nonempty])
    # nnU-Net's evaluator (with --chill) scores only the cases that have a prediction
    defined = [r for r, has in zip(records, predicted) if has and r["dice"] is not None]
    false_positives = sum(bool(r["false_positive"]) for r in empty)
    false_negatives = sum(bool(r["false_negative"]) for r in nonempty)
    return {
        "n_cases": len(records),
        "n_reference_nonempty": len(nonempty),
        "n_reference_empty": len(empty),
        "dice_mean": dice_mean,
        "dice_median": dice_median,
        "dice_std": dice_std,
        "iou_mean": iou_mean,
        "iou_median": iou_median,
        "iou_std": iou_std,
        "dice_mean_nnunet": _summary([r["dice"] for r in defined])[0],
        "iou_mean_nnunet": _summary([r["iou"] for r in defined])[0],
        "false_positive_cases": false_positives,
        "false_positive_rate": _rate(false_positives, len(empty)),
        "false_positive_rate_ci": clopper_pearson(false_positives, len(empty)),
        "false_negative_cases": false_negatives,
        "false_negative_rate": _rate(false_negatives, len(nonempty)),
        "false_negative_rate_ci": clopper_pearson(false_negatives, len(nonempty)),
        "dice_protocols": dice_protocols(records, predicted),
        **(_boundary_aggregates(records, predicted) if has_boundary(records) else {}),
    }


def _mean_of(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def aggregate_cases(cases: list[dict[str, Any]], label_keys: list[str]) -> dict[str, Any]:
    """Per label key (label values as strings, then "foreground") aggregates over ``cases``.

    ``mean_over_labels`` averages the per-label means; the foreground entry scores the union as
    one label, except its nnU-Net values, which are nnU-Net's ``foreground_mean`` (the mean of
    the label means, undefined when one label's is).
    """
    predicted = [not c.get("missing_prediction", False) for c in cases]
    result = {key: aggregate_label([c["labels"][key] for c in cases], predicted) for key in label_keys}
    per_label = [result[key] for key in label_keys if key != FOREGROUND]
    if FOREGROUND in result:
        foreground = result[FOREGROUND]
        foreground["dice_mean_nnunet"] = nnunet_foreground_mean([a["dice_mean_nnunet"] for a in per_label])
        foreground["iou_mean_nnunet"] = nnunet_foreground_mean([a["iou_mean_nnunet"] for a in per_label])
        foreground["dice_protocols"][NNUNET] = foreground["dice_mean_nnunet"]
        if "nsd_protocols" in foreground and all("nsd_protocols" in a for a in per_label):
            label_means = [a["nsd_protocols"][NNUNET] for a in per_label]
            foreground["nsd_protocols"][NNUNET] = nnunet_foreground_mean(label_means)
    result["mean_over_labels"] = {
        "dice_mean": _mean_of(a["dice_mean"] for a in per_label),
        "iou_mean": _mean_of(a["iou_mean"] for a in per_label),
        "dice_mean_nnunet": _mean_of(a["dice_mean_nnunet"] for a in per_label),
        "iou_mean_nnunet": _mean_of(a["iou_mean_nnunet"] for a in per_label),
        **({"nsd_mean": _mean_of(a["nsd_mean"] for a in per_label),
            "hd95_mean": _mean_of(a["hd95_mean"] for a in per_label)}
           if all("nsd_mean" in a for a in per_label) else {}),
    }
    return result


def aggregate_by_class(cases: list[dict[str, Any]], label_keys: list[str]) -> dict[str, Any]:
    """Aggregates per case class (cases.json "class"); empty when no case has a class."""
    if all(c["class"] is None for c in cases):
        return {}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for case in cases:
        groups[case["class"] if case["class"] is not None else UNKNOWN_CLASS].append(case)
    return {name: aggregate_cases(groups[name], label_keys) for name in sorted(groups)}
