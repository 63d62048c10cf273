"""The study report's Robustness section, from the jobs' finished robustness sweeps
(:mod:`pu_nnunet.robustness.study_sweep`): each job a run of the sweep, paired with the
baseline's job of the same fold and repeat, through the statistics and tables of
``pu-nnunet robustness`` (:mod:`pu_nnunet.robustness.summary`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from pu_nnunet.evaluation.compare import load_evaluation
from pu_nnunet.robustness.settings import measured
from pu_nnunet.robustness.study_sweep import conditions, finished_sweep
from pu_nnunet.robustness.summary import SweptRun, paired_lines, per_trainer_lines, plot_dice_vs_strength, summarize
from pu_nnunet.study.jobs import Job, in_study
from pu_nnunet.study.spec import Study

PLOT_FILE = "robustness_dice_vs_strength.png"
COMPARISONS_SUBDIR = "robustness"
# what each intensity model means for the Poisson noise and the bias field (corruptions.py has the formulas)
INTENSITY_MODELS = {"ct": "CT: Poisson noise on the attenuation HU + 1000, water holding the photon count "
                          "(an image-domain low-dose model)",
                    "intensity": "non-negative intensities, the case maximum holding the photon count"}


def _load_sweeps(study: Study, jobs) -> dict[Job, dict[str, Any]]:
    """Job -> {"result": robustness.json, "metrics": condition -> metrics.json} of finished sweeps."""
    sweeps = {}
    for job in jobs:
        result = finished_sweep(study, job)
        if result is None:
            continue
        sweeps[job] = {"result": result, "metrics": {
            c["name"]: load_evaluation(in_study(study.study_dir, c["evaluation"]))[0]
            for c in result["conditions"]}}
    return sweeps


def swept_run(job: Job) -> SweptRun:
    """A job as a run of the sweep: paired by fold and repeat, its cases tagged as the clean sections' are."""
    return SweptRun(job.trainer, (job.repeat, job.fold), f"fold {job.fold}, repeat {job.repeat}",
                    f"|fold_{job.fold}|repeat_{job.repeat}", job.name)


def robustness_summary(study: Study, finished_jobs) -> Optional[dict[str, Any]]:
    """The section's numbers from the finished jobs' sweeps; None without a sweep (or a study without one)."""
    if study.robustness is None:
        return None
    sweeps = _load_sweeps(study, finished_jobs)
    if not sweeps:
        return None
    order = {trainer: index for index, trainer in enumerate(study.trainers)}
    jobs = sorted((job for job in sweeps if job.trainer in order), key=lambda job: order[job.trainer])
    runs = {swept_run(job): job for job in jobs}
    summary = summarize(list(runs), conditions(study), {run: sweeps[job]["metrics"] for run, job in runs.items()},
                        study.baseline, study.study_dir / "comparisons" / COMPARISONS_SUBDIR, study.mid,
                        study.equivalence_margin)
    description = next(iter(sweeps.values()))["result"]["description"]
    return {"settings": measured(study.robustness), "intensity_model": description["intensity_model"], **summary,
            "missing_runs": [job.name for job in finished_jobs if job not in sweeps]}


def markdown(section: Optional[dict[str, Any]], held_out: Optional[str], short_name: Callable[[str], str],
             plots_dir: str) -> list[str]:
    if not section:
        return []
    settings = section["settings"]
    strengths = "; ".join(f"{name} {', '.join(f'{s:g}' for s in values)}"
                          for name, values in settings["strengths"].items())
    n_swept = sum(len(runs) for runs in section["runs"].values())
    lines = ["## Robustness under image corruptions", "",
             f"Each run's held-out cases ({'imagesTs' if held_out == 'test' else 'its fold validation cases'}) "
             "predicted again by the run's model under each corruption and strength (`pu_nnunet.robustness`, as "
             "`pu-nnunet robustness`) and evaluated as the clean run. Strengths: " + strengths + ". Corruption "
             f"model: intensity model `{section['intensity_model']}` "
             f"({INTENSITY_MODELS.get(section['intensity_model'], 'see pu_nnunet/robustness/corruptions.py')}; "
             "formulas in pu_nnunet/robustness/corruptions.py); noise seed "
             f"{settings['seed']}, so every trainer and repeat sees the same corrupted images; mirroring "
             f"{'on' if settings['mirroring'] else 'off'}. `clean` is the same prediction without corruption, the "
             f"reference of each run's change. Runs with a finished sweep: {n_swept}"
             + (f"; without: {', '.join(section['missing_runs'])}" if section["missing_runs"] else "") + ".", "",
             *per_trainer_lines(section, short_name), *paired_lines(section, short_name)]
    lines += [f"![Dice vs strength]({plots_dir}/{PLOT_FILE})", "",
              "Per run: `runs/<job>/robustness/` (each condition's predictions and evaluation); comparisons: "
              f"`comparisons/{COMPARISONS_SUBDIR}/<trainer>_vs_<baseline>/<condition>/` (paired) and "
              f"`comparisons/{COMPARISONS_SUBDIR}/<trainer>/<condition>_vs_clean/`.", ""]
    return lines


def plot(section: dict[str, Any], path: Path, short_name: Callable[[str], str]) -> None:
    plot_dice_vs_strength(section, path, label=short_name)
