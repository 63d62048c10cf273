"""The statistics and tables of a robustness sweep: one set for ``pu-nnunet robustness`` and the
study report's Robustness section (``study run --robustness``), so both say the same thing.

A sweep is a set of runs (:class:`SweptRun`: one trained model, or one study job), each evaluated
under every condition (``clean`` and each corruption at each strength). The command has one run
per NAME, or several (NAME=DIR repeated); a study has one per fold and repeat.

Per trainer and condition: the foreground Dice of each run (mean over its cases whose reference
has foreground), mean ± sd over runs; each run's change from its own clean Dice, mean ± sd over
runs, and the change of the pooled runs with ``compare``'s paired bootstrap CI; the false-positive
rate on reference-empty cases over the runs, with an exact (Clopper-Pearson) interval whose sample
is the images, not the image-runs (:func:`pu_nnunet.evaluation.metrics.flag_rates.flag_rate`).

Per trainer against the baseline and condition, runs paired by key (fold and repeat in a study,
repeat k with repeat k in the command): the run-level difference of mean Dice
(:func:`pu_nnunet.evaluation.metrics.run_stats.run_level_difference`: t-interval, sign-flip test,
TOST; Holm over every trainer and condition) and the pooled case-level ``compare`` (paired
bootstrap CI; false positives by McNemar per run and a sign-flip test over images across runs).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.flag_rates import PAIRED_FLAG_HEADER, flag_rate, paired_flag_cells, rate_text
from pu_nnunet.evaluation.metrics.paired_stats import CONFIDENCE_LEVEL
from pu_nnunet.evaluation.metrics.run_stats import (DEFAULT_EQUIVALENCE_MARGIN, DEFAULT_MID, MIN_RUNS_FOR_INTERVAL,
                                                    RUN_CONFIDENCE, add_family_results, run_level_difference,
                                                    spread)
from pu_nnunet.evaluation.report.markdown import interval, mean_sd, number, p_value, sign_flip, signed, table
from pu_nnunet.robustness.sweep import CLEAN, Condition


@dataclass(frozen=True)
class SweptRun:
    """One model swept under every condition. ``key`` pairs it with the baseline's run of the
    same key (and orders the runs); ``run_id`` names it in the run-level results; ``tag`` ends its
    case ids when runs are pooled (:func:`pu_nnunet.evaluation.metrics.flag_rates.split_run_tag`
    reads it back); ``name`` is what the summary lists it as (a folder, a study job)."""

    trainer: str
    key: tuple[int, ...]
    run_id: str
    tag: str
    name: str


# run -> condition name -> metrics.json content
SweepMetrics = Mapping[SweptRun, Mapping[str, dict]]


def false_positive_rate(cases: Sequence[dict]) -> dict[str, Any]:
    """Share of reference-empty cases (run-tagged ids when runs are pooled) with a predicted
    foreground, per run and with the image-level exact interval."""
    empty = [case for case in cases if case["labels"][FOREGROUND]["ref_empty"]]
    return flag_rate([case["case"] for case in empty], [case["labels"][FOREGROUND]["false_positive"] for case in empty])


def mean_dice(cases: Sequence[dict]) -> Optional[float]:
    scores = [case["labels"][FOREGROUND]["dice"] for case in cases if not case["labels"][FOREGROUND]["ref_empty"]]
    return statistics.fmean(scores) if scores else None


def pooled(runs: Sequence[SweptRun], metrics: SweepMetrics, condition: str) -> dict:
    """The runs' evaluations of ``condition`` as one for ``compare``, case ids tagged with the run:
    case i of one trainer's run pairs with case i of the baseline's run of the same key."""
    first = metrics[runs[0]][condition]
    cases, missing = [], []
    for run in runs:
        evaluation = metrics[run][condition]
        cases += [{**case, "case": case["case"] + run.tag} for case in evaluation["cases"]]
        missing += [case + run.tag for case in evaluation["missing_predictions"]]
    return {**first, "cases": cases, "missing_predictions": missing, "n_reference_cases": len(cases)}


def _compared(comparison: dict[str, Any], out: Path) -> dict[str, Any]:
    overall = comparison["overall"][FOREGROUND]
    return {"n_cases_compared": comparison["n_cases_compared"], "dice": overall["dice"],
            "false_positive": overall["false_positive"],
            "per_class": {cls: {key: stats[FOREGROUND].get(key) for key in ("dice", "false_positive")}
                          for cls, stats in comparison["per_class"].items()},
            "comparison_dir": str(out)}


def _paired_dice(baseline: dict, other: dict) -> tuple[list[str], list, list]:
    """(case ids, baseline Dice, other Dice) of the cases of both whose reference has foreground."""
    base = {case["case"]: case for case in baseline["cases"]}
    scored = [(case["case"], base[case["case"]]["labels"][FOREGROUND]["dice"], case["labels"][FOREGROUND]["dice"])
              for case in other["cases"] if case["case"] in base and not case["labels"][FOREGROUND]["ref_empty"]]
    return [c for c, _, _ in scored], [a for _, a, _ in scored], [b for _, _, b in scored]


def _per_trainer(trainer: str, runs: Sequence[SweptRun], metrics: SweepMetrics, names: list[str],
                 comparisons: Path) -> dict[str, Any]:
    from pu_nnunet.evaluation import compare_evaluations

    dice = {name: [mean_dice(metrics[run][name]["cases"]) for run in runs] for name in names}
    entry = {}
    for name in names:
        evaluation = pooled(runs, metrics, name)
        row = {"n_runs": len(runs), "dice": spread(dice[name]), "dice_per_run": dice[name],
               "false_positive_rate": false_positive_rate(evaluation["cases"])}
        row["dice_mean"] = row["dice"]["mean"]
        if name != CLEAN:
            row["change_from_clean"] = spread([d - c for d, c in zip(dice[name], dice[CLEAN])
                                               if d is not None and c is not None])
            out = comparisons / trainer / f"{name}_vs_{CLEAN}"
            row["vs_clean"] = _compared(compare_evaluations(pooled(runs, metrics, CLEAN), evaluation, out,
                                                            names=(CLEAN, name), overwrite=True, plots=False), out)
        entry[name] = row
    return entry


def _paired(trainers: list[str], runs_of: dict[str, list[SweptRun]], metrics: SweepMetrics, names: list[str],
            baseline: str, comparisons: Path, mid: float, margin: float) -> dict[str, Any]:
    from pu_nnunet.evaluation import compare_evaluations

    baseline_runs = {run.key: run for run in runs_of[baseline]}
    result: dict[str, Any] = {}
    for trainer in trainers:
        pairs = [(baseline_runs[run.key], run) for run in runs_of[trainer] if run.key in baseline_runs]
        if trainer == baseline or not pairs:
            continue
        result[trainer] = {}
        for name in names:
            scores = {run.run_id: _paired_dice(metrics[base][name], metrics[run][name]) for base, run in pairs}
            out = comparisons / f"{trainer}_vs_{baseline}" / name
            comparison = compare_evaluations(pooled([a for a, _ in pairs], metrics, name),
                                             pooled([b for _, b in pairs], metrics, name), out,
                                             names=(baseline, trainer), overwrite=True, plots=False)
            result[trainer][name] = {"run_level": run_level_difference(scores, margin),
                                     "pooled": _compared(comparison, out)}
    # one family: Holm runs over every trainer and condition of the table
    add_family_results([entry["run_level"] for by_name in result.values() for entry in by_name.values()], mid)
    return result


def summarize(runs: Sequence[SweptRun], conditions: Sequence[Condition], metrics: SweepMetrics,
              baseline: Optional[str], comparisons: Path, mid: float = DEFAULT_MID,
              margin: float = DEFAULT_EQUIVALENCE_MARGIN) -> dict[str, Any]:
    """Per trainer (in the runs' order) and condition, and per trainer against ``baseline`` (none
    when None or not swept); ``compare``'s folders under ``comparisons``: ``<trainer>/<condition>_vs_clean``
    and ``<trainer>_vs_<baseline>/<condition>``. ``mid`` and ``margin``: the run-level power plan's
    minimal important difference and the equivalence margin."""
    trainers = list(dict.fromkeys(run.trainer for run in runs))
    runs_of = {trainer: sorted((run for run in runs if run.trainer == trainer), key=lambda run: run.key)
               for trainer in trainers}
    names = [condition.name for condition in conditions]
    return {"trainers": trainers, "baseline": baseline,
            "runs": {trainer: [run.name for run in runs_of[trainer]] for trainer in trainers},
            "conditions": [{"name": c.name, "corruption": c.corruption, "strength": c.strength} for c in conditions],
            "per_trainer": {trainer: _per_trainer(trainer, runs_of[trainer], metrics, names, comparisons)
                            for trainer in trainers},
            "paired": (_paired(trainers, runs_of, metrics, names, baseline, comparisons, mid, margin)
                       if baseline in trainers else {})}


def _change(entry: Mapping[str, Any]) -> str:
    change = entry.get("change_from_clean")
    if change is None:
        return "-"
    return "n/a" if change["mean"] is None else signed(change["mean"]) + (
        "" if change["sd"] is None else f" ± {number(change['sd'])}")


def _pooled_change(entry: Mapping[str, Any]) -> str:
    dice = (entry.get("vs_clean") or {}).get("dice")
    if dice is None:
        return "-"
    return f"{signed(dice['mean_difference'])} {interval(dice['ci_low'], dice['ci_high'])}"


PER_TRAINER_METHOD = (
    "Dice: foreground Dice of each run (mean over its cases whose reference has foreground), mean ± sd over runs; "
    "change: each run's Dice minus its clean Dice, mean ± sd over runs, and the pooled runs' change with "
    f"`compare`'s paired bootstrap {CONFIDENCE_LEVEL:.0%} CI (optimistic with several runs: a case appears once per "
    "run); FPR: reference-empty case-runs with predicted foreground (k/n), with an exact (Clopper-Pearson) "
    f"{CONFIDENCE_LEVEL:.0%} interval whose sample is the images, not the image-runs.")


def per_trainer_lines(summary: Mapping[str, Any], short_name: Callable[[str], str] = str) -> list[str]:
    """The per-trainer table (its method sentence first), one row per trainer and condition."""
    rows = [[short_name(trainer), name, entry["n_runs"], mean_sd(entry["dice"]), _change(entry),
             _pooled_change(entry), rate_text(entry["false_positive_rate"])]
            for trainer, by_condition in summary["per_trainer"].items() for name, entry in by_condition.items()]
    return [PER_TRAINER_METHOD, "",
            table(["trainer", "condition", "runs", "Dice fg", "change from clean (runs)",
                   f"change, pooled [{CONFIDENCE_LEVEL:.0%} bootstrap CI]", "FPR fg (k/n) [95% CI]"], rows), ""]


def paired_lines(summary: Mapping[str, Any], short_name: Callable[[str], str] = str) -> list[str]:
    """The table against the baseline (its method sentence first); nothing without a baseline."""
    if not summary["paired"]:
        return []
    margin = next((entry["run_level"]["margin"] for by_name in summary["paired"].values()
                   for entry in by_name.values()), DEFAULT_EQUIVALENCE_MARGIN)
    lines = [f"Against the baseline {short_name(summary['baseline'])}, per condition (trainer - baseline, runs paired: "
             "same fold and repeat in a study, repeat k of each NAME in `pu-nnunet robustness`): run-level, one difference of mean Dice per paired run, its "
             f"{RUN_CONFIDENCE:.0%} t-interval (new runs on these images; shown from {MIN_RUNS_FOR_INTERVAL} paired "
             "runs up), the sign-flip p (Holm over this table) and the conclusion (different / equivalent within "
             f"±{margin:g} by TOST / inconclusive; not tested with one run); pooled cases, `compare`'s paired "
             f"bootstrap {CONFIDENCE_LEVEL:.0%} CI (optimistic with several runs: a case appears once per run); false "
             "positives of each on the reference-empty case-runs: McNemar's exact p with one run, with several the "
             "images are the sample (a sign-flip test over images) and McNemar holds within each run.", ""]
    rows = []
    for trainer, by_condition in summary["paired"].items():
        for name, entry in by_condition.items():
            runs, pooled_entry = entry["run_level"], entry["pooled"]
            dice, fp = pooled_entry["dice"], pooled_entry["false_positive"]
            rows.append([short_name(trainer), name, runs["n_runs"], signed(runs["mean_difference"]),
                         interval(runs["t_low"], runs["t_high"]),
                         f"{sign_flip(runs)} ({p_value(runs.get('sign_flip_p_holm'))})", runs.get("conclusion", "n/a"),
                         dice["n"], signed(dice["mean_difference"]), interval(dice["ci_low"], dice["ci_high"]),
                         f"{fp['cases_a']}/{fp['n']}", f"{fp['cases_b']}/{fp['n']}", *paired_flag_cells(fp)[1:]])
    return lines + [table(["trainer", "condition", "paired runs", "Δ Dice (runs)", f"{RUN_CONFIDENCE:.0%} t-interval",
                           "sign-flip p (Holm)", "conclusion", "cases", "Δ Dice (pooled)",
                           f"{CONFIDENCE_LEVEL:.0%} bootstrap CI", "FP baseline", "FP trainer",
                           *PAIRED_FLAG_HEADER[1:]], rows), ""]


def plot_dice_vs_strength(summary: Mapping[str, Any], path: Path, label: Callable[[str], str] = str) -> None:
    """Mean foreground Dice against strength, one line per trainer (``label`` names it), each
    run's value as a dot beside the line when a trainer has several runs; dotted: clean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corruptions = list(dict.fromkeys(c["corruption"] for c in summary["conditions"] if c["corruption"]))
    figure, axes = plt.subplots(1, max(1, len(corruptions)), figsize=(max(4.8, 3.2 * len(corruptions)), 3.2),
                                squeeze=False)
    for axis, corruption in zip(axes[0], corruptions):
        points = [c for c in summary["conditions"] if c["corruption"] == corruption]
        for index, name in enumerate(summary["trainers"]):
            entries = summary["per_trainer"][name]
            colour = f"C{index}"
            # no Dice (no case with a reference foreground) is a gap in the line
            dice = [float("nan") if entries[c["name"]]["dice_mean"] is None else entries[c["name"]]["dice_mean"]
                    for c in points]
            axis.plot([c["strength"] for c in points], dice, "o-", color=colour, label=label(name))
            runs = [(c["strength"], value) for c in points
                    for value in entries[c["name"]].get("dice_per_run") or [] if value is not None]
            if len(runs) > len(points):  # several runs: their spread
                axis.scatter(*zip(*runs), color=colour, s=10, alpha=0.4)
            if entries[CLEAN]["dice_mean"] is not None:
                axis.axhline(entries[CLEAN]["dice_mean"], color=colour, linestyle=":", linewidth=1)
        if corruption == "poisson":
            axis.set_xscale("log")
            axis.invert_xaxis()  # fewer photons = stronger noise, to the right
        axis.set_title(corruption)
        axis.set_xlabel("strength")
        axis.set_ylabel("foreground Dice")
    axes[0][0].legend(fontsize="small")
    figure.suptitle("Dice under corruption (dotted: clean; dots: runs)", fontsize="medium")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
