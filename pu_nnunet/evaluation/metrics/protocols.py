"""The four ways papers average Dice (and NSD) over a test set, and exact intervals of case-level rates.

Published Dice values are not comparable unless their averaging is known; on data sets with
reference-empty cases (BUSI's normal images, a label absent from some scans) the protocols below
differ by several points. Each is computed from the per-case records of ``case_metrics``
(TP/FP/FN, Dice, reference-empty flag):

- ``per_case_nonempty``: mean of per-case Dice over cases whose reference has the label
  (this package's headline ``dice_mean``).
- ``nnunet``: nnU-Net's ``summary.json`` mean (``nnUNetv2_evaluate_folder``): over every case
  with a prediction where Dice is defined, so a reference-empty case with a false positive counts
  0 and an empty/empty case is dropped. A case without a prediction is left out, as nnU-Net's
  evaluator with ``--chill`` leaves it out (without ``--chill`` nnU-Net refuses the folder); the
  other protocols score it as an empty prediction. For the foreground nnU-Net reports
  ``foreground_mean``, the mean of the label means (not the Dice of the merged labels);
  :func:`nnunet_foreground_mean` gives it.
- ``per_case_empty_as_one``: mean over all cases, an empty/empty case counting 1 (a correct
  empty prediction) and an empty reference with any predicted voxel 0.
- ``pooled``: one Dice of all voxels of the test set at once, 2 sum TP / (2 sum TP + sum FP +
  sum FN), as several 2D segmentation code bases compute it.

Every protocol counts every voxel: ``--min-size`` (K) changes only the case-level detection
flags (false-positive and false-negative rates), never a Dice, IoU, NSD or HD95 value.

NSD has the same empty conventions as Dice (:mod:`pu_nnunet.evaluation.metrics.boundary`), so
the first three protocols apply to it unchanged (nnU-Net computes no NSD: its column is nnU-Net's
averaging rule applied to NSD); there is no pooled NSD (``NSD_PROTOCOLS``). HD95 is averaged
only over the cases where both masks have the label (it is undefined elsewhere).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

PER_CASE_NONEMPTY, NNUNET, EMPTY_AS_ONE, POOLED = "per_case_nonempty", "nnunet", "per_case_empty_as_one", "pooled"
DICE_PROTOCOLS = (PER_CASE_NONEMPTY, NNUNET, EMPTY_AS_ONE, POOLED)
# NSD has no voxel counts to pool; the other three protocols apply to it as to Dice.
NSD_PROTOCOLS = (PER_CASE_NONEMPTY, NNUNET, EMPTY_AS_ONE)
PROTOCOL_TITLES = {
    PER_CASE_NONEMPTY: "per-case mean, non-empty references",
    NNUNET: "nnU-Net (summary.json mean)",
    EMPTY_AS_ONE: "per-case mean, correct empty = 1",
    POOLED: "pooled (all voxels at once)",
}
PROTOCOL_DEFINITIONS = {
    PER_CASE_NONEMPTY: "mean Dice over the cases whose reference has the label; reference-empty cases are left out",
    NNUNET: "nnU-Net's mean (nnUNetv2_evaluate_folder) over the cases with a prediction where Dice is defined: "
            "an empty reference with any predicted voxel counts 0, empty reference and empty prediction is dropped, "
            "a case without a prediction is left out (as nnU-Net with --chill; it refuses without); foreground: "
            "nnU-Net's foreground_mean, the mean of the label means",
    EMPTY_AS_ONE: "mean over all cases; empty reference and empty prediction counts 1, an empty reference with any "
                  "predicted voxel 0",
    POOLED: "one Dice of all voxels of all cases: 2 sum TP / (2 sum TP + sum FP + sum FN)",
}
# Confidence level of the case-level rate intervals (Clopper-Pearson, exact).
RATE_CONFIDENCE = 0.95


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def dice_protocols(records: Iterable[dict[str, Any]],
                   predicted: Sequence[bool] | None = None) -> dict[str, float | None]:
    """The four protocols' Dice of one label over per-case records (None where undefined).

    ``predicted[i]``: whether case i has a prediction (default: every case); the nnU-Net
    protocol leaves the others out. Records without voxel counts (rebuilt from compare's
    per_case_paired.csv, which keeps only Dice) give no pooled Dice."""
    records = list(records)
    counted = all("tp" in r for r in records)
    tp = sum(r["tp"] for r in records) if counted else 0
    fp = sum(r["fp"] for r in records) if counted else 0
    fn = sum(r["fn"] for r in records) if counted else 0
    return {**score_protocols(records, "dice", predicted),
            POOLED: 2 * tp / (2 * tp + fp + fn) if counted and tp + fp + fn else None}


def score_protocols(records: Sequence[dict[str, Any]], score: str,
                    predicted: Sequence[bool] | None = None) -> dict[str, float | None]:
    """The per-case protocols (all but pooled) of ``score`` ("dice", "nsd"), whose value is
    None exactly where reference and prediction are both empty."""
    predicted = [True] * len(records) if predicted is None else list(predicted)
    return {
        PER_CASE_NONEMPTY: _mean([r[score] for r in records if not r["ref_empty"]]),
        NNUNET: _mean([r[score] for r, has in zip(records, predicted) if has and r[score] is not None]),
        EMPTY_AS_ONE: _mean([1.0 if r[score] is None else r[score] for r in records]),
    }


def nnunet_foreground_mean(label_means: Sequence[float | None]) -> float | None:
    """nnU-Net's foreground_mean: ``np.mean`` of the label means, so one undefined label mean
    (a label in no reference and no prediction) makes it undefined (NaN there, None here)."""
    if not label_means or any(m is None for m in label_means):
        return None
    return float(np.mean(label_means))


def clopper_pearson(hits: int, total: int, confidence: float = RATE_CONFIDENCE) -> tuple[float, float] | None:
    """Exact binomial interval of ``hits / total`` (scipy's binomtest); None without cases."""
    if total == 0:
        return None
    from scipy.stats import binomtest

    interval = binomtest(hits, total).proportion_ci(confidence_level=confidence, method="exact")
    low, high = float(interval.low), float(interval.high)
    return (0.0 if math.isnan(low) else low, 1.0 if math.isnan(high) else high)
