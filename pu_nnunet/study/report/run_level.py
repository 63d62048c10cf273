"""The study report's run-level analysis: trainer against baseline, one difference per paired run.

Runs are paired by fold and repeat. Per trainer and label (and the foreground), the per-case
score (Dice by default; any per-case metric the label records hold, e.g. NSD) of the cases whose
reference has the label gives each paired run a difference of means;
:func:`pu_nnunet.evaluation.metrics.run_stats.run_level_difference` turns those into the mean and
sd, the t-interval (new runs, this test set), the two-way bootstrap interval (new runs and new
cases), the sign-flip test and TOST against the equivalence margin; Holm's adjustment, the
conclusion and the runs for 80 % power at the minimal important difference run over every test
of the report (all labels and trainers). The pairs come from the runs' metrics.json
(:func:`pairs_from_evaluations`) or, for a study folder kept without its runs, from compare's
per_case_paired.csv (:func:`pairs_from_paired_csv`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable, Mapping

from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.flag_rates import split_run_tag
from pu_nnunet.evaluation.metrics.run_stats import (ALPHA, TARGET_POWER, DEFAULT_EQUIVALENCE_MARGIN, DEFAULT_MID,
                                                    EXACT_SIGN_FLIP_MAX_RUNS, MAX_RUNS_SEARCHED, MIN_RUNS_FOR_INTERVAL,
                                                    RUN_BOOTSTRAP_SEED, RUN_CONFIDENCE, SIGN_FLIP_RESAMPLES,
                                                    SIGN_FLIP_SEED, TWO_WAY_RESAMPLES, DIFFERENT,
                                                    EQUIVALENT, INCONCLUSIVE, NOT_TESTED, add_family_results,
                                                    run_level_difference)
from pu_nnunet.evaluation.report.markdown import interval, number, p_value, sign_flip, signed, table

# run id -> (case ids, baseline scores, trainer scores), cases in the same order
RunScores = dict[str, tuple[list[str], list[float], list[float]]]
# trainer -> label key -> RunScores
RunPairs = dict[str, dict[str, RunScores]]
DEFAULT_METRIC = "dice"
# per-case metrics analysed beside Dice where metrics.json holds them (evaluate's boundary metrics)
OTHER_METRICS = ("nsd",)
# the image-level false-positive rate as a per-case score: 1 where a case whose reference lacks
# the label has it predicted, 0 where not; a run's mean is its FPR, so the same run-level machinery
# (t-interval, two-way bootstrap, sign flip, TOST, power) tests the FPR difference
FALSE_POSITIVE = "false_positive"
METRIC_TITLES = {"dice": "Dice", "nsd": "NSD", "hd95": "HD95",
                 FALSE_POSITIVE: "image-level FPR (reference-empty cases)"}


def run_id(fold: int, repeat: int) -> str:
    return f"fold {fold}, repeat {repeat}"


def _run_of_tag(tag: str) -> tuple[str, tuple[int, int]]:
    """(run id, sort key) of a run tag fold_F|repeat_R."""
    fold, repeat = (int(part.split("_")[1]) for part in tag.split("|"))
    return run_id(fold, repeat), (repeat, fold)


def pairs_from_evaluations(evaluations: Mapping[Any, dict], baseline: str, trainers: Iterable[str],
                           label_keys: list[str], metric: str = DEFAULT_METRIC) -> RunPairs:
    """From finished runs (objects with .trainer, .fold, .repeat -> metrics.json content). Label
    records without ``metric`` (an older metrics.json) are left out; a label none of whose records
    hold it has no entry. ``metric`` :data:`FALSE_POSITIVE` scores the cases whose reference lacks
    the label (1 predicted, 0 not); every other metric the cases whose reference has it."""
    scores_empty_cases = metric == FALSE_POSITIVE
    baseline_runs = {(job.fold, job.repeat): job for job in evaluations if job.trainer == baseline}
    pairs: RunPairs = {}
    for trainer in trainers:
        if trainer == baseline:
            continue
        runs = sorted((job for job in evaluations if job.trainer == trainer
                       and (job.fold, job.repeat) in baseline_runs), key=lambda job: (job.repeat, job.fold))
        entry: dict[str, RunScores] = {}
        for job in runs:
            base = {c["case"]: c for c in evaluations[baseline_runs[(job.fold, job.repeat)]]["cases"]}
            shared = [c for c in evaluations[job]["cases"] if c["case"] in base]
            for key in label_keys:
                scored = [(c["case"], base[c["case"]]["labels"][key][metric], c["labels"][key][metric])
                          for c in shared if c["labels"][key]["ref_empty"] == scores_empty_cases
                          and metric in c["labels"][key] and metric in base[c["case"]]["labels"][key]]
                if scores_empty_cases:
                    scored = [(case, float(a), float(b)) for case, a, b in scored]
                if scored:
                    entry.setdefault(key, {})[run_id(job.fold, job.repeat)] = (
                        [c for c, _, _ in scored], [a for _, a, _ in scored], [b for _, _, b in scored])
        if entry:
            pairs[trainer] = {key: entry[key] for key in label_keys if key in entry}
    return pairs


def pairs_from_paired_csv(path: str | Path) -> dict[str, RunScores]:
    """label key -> run id -> (case ids, A scores, B scores) from a study comparison's
    per_case_paired.csv (its Dice): the cases whose reference has the label (compare writes the
    false-positive flags only on reference-empty cases, so a row with a flag is left out)."""
    pairs: dict[str, RunScores] = {}
    order: dict[str, tuple[int, int]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        for row in reader:
            values = dict(zip(header, row))
            image, tag = split_run_tag(values["case"])
            dice_a, dice_b, flag_a, flag_b = row[3], row[4], row[6], row[7]
            if tag is None or "|" not in tag or dice_a == "" or dice_b == "" or flag_a != "" or flag_b != "":
                continue
            run, order[run] = _run_of_tag(tag)
            cases, a, b = pairs.setdefault(values["label"], {}).setdefault(run, ([], [], []))
            cases.append(image)
            a.append(float(dice_a))
            b.append(float(dice_b))
    # runs in the order pairs_from_evaluations gives them (repeat, then fold)
    return {key: dict(sorted(runs.items(), key=lambda item: order[item[0]])) for key, runs in pairs.items()}


def run_level_analysis(pairs: RunPairs, mid: float = DEFAULT_MID, margin: float = DEFAULT_EQUIVALENCE_MARGIN,
                       resamples: int = TWO_WAY_RESAMPLES) -> dict[str, Any]:
    """trainer -> label key -> run_level_difference, with Holm, the conclusion and the power plan
    over all of them (one family)."""
    result = {trainer: {key: run_level_difference(runs, margin, resamples) for key, runs in by_key.items()}
              for trainer, by_key in pairs.items()}
    add_family_results([entry for by_key in result.values() for entry in by_key.values()], mid)
    return result


def runs_for_power_text(entry: Mapping[str, Any]) -> str:
    """'12 / 30 / 75': runs for 80 % power at the observed sd and its 80 % and 95 % upper bounds."""
    plan = entry.get("power")
    if not plan:
        return "n/a"
    return " / ".join(f"> {MAX_RUNS_SEARCHED}" if row["runs"] is None else str(row["runs"]) for row in plan["by_sd"])


def _interval_text(entry: Mapping[str, Any]) -> str:
    if entry["t_low"] is None:
        return entry["interval_note"] or "no interval"
    return (f"{entry['confidence']:.0%} t-interval {interval(entry['t_low'], entry['t_high'])} (new runs, this "
            f"test set), two-way bootstrap {interval(entry['two_way_low'], entry['two_way_high'])} (new runs and "
            "new cases)")


def verdict(trainer_name: str, baseline_name: str, entry: dict[str, Any], metric: str = DEFAULT_METRIC) -> str:
    """One sentence: the difference, its intervals, the test and what it concludes (different,
    equivalent within the margin, or inconclusive), and the runs a minimal important difference needs."""
    n, difference = entry["n_runs"], entry["mean_difference"]
    title = METRIC_TITLES.get(metric, metric)
    if n == 0 or difference is None:
        return f"{trainer_name}: no paired run with the baseline has a foreground {title} to compare."
    head = f"{trainer_name} - {baseline_name}: foreground {title} {signed(difference)}"
    if n == 1:
        return (head + " from 1 paired run; one run shows nothing of the between-run spread, so there is no "
                "interval, test or equivalence verdict.")
    head += f" over {n} paired runs (sd {number(entry['sd'])}; {_interval_text(entry)})"
    head += f"; sign-flip p {sign_flip(entry)}, Holm {p_value(entry.get('sign_flip_p_holm'))}"
    margin, state = entry["margin"], entry.get("conclusion")
    if state == DIFFERENT:
        head += ": different, beyond the between-run noise"
        if entry.get("tost_p") is not None and entry["tost_p"] < ALPHA:
            head += f", though within ±{margin:g} (TOST p {p_value(entry['tost_p'])})"
    elif state == EQUIVALENT:
        head += f": equivalent within ±{margin:g} (TOST p {p_value(entry['tost_p'])})"
    else:
        tost = ("TOST undefined with sd 0" if entry.get("tost_p") is None
                else f"TOST p {p_value(entry['tost_p'])}")
        head += f": inconclusive, neither a difference nor equivalence within ±{margin:g} is shown ({tost})"
        if entry.get("detectable_difference") is not None:
            head += (f"; the smallest true difference {n} paired runs detect with {TARGET_POWER:.0%} power at "
                     f"the observed sd is ±{entry['detectable_difference']:.3g}")
    plan = entry.get("power")
    if plan:
        rows = plan["by_sd"]
        needed = " / ".join(f"more than {MAX_RUNS_SEARCHED}" if r["runs"] is None else str(r["runs"]) for r in rows)
        head += (f"; to detect ±{plan['mid']:g} with {plan['power']:.0%} power at the family's level "
                 f"{plan['level']:.2g} the test needs {needed} paired runs at the "
                 f"{' / '.join(r['sd_from'] for r in rows)} sd")
    return head + "."


def method_text(analysis: dict[str, Any], metric: str = DEFAULT_METRIC) -> str:
    entries = [e for by_key in analysis.values() for e in by_key.values()]
    plan = next((e["power"] for e in entries if e.get("power")), None)
    margin = next((e["margin"] for e in entries), DEFAULT_EQUIVALENCE_MARGIN)
    title = METRIC_TITLES.get(metric, metric)
    cases = ("cases whose reference lacks the label, each 1 if predicted, 0 if not: a run's mean is its FPR"
             if metric == FALSE_POSITIVE else "cases whose reference has the label")
    text = (f"One difference of mean {title} per paired run (same fold and repeat; {cases}); mean and sd over "
            f"runs. Intervals ({RUN_CONFIDENCE:.0%}; shown from {MIN_RUNS_FOR_INTERVAL} paired runs up, fewer give "
            "no informative interval): the t-interval on the run differences (df = runs - 1), which "
            "generalises over new runs on this test set; and the two-way (pigeonhole, Owen 2007) bootstrap, one "
            "case resample shared by all runs and the runs resampled independently, its standard error times the "
            f"same t quantile ({TWO_WAY_RESAMPLES} resamples, seed {RUN_BOOTSTRAP_SEED}), which generalises over "
            "new runs and new cases (conservative: benchmarks/studies/coverage_simulation.py). Test: the "
            f"two-sided sign-flip test on the run differences, exact up to {EXACT_SIGN_FLIP_MAX_RUNS} runs "
            f"(its p cannot go below 2 / 2^runs), Monte-Carlo above ({SIGN_FLIP_RESAMPLES} sign patterns, seed "
            f"{SIGN_FLIP_SEED}, ± its standard error); Holm-adjusted over every label and trainer below. "
            f"Equivalence: two one-sided paired t-tests (TOST) against ±{margin:g}. Conclusion at {ALPHA}: "
            f"{DIFFERENT} (Holm p < {ALPHA}), {EQUIVALENT} within the margin (TOST p < {ALPHA}), else "
            f"{INCONCLUSIVE} ({NOT_TESTED} with one run).")
    if plan:
        text += (f" Runs for {plan['power']:.0%} power: paired runs at which the sign-flip test at the family's "
                 f"worst-case Holm level {plan['alpha']} / {plan['family_size']} = {plan['level']:.2g} (fewest "
                 f"runs that can reach it: {plan['fewest_runs_for_level']}) detects a true difference of "
                 f"±{plan['mid']:g} (the minimal important difference), for the observed between-run sd and its "
                 "80 % and 95 % upper confidence bounds (`pu-nnunet study plan` prints the same before a study).")
    return text


def markdown(analysis: dict[str, Any], baseline: str, label_names: Mapping[str, str], short_name,
             metric: str = DEFAULT_METRIC) -> list[str]:
    """The report section: one sentence per trainer, the run-level table, per-run differences."""
    if not analysis:
        return []
    title = METRIC_TITLES.get(metric, metric)
    lines = [f"## Run-level differences against the baseline ({title})", "", method_text(analysis, metric), ""]
    for trainer, by_key in analysis.items():
        if FOREGROUND in by_key:
            lines.append("- " + verdict(short_name(trainer), short_name(baseline), by_key[FOREGROUND], metric))
    lines.append("")
    rows = []
    for trainer, by_key in analysis.items():
        for key, e in by_key.items():
            ci = (interval(e["t_low"], e["t_high"]) if e["t_low"] is not None
                  else "n/a" if e["interval_note"] is None else f"n/a ({e['interval_note']})")
            rows.append([short_name(trainer), label_names.get(key, key), e["n_runs"], signed(e["mean_difference"]),
                         number(e["sd"]), ci, interval(e["two_way_low"], e["two_way_high"]), sign_flip(e),
                         p_value(e.get("sign_flip_p_holm")), p_value(e["tost_p"]), e.get("conclusion", "n/a"),
                         runs_for_power_text(e)])
    lines += [table(["trainer", "label", "paired runs", f"Δ {title} (mean)", "sd over runs",
                     f"{RUN_CONFIDENCE:.0%} t-interval", "two-way bootstrap", "sign-flip p", "Holm p",
                     "TOST p", "conclusion", "runs for 80% power (sd obs. / 80% / 95% bound)"], rows), ""]
    rows = []
    for trainer, by_key in analysis.items():
        for run in by_key.get(FOREGROUND, {}).get("runs", []):
            rows.append([short_name(trainer), run["run"], run["n_cases"], number(run["mean_a"]),
                         number(run["mean_b"]), signed(run["difference"])])
    if rows:
        lines += [f"Foreground {title} of each paired run:", "",
                  table(["trainer", "run", "cases", f"{short_name(baseline)}", "trainer", "Δ"], rows), ""]
    return lines
