"""Runs of a study taken together: the spread of a per-run value over runs, and several runs'
evaluations as one for ``compare`` (case ids tagged with fold and repeat, so that case i of a
baseline run pairs with case i of the same fold and repeat of another trainer)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np


def spread(values: Sequence[Optional[float]]) -> dict[str, Any]:
    """n, mean, sd (None below two values), min and max of the values that are not None."""
    kept = np.asarray([v for v in values if v is not None], dtype=float)
    if len(kept) == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": int(len(kept)), "mean": float(kept.mean()), "sd": float(kept.std(ddof=1)) if len(kept) > 1 else None,
            "min": float(kept.min()), "max": float(kept.max())}


def pooled_evaluation(evaluations: Mapping[Any, dict], runs: Sequence[Any]) -> dict[str, Any]:
    """The runs' evaluations (metrics.json content by job: .fold, .repeat) as one."""
    first = evaluations[runs[0]]
    cases, missing = [], []
    for job in runs:
        tag = f"|fold_{job.fold}|repeat_{job.repeat}"
        cases += [{**case, "case": case["case"] + tag} for case in evaluations[job]["cases"]]
        missing += [case + tag for case in evaluations[job]["missing_predictions"]]
    return {**first, "cases": cases, "missing_predictions": missing, "n_reference_cases": len(cases)}
