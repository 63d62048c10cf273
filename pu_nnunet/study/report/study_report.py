"""The study report: ``STUDY_DIR/report.md``, ``summary.json`` and ``plots/``.

Per trainer, the spread over runs (folds x repeats) of each run's evaluate aggregates; per
trainer against the baseline, ``compare_evaluations`` on the runs pooled over folds and repeats
(case ids become ``case|fold_F|repeat_R``, so case i of a baseline run pairs with case i of the
same fold and repeat of the other trainer), with Holm-adjusted p-values over labels and trainers;
then the run-level analysis of :mod:`pu_nnunet.study.report.run_level` (one difference per paired run,
t-interval and two-way bootstrap, sign-flip test, equivalence, power), the four Dice protocols per trainer beside the
published numbers, the Robustness section when jobs have robustness sweeps
(:mod:`pu_nnunet.robustness.study_report`), and the run record (provenance.json). Rebuilt from the finished runs at any
time (``study report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pu_nnunet.evaluation.compare import load_evaluation
from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND, aggregate_cases
from pu_nnunet.evaluation.metrics.flag_rates import (PAIRED_FLAG_HEADER, flag_rate, paired_flag_cells, rate_text,
                                                    split_run_tag)
from pu_nnunet.evaluation.metrics.protocols import DICE_PROTOCOLS
from pu_nnunet.evaluation.metrics.run_stats import holm, spread
from pu_nnunet.evaluation.published import PUBLISHED, PUBLISHED_NORMAL_FPR_DIFFERENCE, published_for
from pu_nnunet.evaluation.report.markdown import mean_sd, number, p_value, table
from pu_nnunet.user_files import atomic_write_path
from pu_nnunet.provenance import RUN_RECORD_FILE, run_record, short_form
from pu_nnunet.robustness import study_report as robustness_report
from pu_nnunet.study.report import convergence_section, operating_points_section, run_level
from pu_nnunet.study.report.protocol_section import protocol_section, published_fpr_section
from pu_nnunet.study.report.run_pooling import pooled_evaluation as _pooled_evaluation
from pu_nnunet.study.jobs import DONE, Job, finished_metrics, job_states
from pu_nnunet.json_files import write_json
from pu_nnunet.study.spec import Study

REPORT_FILE, SUMMARY_FILE, PLOTS_DIR, COMPARISONS_DIR = "report.md", "summary.json", "plots", "comparisons"
SUMMARY_FORMAT = "pu-nnunet-study-summary/1"
__all__ = ["PUBLISHED", "write_study_report"]  # PUBLISHED: where it was read from before published.py


def short_name(trainer: str) -> str:
    return trainer[len("nnUNetTrainer"):] if trainer.startswith("nnUNetTrainer") and trainer != "nnUNetTrainer" \
        else trainer


def _finished_runs(study: Study) -> tuple[dict[Job, dict], dict[Job, dict], list[str]]:
    evaluations, states, missing = {}, {}, []
    for job, state in job_states(study):
        metrics = finished_metrics(study.study_dir, job, state)
        if metrics is not None:
            evaluations[job] = load_evaluation(metrics)[0]
            states[job] = {**state, "evaluation": str(metrics.parent)}
        else:
            shown = "evaluation missing" if state["state"] == DONE else state["state"]
            missing.append(f"{job.name} ({shown})")
    return evaluations, states, missing


def _per_trainer(study: Study, evaluations: dict[Job, dict], states: dict[Job, dict],
                 label_keys: list[str]) -> dict[str, Any]:
    result = {}
    for trainer in study.trainers:
        runs = [job for job in evaluations if job.trainer == trainer]
        entry: dict[str, Any] = {"n_runs": len(runs), "runs": [job.name for job in runs],
                                 "train_s": spread([states[job].get("train_s") for job in runs])}
        # the runs' cases with run-tagged ids: flags clustered by image, never pooled as independent
        cases = _pooled_evaluation(evaluations, runs)["cases"] if runs else []
        for key in label_keys:
            aggregates = [evaluations[job]["aggregates"][key] for job in runs]
            empty = [c for c in cases if c["labels"][key]["ref_empty"]]
            entry[key] = {"dice": spread([a["dice_mean"] for a in aggregates]),
                          "iou": spread([a["iou_mean"] for a in aggregates]),
                          "fpr": spread([a["false_positive_rate"] for a in aggregates]),
                          "fpr_images": flag_rate([c["case"] for c in empty],
                                                  [c["labels"][key]["false_positive"] for c in empty])}
        # each label on the cases that lack it, over labels and runs: the (case, label) pairs are the sample
        organ = [(case, key) for key in label_keys if key != FOREGROUND for case in cases
                 if case["labels"][key]["ref_empty"]]
        entry["per_label_fpr_images"] = flag_rate([_with_label(case["case"], key) for case, key in organ],
                                                  [case["labels"][key]["false_positive"] for case, key in organ])
        by_class = {}
        for job in runs:
            for name, aggregates in evaluations[job].get("per_class", {}).items():
                by_class.setdefault(name, []).append(aggregates[FOREGROUND]["false_positive_rate"])
        entry["per_class_foreground_fpr"] = {name: spread(values) for name, values in by_class.items()}
        # every protocol from the per-case records, so that runs evaluated by older versions count too
        protocols = [aggregate_cases(evaluations[job]["cases"], label_keys) for job in runs]
        entry["dice_protocols"] = {key: {name: spread([p[key]["dice_protocols"][name] for p in protocols])
                                         for name in DICE_PROTOCOLS} for key in label_keys}
        result[trainer] = entry
    return result


def _paired(study: Study, evaluations: dict[Job, dict]) -> dict[str, Any]:
    from pu_nnunet.evaluation import compare_evaluations

    if study.baseline is None:
        return {}
    result = {}
    baseline_runs = {(job.fold, job.repeat): job for job in evaluations if job.trainer == study.baseline}
    for trainer in study.trainers:
        if trainer == study.baseline:
            continue
        pairs = sorted(((baseline_runs[(job.fold, job.repeat)], job) for job in evaluations
                        if job.trainer == trainer and (job.fold, job.repeat) in baseline_runs),
                       key=lambda pair: (pair[1].repeat, pair[1].fold))
        if not pairs:
            continue
        out = study.study_dir / COMPARISONS_DIR / f"{short_name(trainer)}_vs_{short_name(study.baseline)}"
        comparison = compare_evaluations(_pooled_evaluation(evaluations, [a for a, _ in pairs]),
                                         _pooled_evaluation(evaluations, [b for _, b in pairs]), out,
                                         names=(short_name(study.baseline), short_name(trainer)), overwrite=True)
        result[trainer] = {"baseline": study.baseline, "runs_paired": [b.name for _, b in pairs],
                           "folds": sorted({b.fold for _, b in pairs}), "repeats": sorted({b.repeat for _, b in pairs}),
                           "comparison_dir": str(out), "n_cases_compared": comparison["n_cases_compared"],
                           "overall": comparison["overall"], "per_class": comparison["per_class"]}
    dice_tests = [stats["dice"] for paired in result.values() for stats in paired["overall"].values()]
    for stats, adjusted in zip(dice_tests, holm([stats["wilcoxon_p"] for stats in dice_tests])):
        stats["wilcoxon_p_holm"] = adjusted
    return result


def _run_level(study: Study, evaluations: dict[Job, dict], label_keys: list[str], metric: str,
               mid: Optional[float] = None, margin: Optional[float] = None) -> dict[str, Any]:
    if not study.baseline:
        return {}
    pairs = run_level.pairs_from_evaluations(evaluations, study.baseline, study.trainers, label_keys, metric)
    if not pairs:
        return {}
    return run_level.run_level_analysis(pairs, study.mid if mid is None else mid,
                                        study.equivalence_margin if margin is None else margin)


def _with_label(case_id: str, key: str) -> str:
    """'case|fold_F|repeat_R' -> 'case#label|fold_F|repeat_R': one sampled unit per case and label."""
    image, run = split_run_tag(case_id)
    return f"{image}#{key}" + ("" if run is None else f"|{run}")


def _published(study: Study) -> Optional[dict[str, Any]]:
    return published_for(study.dataset_folder_name())


def _seconds(spread: dict[str, Any]) -> str:
    if not spread["n"]:
        return "-"
    return f"{spread['mean']:.0f}" + ("" if spread["sd"] is None else f" ± {spread['sd']:.0f}")


def summary_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The headline table: per trainer, foreground Dice/IoU over runs and the case-level FPRs."""
    rows = []
    for trainer, entry in summary["per_trainer"].items():
        paired = summary["paired"].get(trainer)
        dice = paired["overall"][FOREGROUND]["dice"] if paired else None
        difference = "baseline" if trainer == summary["study"]["baseline"] else (
            "n/a" if dice is None or dice["mean_difference"] is None else
            f"{dice['mean_difference']:+.4f} [{dice['ci_low']:+.4f}, {dice['ci_high']:+.4f}] "
            f"p={p_value(dice['wilcoxon_p'])} W/T/L {dice['b_better']}/{dice['ties']}/{dice['a_better']}")
        rows.append([short_name(trainer), str(entry["n_runs"]), mean_sd(entry[FOREGROUND]["dice"]),
                     mean_sd(entry[FOREGROUND]["iou"]), rate_text(entry[FOREGROUND]["fpr_images"]),
                     rate_text(entry["per_label_fpr_images"]), difference])
    return rows


SUMMARY_HEADER = ["trainer", "runs", "Dice fg (mean ± sd over runs)", "IoU fg", "FPR fg (empty cases) [95% CI]",
                  "FPR per label (cases lacking it) [95% CI]", "Δ Dice fg vs baseline, 95% CI, Wilcoxon, W/T/L"]


def _paired_section(summary: dict[str, Any]) -> list[str]:
    lines = []
    for trainer, paired in summary["paired"].items():
        names = summary["label_names"]
        lines += [f"### {short_name(trainer)} - {short_name(paired['baseline'])}",
                  f"{paired['n_cases_compared']} paired case results (folds {paired['folds']}, repeats "
                  f"{paired['repeats']}); comparison report: `{Path(paired['comparison_dir']).relative_to(summary['study_dir'])}/report.md`", ""]
        rows = []
        for key, stats in paired["overall"].items():
            for score in ("dice", "iou"):
                s = stats[score]
                if not s["n"]:
                    continue
                holm_p = p_value(s["wilcoxon_p_holm"]) if "wilcoxon_p_holm" in s else "-"
                rows.append([names.get(key, key), score, s["n"], number(s["mean_a"]), number(s["mean_b"]),
                             f"{s['mean_difference']:+.4f}", f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}]",
                             p_value(s["wilcoxon_p"]), holm_p, f"{s['b_better']}/{s['ties']}/{s['a_better']}"])
        lines += [table(["label", "score", "n", short_name(paired["baseline"]), short_name(trainer), "difference",
                         "95% bootstrap CI", "Wilcoxon p", "Holm p (Dice)", "win/tie/loss"], rows), ""]
        rows = []
        for key, stats in paired["overall"].items():
            fp = stats["false_positive"]
            if fp["n"]:
                rows.append([names.get(key, key), f"{number(fp['rate_a'])} ({fp['cases_a']})",
                             f"{number(fp['rate_b'])} ({fp['cases_b']})", *paired_flag_cells(fp)])
        for name, groups in paired["per_class"].items():
            fp = groups[FOREGROUND]["false_positive"]
            if fp["n"]:
                rows.append([f"foreground, class {name}", f"{number(fp['rate_a'])} ({fp['cases_a']})",
                             f"{number(fp['rate_b'])} ({fp['cases_b']})", *paired_flag_cells(fp)])
        if rows:
            lines += ["False positives on cases whose reference lacks the label. The runs score the same cases, so "
                      "the cases are the sample: McNemar's exact test within each run, and across runs a sign-flip "
                      "test over cases of the per-case difference in flagged runs (trainer - baseline).", "",
                      table(["label", f"FPR {short_name(paired['baseline'])} (case-runs)",
                             f"FPR {short_name(trainer)} (case-runs)", *PAIRED_FLAG_HEADER], rows), ""]
        else:
            lines += ["No case lacks a label, so there is no false-positive rate to compare.", ""]
    return lines


def report_markdown(summary: dict[str, Any]) -> str:
    s = summary["study"]
    lines = [f"# Study: {summary['dataset']} ({s['configuration']}, {s['plans']})", "",
             f"Trainers {', '.join(s['trainers'])}; baseline {s['baseline']}; folds {s['folds']}; "
             f"{s['repeats']} repeat(s); held-out cases: "
             + ("imagesTs/labelsTs" if summary["held_out"] == "test" else "each fold's validation cases") + ".",
             f"Finished runs: {summary['n_runs_finished']} of {summary['n_runs_total']}"
             + (f"; missing: {', '.join(summary['missing_runs'])}" if summary["missing_runs"] else "") + ".", "",
             "## Per trainer", "",
             "Mean ± sd over runs (folds x repeats) of each run's mean over held-out cases; FPR: share of cases "
             "whose reference lacks the label where it was predicted, over runs (case-runs flagged / case-runs), "
             "with an exact 95% interval that has the cases, not the case-runs, as its sample (it holds whatever "
             "the correlation between runs of a case; `pu_nnunet.evaluation.metrics.flag_rates`).", "",
             table(SUMMARY_HEADER, summary_rows(summary)), ""]
    names = summary["label_names"]
    rows = [[short_name(t), *[mean_sd(e[key]["dice"]) for key in summary["label_keys"]],
             _seconds(e["train_s"])] for t, e in summary["per_trainer"].items()]
    lines += ["Dice per label (mean ± sd over runs) and training time (s):", "",
              table(["trainer", *[names.get(k, k) for k in summary["label_keys"]], "training s"], rows), ""]
    if summary["paired"]:
        lines += ["## Paired differences against the baseline, pooled over folds and repeats", "",
                  "Each baseline run is paired with the other trainer's run of the same fold and repeat, case by "
                  "case; differences are trainer - baseline (`compare`: seeded paired bootstrap CI of the mean, "
                  "Wilcoxon signed-rank test, win/tie/loss; Holm: the Dice p-values adjusted over every label and "
                  "trainer). The pooled results are not independent (a held-out case appears once per run), so "
                  "the interval and p-value are optimistic; the run-level analysis below respects the runs.", ""]
        lines += _paired_section(summary)
    if summary.get("run_level"):
        lines += run_level.markdown(summary["run_level"], s["baseline"], summary["label_names"], short_name)
    for metric, analysis in (summary.get("run_level_other") or {}).items():
        lines += run_level.markdown(analysis, s["baseline"], summary["label_names"], short_name, metric)
    if summary.get("run_level_fpr"):
        lines += run_level.markdown(summary["run_level_fpr"], s["baseline"], summary["label_names"], short_name,
                                    run_level.FALSE_POSITIVE)
    lines += protocol_section(summary, short_name)
    lines += published_fpr_section(summary, short_name)
    lines += robustness_report.markdown(summary.get("robustness"), summary["held_out"], short_name, PLOTS_DIR)
    lines += operating_points_section.markdown(summary.get("operating_points"), s["baseline"], short_name, PLOTS_DIR)
    lines += convergence_section.markdown(summary.get("convergence"), short_name, PLOTS_DIR)
    lines += ["## Files", "", "- `summary.json`: everything above, as numbers",
              f"- `{PLOTS_DIR}/per_run_dice.png`: foreground Dice of every run"
              + (f"; `{PLOTS_DIR}/{robustness_report.PLOT_FILE}`: Dice under corruption" if summary.get("robustness")
                 else ""),
              f"- `{COMPARISONS_DIR}/*/`: compare's reports, paired tables and plots",
              "- `runs/<job>/evaluation/`: evaluate's report of each run; `jobs/<job>.json`: job states",
              f"- `{RUN_RECORD_FILE}`: code, libraries, command and hashes of dataset.json, plans and split", ""]
    if summary.get("provenance"):
        lines += ["## Provenance", "", *short_form(summary["provenance"]), ""]
    return "\n".join(lines)


def plot_runs(summary: dict[str, Any], runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trainers = list(summary["per_trainer"])
    figure, axis = plt.subplots(figsize=(max(4.0, 1.8 * len(trainers)), 3.6))
    markers = "os^Dv<>"
    for index, trainer in enumerate(trainers):
        for run in (r for r in runs if r["trainer"] == trainer and r["dice"] is not None):
            axis.scatter(index + 0.08 * (run["repeat"] - 1), run["dice"], color=f"C{run['fold'] % 10}",
                         marker=markers[run["repeat"] % len(markers)], s=36, zorder=3)
        mean = summary["per_trainer"][trainer][FOREGROUND]["dice"]["mean"]
        if mean is not None:
            axis.hlines(mean, index - 0.25, index + 0.25, color="black", linewidth=1.5, zorder=2)
    axis.set_xticks(range(len(trainers)), [short_name(t) for t in trainers], rotation=15, fontsize=8)
    axis.set_ylabel("foreground Dice (run mean)")
    axis.set_title("Runs: colour = fold, marker = repeat, bar = mean", fontsize=9)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def study_record(study: Study, evaluations: dict[Job, dict]) -> dict[str, Any]:
    """The report's run record: dataset.json, plans and split of the study, hashed."""
    try:
        raw, preprocessed = study.raw_dataset(), study.preprocessed_dataset()
    except Exception:  # a moved study whose raw data is gone: record what is left
        raw = preprocessed = None
    files = {"dataset.json": raw / "dataset.json" if raw else None,
             "plans": preprocessed / f"{study.plans}.json" if preprocessed else None,
             "split file": preprocessed / "splits_final.json" if preprocessed else None}
    devices = sorted({str(((e.get("provenance") or {}).get("device"))) for e in evaluations.values()})
    return run_record(device=", ".join(devices), files=files)


def write_study_report(study: Study) -> Optional[dict[str, Any]]:
    """Writes report.md, summary.json and plots/ from the finished runs; None when none finished."""
    evaluations, states, missing = _finished_runs(study)
    if not evaluations:
        return None
    first = next(iter(evaluations.values()))
    label_keys = [str(label) for label in first["labels"]] + [FOREGROUND]
    runs = [{"job": job.name, "trainer": job.trainer, "fold": job.fold, "repeat": job.repeat,
             "dice": evaluations[job]["aggregates"][FOREGROUND]["dice_mean"],
             "iou": evaluations[job]["aggregates"][FOREGROUND]["iou_mean"],
             "train_s": states[job].get("train_s"), "evaluation": states[job]["evaluation"]} for job in evaluations]
    summary = {
        "format": SUMMARY_FORMAT,
        "study": study.identity(),
        "study_dir": str(study.study_dir),
        "dataset": study.dataset_folder_name(),
        "held_out": next(iter(states.values())).get("held_out"),
        "label_keys": label_keys,
        "label_names": {**first["label_names"], FOREGROUND: "foreground"},
        "n_runs_total": len(evaluations) + len(missing),
        "n_runs_finished": len(evaluations),
        "missing_runs": missing,
        "runs": runs,
        "per_trainer": _per_trainer(study, evaluations, states, label_keys),
        "paired": _paired(study, evaluations),
        "run_level": _run_level(study, evaluations, label_keys, run_level.DEFAULT_METRIC),
        # the same analysis of the other per-case metrics where the label records hold them (NSD)
        "run_level_other": {metric: analysis for metric in run_level.OTHER_METRICS
                            if (analysis := _run_level(study, evaluations, label_keys, metric))},
        # the FPR difference, powered for and tested against the size PU-UNet reports (0.077 - 0 on
        # BUSI's normal images): is the difference as large as the paper's, or shown to be smaller?
        "run_level_fpr": _run_level(study, evaluations, label_keys, run_level.FALSE_POSITIVE,
                                    mid=PUBLISHED_NORMAL_FPR_DIFFERENCE, margin=PUBLISHED_NORMAL_FPR_DIFFERENCE),
        "planning": {"mid": study.mid, "equivalence_margin": study.equivalence_margin,
                     "fpr_mid_and_margin": PUBLISHED_NORMAL_FPR_DIFFERENCE},
        "published": _published(study),
        "robustness": robustness_report.robustness_summary(study, list(evaluations)),
        "provenance": study_record(study, evaluations),
        "convergence": convergence_section.convergence_summary(study, evaluations),
    }
    operating = operating_points_section.operating_points_summary(study, evaluations, states)
    summary["operating_points"] = operating_points_section.for_summary(operating)
    operating_points_section.plot(operating, study.study_dir / PLOTS_DIR / operating_points_section.PLOT_FILE, short_name)
    convergence_section.plot(summary["convergence"], study.study_dir / PLOTS_DIR / convergence_section.PLOT_FILE,
                             short_name)
    plot_runs(summary, runs, study.study_dir / PLOTS_DIR / "per_run_dice.png")
    if summary["robustness"]:
        robustness_report.plot(summary["robustness"], study.study_dir / PLOTS_DIR / robustness_report.PLOT_FILE,
                               short_name)
    write_json(study.study_dir / SUMMARY_FILE, summary)
    write_json(study.study_dir / RUN_RECORD_FILE, {**summary["provenance"], "runs": {
        job.name: evaluations[job].get("provenance") for job in evaluations}})
    report = study.study_dir / REPORT_FILE
    with atomic_write_path(report) as temporary:
        temporary.write_text(report_markdown(summary), encoding="utf-8")
    return summary
