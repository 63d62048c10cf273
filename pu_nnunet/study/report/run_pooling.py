"""Runs of a study taken together: several runs' evaluations as one for ``compare`` (case ids tagged with fold and repeat, so that case i of a
baseline run pairs with case i of the same fold and repeat of another trainer)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def pooled_evaluation(evaluations: Mapping[Any, dict], runs: Sequence[Any]) -> dict[str, Any]:
    """The runs' evaluations (metrics.json content by job: .fold, .repeat) as one."""
    first = evaluations[runs[0]]
    cases, missing = [], []
    for job in runs:
        tag = f"|fold_{job.fold}|repeat_{job.repeat}"
        cases += [{**case, "case": case["case"] + tag} for case in evaluations[job]["cases"]]
        missing += [case + tag for case in evaluations[job]["missing_predictions"]]
    return {**first, "cases": cases, "missing_predictions": missing, "n_reference_cases": len(cases)}
