"""Summary, report and plot of a robustness sweep.

Per trainer and condition (runs of one trainer pooled, case ids tagged with the repeat): the
mean foreground Dice over cases with a non-empty reference, its change from the clean
prediction of the same model (``compare``: paired bootstrap CI, Wilcoxon), and the image-level
false-positive rate on reference-empty cases (e.g. normal images) with an exact (Clopper-Pearson)
95 % interval whose sample is the images, not the image-runs
(:func:`pu_nnunet.evaluation.metrics.flag_rates.flag_rate`). Per trainer against the baseline and
condition: ``compare`` of the pooled runs, repeat k paired with repeat k (false positives: McNemar
per run and a sign-flip test over images across runs).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.flag_rates import PAIRED_FLAG_HEADER, flag_rate, paired_flag_cells, rate_text
from pu_nnunet.evaluation.report.markdown import number, p_value, table
from pu_nnunet.robustness.sweep import CLEAN, COMPARISONS_DIR, Condition, ModelRun, pooled

RESULT_FORMAT = "pu-nnunet-robustness/1"
PLOT_FILE = "dice_vs_strength.png"


def false_positive_rate(cases: Sequence[dict]) -> dict[str, Any]:
    """Share of reference-empty cases (run-tagged ids when runs are pooled) with a predicted
    foreground, per run and with the image-level exact interval."""
    empty = [case for case in cases if case["labels"][FOREGROUND]["ref_empty"]]
    return flag_rate([case["case"] for case in empty], [case["labels"][FOREGROUND]["false_positive"] for case in empty])


def mean_dice(cases: Sequence[dict]) -> float | None:
    scores = [case["labels"][FOREGROUND]["dice"] for case in cases if not case["labels"][FOREGROUND]["ref_empty"]]
    return statistics.fmean(scores) if scores else None


def summarize(models: Sequence[ModelRun], conditions: Sequence[Condition], metrics: dict[str, dict[str, dict]],
              baseline: str | None, out: Path) -> dict[str, Any]:
    from pu_nnunet.evaluation import compare_evaluations

    names = list(dict.fromkeys(m.name for m in models))
    runs_of = {name: [m for m in models if m.name == name] for name in names}

    def pooled_of(name: str, condition: str) -> dict:
        return pooled([(m, metrics[m.label][condition]) for m in runs_of[name]])

    per_trainer: dict[str, dict] = {}
    for name in names:
        entry = {}
        for condition in conditions:
            evaluation = pooled_of(name, condition.name)
            row = {"dice_mean": mean_dice(evaluation["cases"]),
                   "dice_per_run": [mean_dice(metrics[m.label][condition.name]["cases"]) for m in runs_of[name]],
                   "false_positive_rate": false_positive_rate(evaluation["cases"])}
            if condition.corruption is not None:
                comparison = compare_evaluations(pooled_of(name, CLEAN), evaluation,
                                                 out / COMPARISONS_DIR / name / f"{condition.name}_vs_clean",
                                                 names=(CLEAN, condition.name), overwrite=True, plots=False)
                row["vs_clean"] = comparison["overall"][FOREGROUND]
            entry[condition.name] = row
        per_trainer[name] = entry
    paired: dict[str, dict] = {}
    if baseline is not None:
        for name in names:
            if name == baseline:
                continue
            paired[name] = {}
            for condition in conditions:
                comparison = compare_evaluations(
                    pooled_of(baseline, condition.name), pooled_of(name, condition.name),
                    out / COMPARISONS_DIR / f"{name}_vs_{baseline}" / condition.name, names=(baseline, name),
                    overwrite=True, plots=False)
                paired[name][condition.name] = {"overall": comparison["overall"][FOREGROUND],
                                                "per_class": {cls: stats[FOREGROUND] for cls, stats
                                                              in comparison["per_class"].items()},
                                                "n_cases_compared": comparison["n_cases_compared"]}
    return {"format": RESULT_FORMAT, "trainers": names, "baseline": baseline,
            "runs": {name: [str(m.folder) for m in runs_of[name]] for name in names},
            "conditions": [{"name": c.name, "corruption": c.corruption, "strength": c.strength} for c in conditions],
            "per_trainer": per_trainer, "paired": paired}


def _interval(low: float | None, high: float | None) -> str:
    return "n/a" if low is None else f"[{low:+.4f}, {high:+.4f}]"


def report_markdown(summary: dict[str, Any], settings: dict[str, Any], provenance_lines: list[str]) -> str:
    names, conditions = summary["trainers"], [c["name"] for c in summary["conditions"]]
    lines = ["# Robustness under image corruptions", "",
             f"Models: " + "; ".join(f"{name} ({len(summary['runs'][name])} run(s))" for name in names)
             + f". Held-out images: `{settings['images']}`; seed {settings['seed']}; mirroring "
             f"{'on' if settings['mirroring'] else 'off'}; intensity model `{settings['intensity_model']}`.", "",
             "## Per trainer", "",
             "Dice: mean foreground Dice over cases with a non-empty reference, runs pooled; change from the "
             "clean prediction of the same models with its paired bootstrap 95 % CI. FPR: share of "
             "reference-empty image-runs with any predicted foreground, with an exact 95 % interval whose sample "
             "is the images (it holds whatever the correlation between the runs of an image).", ""]
    header = ["condition"]
    for name in names:
        header += [f"{name} Dice", f"{name} change [CI]", f"{name} FPR (k/n) [CI]"]
    rows = []
    for condition in conditions:
        row = [condition]
        for name in names:
            entry = summary["per_trainer"][name][condition]
            change = entry.get("vs_clean", {}).get("dice")
            row += [number(entry["dice_mean"]),
                    "-" if change is None else f"{change['mean_difference']:+.4f} "
                                               f"{_interval(change['ci_low'], change['ci_high'])}",
                    rate_text(entry["false_positive_rate"])]
        rows.append(row)
    lines += [table(header, rows), ""]
    for name, by_condition in summary["paired"].items():
        baseline = summary["baseline"]
        lines += [f"## {name} - {baseline}, paired (repeat k with repeat k)", "",
                  "Dice difference with its paired bootstrap 95 % CI and Wilcoxon p; false-positive cases of "
                  "each on the reference-empty cases: McNemar's exact p with one run; with several, the images "
                  "are the sample (a sign-flip test over images of the difference in flagged runs) and McNemar "
                  "holds within each run.", ""]
        rows = []
        for condition in conditions:
            overall = by_condition[condition]["overall"]
            dice, fp = overall["dice"], overall["false_positive"]
            rows.append([condition, dice["n"], number(dice["mean_difference"]),
                         _interval(dice["ci_low"], dice["ci_high"]), p_value(dice["wilcoxon_p"]),
                         f"{fp['cases_a']}/{fp['n']}", f"{fp['cases_b']}/{fp['n']}", *paired_flag_cells(fp)[1:]])
        lines += [table(["condition", "cases", "Dice diff", "95 % CI", "Wilcoxon p", f"FP {baseline}",
                         f"FP {name}", *PAIRED_FLAG_HEADER[1:]], rows), ""]
    lines += ["## Corruptions", "", settings["corruption_notes"], "", f"![Dice vs strength](plots/{PLOT_FILE})", "",
              "## Provenance", "", *provenance_lines, ""]
    return "\n".join(lines)


def plot_dice_vs_strength(summary: dict[str, Any], path: Path, label: Callable[[str], str] = str) -> None:
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
