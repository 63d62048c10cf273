"""The study report's Operating points section: per run, FPR on normal cases against lesion
sensitivity and Dice (:mod:`pu_nnunet.evaluation.operating_points`); per trainer against the
baseline, the FPR difference at matched lesion sensitivity, paired by fold and repeat; a plot
with one curve per trainer and run (``plots/operating_points.png``).

Each run's ``evaluation/operating_points.json`` is used where ``evaluate --operating-points``
wrote it, else made here from the run's held-out predictions (label maps; thresholds too where
nnU-Net's CASE.npz probabilities lie beside them). Only studies whose held-out cases include
normal (reference-empty) cases get the section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from pu_nnunet.evaluation.metrics.operating_points import DEFAULT_MATCHED_LEVELS, fpr_at_sensitivity
from pu_nnunet.evaluation.operating_points import (JSON_FILE, folder_operating_points, postprocessing_from_folder,
                                                   read_operating_points)
from pu_nnunet.evaluation.report.markdown import number, table
from pu_nnunet.study.jobs import PREDICTIONS_DIR, Job, run_folder
from pu_nnunet.study.spec import HELD_OUT_TEST, HELD_OUT_VALIDATION, Study

PLOT_FILE = "operating_points.png"


def _predictions(study: Study, job: Job, held_out: str) -> Path:
    if held_out == HELD_OUT_TEST:
        return run_folder(study.study_dir, job) / PREDICTIONS_DIR
    return study.model_folder(job.trainer, job.repeat) / f"fold_{job.fold}" / "validation"


def run_operating_points(study: Study, job: Job, state: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The run's operating points: read, or made from its predictions; None when neither can be."""
    evaluation = Path(state["evaluation"])
    evaluation = evaluation if evaluation.is_absolute() else study.study_dir / evaluation
    stored, metrics = evaluation / JSON_FILE, evaluation / "metrics.json"
    # one older than the run's metrics.json was made from predictions that have been replaced since
    if stored.is_file() and (not metrics.is_file() or stored.stat().st_mtime >= metrics.stat().st_mtime):
        return read_operating_points(stored)
    predictions = _predictions(study, job, state.get("held_out"))
    if not predictions.is_dir():
        return None

    _, reference, cases = study.held_out_cases(job.fold, state.get("held_out"))
    dataset_json = study.raw_dataset() / "dataset.json"
    choice = None
    validation = study.model_folder(job.trainer, job.repeat) / f"fold_{job.fold}" / "validation"
    if state.get("held_out") == HELD_OUT_TEST and validation.is_dir():
        # as nnU-Net: postprocessing decided on the fold's validation cases, applied to the test cases
        _, train_labels, fold_cases = study.held_out_cases(job.fold, HELD_OUT_VALIDATION)
        choice = postprocessing_from_folder(validation, train_labels, fold_cases, dataset_json)
    return folder_operating_points(predictions, reference, evaluation, cases=cases, name=job.name,
                                   dataset_json=dataset_json, plot=False, postprocessing=choice)


def _paired_differences(results: dict[Job, dict[str, Any]], baseline: str, trainer: str,
                        levels: tuple[float, ...]) -> list[dict[str, Any]]:
    base = {(job.fold, job.repeat): r for job, r in results.items() if job.trainer == baseline}
    pairs = [(base[(job.fold, job.repeat)], r) for job, r in results.items()
             if job.trainer == trainer and (job.fold, job.repeat) in base]
    rows = []
    for level in levels:
        differences = []
        for a, b in pairs:
            fa, fb = fpr_at_sensitivity(a["frontier"], level), fpr_at_sensitivity(b["frontier"], level)
            if fa is not None and fb is not None:
                differences.append(fb - fa)
        rows.append({"lesion_sensitivity": level, "n_pairs": len(pairs), "n_reached": len(differences),
                     "mean_fpr_difference": float(np.mean(differences)) if differences else None,
                     "differences": differences})
    return rows


def operating_points_summary(study: Study, evaluations: dict[Job, dict], states: dict[Job, dict]
                             ) -> Optional[dict[str, Any]]:
    if not any(e["aggregates"]["foreground"].get("n_reference_empty") for e in evaluations.values()):
        return None  # no normal case: there is no false-positive rate to trade
    results = {}
    for job in evaluations:
        result = run_operating_points(study, job, states[job])
        if result is not None:
            results[job] = result
    if not results:
        return None
    per_run = [{"job": job.name, "trainer": job.trainer, "fold": job.fold, "repeat": job.repeat,
                "probabilities": r["settings"]["probabilities"], "default_point": r["default_point"],
                "nnunet_postprocessing": {k: v for k, v in r["nnunet_postprocessing"].items()},
                "frontier": r["frontier"]} for job, r in results.items()]
    paired = {}
    if study.baseline:
        for trainer in study.trainers:
            if trainer != study.baseline:
                paired[trainer] = _paired_differences(results, study.baseline, trainer, DEFAULT_MATCHED_LEVELS)
    return {"runs": per_run, "paired": paired, "levels": list(DEFAULT_MATCHED_LEVELS),
            "_results": {job.name: r for job, r in results.items()}}


def markdown(section: Optional[dict[str, Any]], baseline: Optional[str], short_name: Callable[[str], str],
             plots_dir: str) -> list[str]:
    if not section:
        return []
    lines = ["## Operating points: false positives at matched sensitivity", "",
             "Image-level FPR on normal (reference-empty) cases against lesion sensitivity (reference components "
             "hit) over minimum component sizes (and softmax thresholds where probabilities were saved). A model "
             "that predicts less has fewer false positives and misses more lesions; the matched comparison "
             f"reads each run's lowest FPR at the same sensitivity. Plot: `{plots_dir}/{PLOT_FILE}`.", ""]
    rows = []
    for run in section["runs"]:
        d, pp = run["default_point"], run["nnunet_postprocessing"]
        rows.append([short_name(run["trainer"]), run["fold"], run["repeat"],
                     f"{d['false_positive_cases']}/{d['n_normal']}", f"{d['lesions_hit']}/{d['n_lesions']}",
                     number(d["lesion_dice"]), "keep largest" if pp.get("keep_largest") else "none",
                     f"{pp['false_positive_cases']}/{pp['n_normal']}", f"{pp['lesions_hit']}/{pp['n_lesions']}",
                     "yes" if run["probabilities"] else "no"])
    lines += [table(["trainer", "fold", "repeat", "FP normal (label map)", "lesions hit", "lesion Dice",
                     "nnU-Net postprocessing", "FP normal (postprocessed)", "lesions hit (postprocessed)",
                     "thresholds"], rows), ""]
    for trainer, levels in section["paired"].items():
        rows = [[number(row["lesion_sensitivity"], 2), f"{row['n_reached']}/{row['n_pairs']}",
                 "n/a" if row["mean_fpr_difference"] is None else f"{row['mean_fpr_difference']:+.4f}",
                 " ".join(f"{d:+.3f}" for d in row["differences"])] for row in levels]
        lines += [f"FPR {short_name(trainer)} - {short_name(baseline)} at matched lesion sensitivity, per paired run "
                  "(pairs where both runs reach the level):", "",
                  table(["lesion sensitivity", "pairs reaching it", "mean FPR difference", "per pair"], rows), ""]
    return lines


def plot(section: Optional[dict[str, Any]], path: Path, short_name: Callable[[str], str]) -> None:
    if not section:
        return
    from pu_nnunet.evaluation.operating_points_plot import plot_curves

    trainers = list(dict.fromkeys(run["trainer"] for run in section["runs"]))
    import matplotlib

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    named, colours = {}, {}
    for run in section["runs"]:
        name = f"{short_name(run['trainer'])} f{run['fold']} r{run['repeat']}"
        named[name] = section["_results"][run["job"]]
        colours[name] = cycle[trainers.index(run["trainer"]) % len(cycle)]
    plot_curves(named, path, colours, title="Operating points of every run (colour = trainer)")


def for_summary(section: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The section without the full per-run results (kept in each run's operating_points.json)."""
    return None if section is None else {k: v for k, v in section.items() if k != "_results"}
