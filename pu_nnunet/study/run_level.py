"""The study report's run-level analysis: trainer against baseline, one difference per paired run.

Runs are paired by fold and repeat. Per trainer and label (and the foreground), the per-case
Dice of the cases whose reference has the label gives each paired run a difference of mean
Dice; :func:`pu_nnunet.evaluation.metrics.run_stats.run_level_difference` turns those into the
mean and sd, a hierarchical bootstrap CI, the exact sign-flip test and the runs needed. Holm's
adjustment runs over every exact test of the report (all labels and trainers). The pairs come
from the runs' metrics.json (:func:`pairs_from_evaluations`) or, for a study folder kept without
its runs, from compare's per_case_paired.csv (:func:`pairs_from_paired_csv`).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.run_stats import (ALPHA, MIN_RUNS_FOR_EXACT_TEST, RUN_BOOTSTRAP_RESAMPLES,
                                                    RUN_BOOTSTRAP_SEED, RUN_CONFIDENCE, TARGET_POWER, holm,
                                                    run_level_difference)
from pu_nnunet.evaluation.report.markdown import number, p_value, table

# trainer -> label key -> run id -> (baseline scores, trainer scores), cases in the same order
RunPairs = dict[str, dict[str, dict[str, tuple[list[float], list[float]]]]]
# case ids of the study's pooled comparisons: "case|fold_F|repeat_R"
_POOLED_CASE = re.compile(r"(?P<case>.+)\|fold_(?P<fold>\d+)\|repeat_(?P<repeat>\d+)")


def run_id(fold: int, repeat: int) -> str:
    return f"fold {fold}, repeat {repeat}"


def pairs_from_evaluations(evaluations: Mapping[Any, dict], baseline: str, trainers: Iterable[str],
                           label_keys: list[str]) -> RunPairs:
    """From finished runs (objects with .trainer, .fold, .repeat -> metrics.json content)."""
    baseline_runs = {(job.fold, job.repeat): job for job in evaluations if job.trainer == baseline}
    pairs: RunPairs = {}
    for trainer in trainers:
        if trainer == baseline:
            continue
        runs = sorted((job for job in evaluations if job.trainer == trainer
                       and (job.fold, job.repeat) in baseline_runs), key=lambda job: (job.repeat, job.fold))
        entry: dict[str, dict[str, tuple[list[float], list[float]]]] = {key: {} for key in label_keys}
        for job in runs:
            base = {c["case"]: c for c in evaluations[baseline_runs[(job.fold, job.repeat)]]["cases"]}
            shared = [c for c in evaluations[job]["cases"] if c["case"] in base]
            for key in label_keys:
                scored = [(base[c["case"]]["labels"][key]["dice"], c["labels"][key]["dice"]) for c in shared
                          if not c["labels"][key]["ref_empty"]]
                entry[key][run_id(job.fold, job.repeat)] = ([a for a, _ in scored], [b for _, b in scored])
        if runs:
            pairs[trainer] = entry
    return pairs


def pairs_from_paired_csv(path: str | Path) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """label key -> run id -> (A scores, B scores) from a study comparison's per_case_paired.csv:
    the cases whose reference has the label (compare writes the false-positive flags only on
    reference-empty cases, so a row with a flag is left out)."""
    pairs: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    order: dict[str, tuple[int, int]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for row in reader:
            values = dict(zip(header, row))
            match = _POOLED_CASE.fullmatch(values["case"])
            dice_a, dice_b, flag_a, flag_b = row[3], row[4], row[6], row[7]
            if match is None or dice_a == "" or dice_b == "" or flag_a != "" or flag_b != "":
                continue
            run = run_id(int(match["fold"]), int(match["repeat"]))
            order[run] = (int(match["repeat"]), int(match["fold"]))
            a, b = pairs.setdefault(values["label"], {}).setdefault(run, ([], []))
            a.append(float(dice_a))
            b.append(float(dice_b))
    # runs in the order pairs_from_evaluations gives them (repeat, then fold)
    return {key: dict(sorted(runs.items(), key=lambda item: order[item[0]])) for key, runs in pairs.items()}


def run_level_analysis(pairs: RunPairs, resamples: int = RUN_BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """trainer -> label key -> run_level_difference, with Holm-adjusted p over all of them."""
    result = {trainer: {key: run_level_difference(runs, resamples) for key, runs in by_key.items()}
              for trainer, by_key in pairs.items()}
    entries = [entry for by_key in result.values() for entry in by_key.values()]
    for entry, adjusted in zip(entries, holm([entry["exact_p"] for entry in entries])):
        entry["exact_p_holm"] = adjusted
    return result


def verdict(trainer_name: str, baseline_name: str, entry: dict[str, Any]) -> str:
    """One sentence: is the foreground difference beyond the between-run noise, and how many
    paired runs would show it."""
    n, difference = entry["n_runs"], entry["mean_difference"]
    if difference is None:
        return f"{trainer_name}: no paired run with the baseline."
    head = f"{trainer_name} - {baseline_name}: foreground Dice {difference:+.4f} over {n} paired run(s)"
    if entry["sd"] is not None:
        head += (f" (sd {number(entry['sd'])}, {RUN_CONFIDENCE:.0%} hierarchical CI "
                 f"[{entry['ci_low']:+.4f}, {entry['ci_high']:+.4f}])")
    if entry["exact_p_holm"] is not None:
        beyond = entry["exact_p_holm"] < ALPHA
        head += (f" is {'beyond' if beyond else 'within'} the between-run noise (exact sign-flip p "
                 f"{p_value(entry['exact_p'])}, Holm {p_value(entry['exact_p_holm'])})")
    else:
        where = ("" if entry["ci_low"] is None else
                 f"; its CI {'excludes' if entry['ci_low'] > 0 or entry['ci_high'] < 0 else 'includes'} 0, but")
        head += (f"{where} {n} paired run(s) are too few for an exact test to reach p < {ALPHA} (it needs "
                 f"{MIN_RUNS_FOR_EXACT_TEST}), so it is not shown to be beyond the between-run noise")
    needed = entry["runs_needed"]
    if needed is not None:
        head += f"; about {needed} paired runs would detect a difference this size ({TARGET_POWER:.0%} power)"
    elif entry["sd"] is not None:
        head += "; no feasible number of runs would detect it"
    return head + "."


def markdown(analysis: dict[str, Any], baseline: str, label_names: Mapping[str, str], short_name) -> list[str]:
    """The report section: one sentence per trainer, the run-level table, per-run differences."""
    if not analysis:
        return []
    lines = ["## Run-level differences against the baseline", "",
             "One difference of mean Dice per paired run (same fold and repeat; cases whose reference has the "
             f"label); mean and sd over runs; {RUN_CONFIDENCE:.0%} CI from a hierarchical bootstrap (runs resampled, "
             f"then cases within each run; {RUN_BOOTSTRAP_RESAMPLES} resamples, seed {RUN_BOOTSTRAP_SEED}); exact "
             f"two-sided sign-flip test on the run differences (from {MIN_RUNS_FOR_EXACT_TEST} paired runs), Holm-"
             "adjusted over every label and trainer below; runs needed: paired runs for a two-sided paired t-test at "
             f"{ALPHA} to detect the observed difference with {TARGET_POWER:.0%} power given the sd.", ""]
    for trainer, by_key in analysis.items():
        if FOREGROUND in by_key:
            lines.append("- " + verdict(short_name(trainer), short_name(baseline), by_key[FOREGROUND]))
    lines.append("")
    rows = []
    for trainer, by_key in analysis.items():
        for key, e in by_key.items():
            ci = "n/a" if e["ci_low"] is None else f"[{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"
            rows.append([short_name(trainer), label_names.get(key, key), e["n_runs"],
                         "n/a" if e["mean_difference"] is None else f"{e['mean_difference']:+.4f}",
                         number(e["sd"]), ci, p_value(e["exact_p"]), p_value(e["exact_p_holm"]),
                         "n/a" if e["runs_needed"] is None else e["runs_needed"]])
    lines += [table(["trainer", "label", "paired runs", "Δ Dice (mean)", "sd over runs",
                     f"{RUN_CONFIDENCE:.0%} hierarchical CI", "exact p", "Holm p", "runs needed"], rows), ""]
    rows = []
    for trainer, by_key in analysis.items():
        for run in by_key.get(FOREGROUND, {}).get("runs", []):
            rows.append([short_name(trainer), run["run"], run["n_cases"], number(run["mean_a"]),
                         number(run["mean_b"]), f"{run['difference']:+.4f}"])
    if rows:
        lines += ["Foreground Dice of each paired run:", "",
                  table(["trainer", "run", "cases", f"{short_name(baseline)}", "trainer", "Δ"], rows), ""]
    return lines
