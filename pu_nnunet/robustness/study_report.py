"""The study report's Robustness section, from the jobs' finished robustness sweeps
(:mod:`pu_nnunet.robustness.study_sweep`).

Per trainer and condition: the foreground Dice of each run (mean over its cases whose reference
has foreground), mean ± sd over runs; each run's change from its own clean sweep prediction, mean
± sd over runs; the false-positive rate on reference-empty cases over runs, with an exact
(Clopper-Pearson) interval whose sample is the images, not the image-runs. Per trainer against the
baseline and condition: the run-level difference (:func:`pu_nnunet.study.run_level.run_level_analysis`:
t-interval, sign-flip test, Holm over the section, equivalence, power) and the pooled case-level
``compare`` (paired bootstrap CI, Wilcoxon; false positives by McNemar per run and a sign-flip test
over images across runs), runs paired by fold and repeat as in the clean sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from pu_nnunet.evaluation.compare import load_evaluation
from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.flag_rates import PAIRED_FLAG_HEADER, paired_flag_cells, rate_text
from pu_nnunet.evaluation.metrics.paired_stats import CONFIDENCE_LEVEL
from pu_nnunet.evaluation.metrics.run_stats import RUN_CONFIDENCE
from pu_nnunet.evaluation.report.markdown import number, p_value, table
from pu_nnunet.study import run_level
from pu_nnunet.study.jobs import Job, in_study
from pu_nnunet.study.protocol_section import mean_sd
from pu_nnunet.robustness.settings import measured
from pu_nnunet.robustness.study_sweep import conditions, finished_sweep
from pu_nnunet.study.run_pooling import pooled_evaluation, spread
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


def _per_trainer(trainers: list[str], sweeps: dict[Job, dict], names: list[str]) -> dict[str, Any]:
    from pu_nnunet.robustness.report import false_positive_rate, mean_dice
    from pu_nnunet.robustness.sweep import CLEAN

    result = {}
    for trainer in trainers:
        runs = [job for job in sweeps if job.trainer == trainer]
        dice = {name: [mean_dice(sweeps[job]["metrics"][name]["cases"]) for job in runs] for name in names}
        entry = {}
        for name in names:
            # run-tagged case ids: the false-positive interval has the images, not the image-runs, as its sample
            cases = pooled_evaluation({job: sweeps[job]["metrics"][name] for job in runs}, runs)["cases"] if runs else []
            row = {"n_runs": len(runs), "dice": spread(dice[name]), "dice_per_run": dice[name],
                   "false_positive_rate": false_positive_rate(cases)}
            row["dice_mean"] = row["dice"]["mean"]  # the plot's key (as pu-nnunet robustness's summary)
            if name != CLEAN:
                row["change_from_clean"] = spread([d - c for d, c in zip(dice[name], dice[CLEAN])
                                                   if d is not None and c is not None])
            entry[name] = row
        result[trainer] = entry
    return result


def _paired(study: Study, sweeps: dict[Job, dict], names: list[str]) -> dict[str, Any]:
    from pu_nnunet.evaluation import compare_evaluations

    baseline = study.baseline
    baseline_runs = {(job.fold, job.repeat): job for job in sweeps if job.trainer == baseline}
    pairs, compared = {}, {}
    for trainer in study.trainers:
        paired = sorted(((baseline_runs[(job.fold, job.repeat)], job) for job in sweeps
                         if job.trainer == trainer != baseline and (job.fold, job.repeat) in baseline_runs),
                        key=lambda pair: (pair[1].repeat, pair[1].fold))
        if not paired:
            continue
        pairs[trainer], compared[trainer] = {}, {}
        for name in names:
            evaluations = {job: sweeps[job]["metrics"][name] for pair in paired for job in pair}
            # the conditions take the place of the labels: Holm then runs over trainers and conditions
            pairs[trainer][name] = run_level.pairs_from_evaluations(
                evaluations, baseline, [trainer], [FOREGROUND])[trainer][FOREGROUND]
            out = study.study_dir / "comparisons" / COMPARISONS_SUBDIR / f"{trainer}_vs_{baseline}" / name
            comparison = compare_evaluations(pooled_evaluation(evaluations, [a for a, _ in paired]),
                                             pooled_evaluation(evaluations, [b for _, b in paired]), out,
                                             names=(baseline, trainer), overwrite=True, plots=False)
            compared[trainer][name] = {"n_cases_compared": comparison["n_cases_compared"],
                                       "dice": comparison["overall"][FOREGROUND]["dice"],
                                       "false_positive": comparison["overall"][FOREGROUND]["false_positive"],
                                       "comparison_dir": str(out)}
    analysis = run_level.run_level_analysis(pairs, study.mid, study.equivalence_margin)
    return {trainer: {name: {"run_level": analysis[trainer][name], "pooled": compared[trainer][name]}
                      for name in names} for trainer in pairs}


def robustness_summary(study: Study, finished_jobs) -> Optional[dict[str, Any]]:
    """The section's numbers from the finished jobs' sweeps; None without a sweep (or a study without one)."""
    if study.robustness is None:
        return None
    sweeps = _load_sweeps(study, finished_jobs)
    if not sweeps:
        return None
    names = [c.name for c in conditions(study)]
    trainers = [t for t in study.trainers if any(job.trainer == t for job in sweeps)]
    description = next(iter(sweeps.values()))["result"]["description"]
    return {"settings": measured(study.robustness), "intensity_model": description["intensity_model"],
            "conditions": [{"name": c.name, "corruption": c.corruption, "strength": c.strength}
                           for c in conditions(study)],
            "trainers": trainers, "baseline": study.baseline,
            "runs": {t: [job.name for job in sweeps if job.trainer == t] for t in trainers},
            "missing_runs": [job.name for job in finished_jobs if job not in sweeps],
            "per_trainer": _per_trainer(trainers, sweeps, names),
            "paired": _paired(study, sweeps, names) if study.baseline in trainers else {}}


_signed, _interval = run_level.signed, run_level.interval


def _change(entry: Mapping[str, Any]) -> str:
    change = entry.get("change_from_clean")
    if change is None:
        return "-"
    return "n/a" if change["mean"] is None else _signed(change["mean"]) + (
        "" if change["sd"] is None else f" ± {number(change['sd'])}")


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
             "Dice: foreground Dice of each run (mean over its cases whose reference has foreground), mean ± sd "
             "over runs; change: each run's Dice minus its clean Dice, mean ± sd over runs; FPR: reference-empty "
             "case-runs with predicted foreground (k/n), with an exact (Clopper-Pearson) "
             f"{CONFIDENCE_LEVEL:.0%} interval whose sample is the images, not the image-runs.", ""]
    rows = [[short_name(trainer), name, entry["n_runs"], mean_sd(entry["dice"]), _change(entry),
             rate_text(entry["false_positive_rate"])]
            for trainer, by_condition in section["per_trainer"].items() for name, entry in by_condition.items()]
    lines += [table(["trainer", "condition", "runs", "Dice fg", "change from clean", "FPR fg (k/n) [95% CI]"],
                    rows), ""]
    if section["paired"]:
        lines += [f"Against the baseline {short_name(section['baseline'])}, per condition (trainer - baseline, "
                  "runs paired by fold and repeat): run-level, one difference of mean Dice per paired run, its "
                  f"{RUN_CONFIDENCE:.0%} t-interval (new runs on these images; shown from {run_level.MIN_RUNS_FOR_INTERVAL} "
                  "paired runs up), the sign-flip p (Holm over this table) and the conclusion (different / "
                  "equivalent within the margin by TOST / inconclusive; methods as in the run-level section); "
                  "pooled cases, `compare`'s paired bootstrap CI (optimistic: a case appears once per run); false "
                  "positives of each on the reference-empty case-runs, tested with the images as the sample.", ""]
        rows = []
        for trainer, by_condition in section["paired"].items():
            for name, entry in by_condition.items():
                runs, pooled = entry["run_level"], entry["pooled"]
                dice, fp = pooled["dice"], pooled["false_positive"]
                rows.append([short_name(trainer), name, runs["n_runs"], _signed(runs["mean_difference"]),
                             _interval(runs["t_low"], runs["t_high"]),
                             f"{run_level.sign_flip(runs)} ({p_value(runs.get('sign_flip_p_holm'))})",
                             runs.get("conclusion", "n/a"), dice["n"],
                             _signed(dice["mean_difference"]), _interval(dice["ci_low"], dice["ci_high"]),
                             f"{fp['cases_a']}/{fp['n']}", f"{fp['cases_b']}/{fp['n']}", *paired_flag_cells(fp)[1:]])
        lines += [table(["trainer", "condition", "paired runs", "Δ Dice (runs)", f"{RUN_CONFIDENCE:.0%} t-interval",
                         "sign-flip p (Holm)", "conclusion", "cases", "Δ Dice (pooled)", "95% bootstrap CI",
                         "FP baseline", "FP trainer", *PAIRED_FLAG_HEADER[1:]], rows), ""]
    lines += [f"![Dice vs strength]({plots_dir}/{PLOT_FILE})", "",
              "Per run: `runs/<job>/robustness/` (each condition's predictions and evaluation); paired comparisons: "
              f"`comparisons/{COMPARISONS_SUBDIR}/`.", ""]
    return lines


def plot(section: dict[str, Any], path: Path, short_name: Callable[[str], str]) -> None:
    from pu_nnunet.robustness.report import plot_dice_vs_strength

    plot_dice_vs_strength(section, path, label=short_name)
