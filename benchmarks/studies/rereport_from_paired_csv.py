"""Re-reports a study folder kept without its runs (only compare's per_case_paired.csv files) with
the run-level analysis, the image-level false-positive rates and the Dice protocols that per-case
Dice allows.

The committed first study (synthct_demo_3repeats) keeps report, summary, job states and the two
comparisons, not the runs' metrics.json, predictions or checkpoints, so ``pu-nnunet study
report`` cannot rebuild it. Each comparison's per_case_paired.csv still holds every case's Dice
per label for the baseline (A) and the trainer (B), tagged ``case|fold_F|repeat_R``, and the
false-positive flag of reference-empty cases: enough for the run-level analysis, the false-positive
rates with the images as the sample, and three of the four protocols (the pooled one needs voxel
counts, which the CSV does not keep). A study run with ``--robustness`` also gets the run-level
analysis of every corruption condition (comparisons/robustness/<trainer>_vs_<baseline>/<condition>/).

    python benchmarks/studies/rereport_from_paired_csv.py benchmarks/studies/synthct_demo_3repeats

writes STUDY_DIR/report_run_level.md, run_level.json and provenance_rereport.json (the study's own
provenance.json, where it has one, is the record of the study run and stays).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from pu_nnunet.evaluation.jsonio import write_json
from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.flag_rates import (PAIRED_FLAG_HEADER, clustered_paired_test, flag_rate,
                                                     paired_flag_cells, rate_text)
from pu_nnunet.evaluation.metrics.run_stats import DEFAULT_EQUIVALENCE_MARGIN, DEFAULT_MID
from pu_nnunet.evaluation.metrics.protocols import (DICE_PROTOCOLS, NNUNET, PROTOCOL_DEFINITIONS, PROTOCOL_TITLES,
                                                     dice_protocols, nnunet_foreground_mean)
from pu_nnunet.evaluation.report.markdown import number, p_value, table
from pu_nnunet.provenance import run_record, short_form
from pu_nnunet.study.report import run_level
from pu_nnunet.study.report.study_report import COMPARISONS_DIR, short_name
from pu_nnunet.robustness.study_report import COMPARISONS_SUBDIR

PAIRED_CSV = "per_case_paired.csv"
OUTPUT_REPORT, OUTPUT_JSON, OUTPUT_RECORD = "report_run_level.md", "run_level.json", "provenance_rereport.json"
_POOLED_CASE = re.compile(r"(?P<case>.+)\|fold_(?P<fold>\d+)\|repeat_(?P<repeat>\d+)")


def per_run_records(path: Path) -> tuple[dict, dict]:
    """(A, B): run id -> label key -> per-case records {dice, ref_empty} from one paired CSV."""
    runs: tuple[dict, dict] = ({}, {})
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for case, _class, label, dice_a, dice_b, _difference, fp_a, fp_b, *_boundary in reader:
            match = _POOLED_CASE.fullmatch(case)
            run = run_level.run_id(int(match["fold"]), int(match["repeat"]))
            for side, dice, flag in ((runs[0], dice_a, fp_a), (runs[1], dice_b, fp_b)):
                # compare writes the false-positive flag only where the reference is empty
                side.setdefault(run, {}).setdefault(label, []).append(
                    {"dice": float(dice) if dice else None, "ref_empty": flag != ""})
    return runs


def protocols_of_run(by_label: dict) -> dict:
    """label key -> protocols; the foreground's nnU-Net value is nnU-Net's foreground_mean."""
    values = {label: dice_protocols(records) for label, records in by_label.items()}
    values[FOREGROUND][NNUNET] = nnunet_foreground_mean([v[NNUNET] for k, v in values.items() if k != FOREGROUND])
    return values


def flag_rows(path: Path) -> dict[str, tuple[list[str], list[bool], list[bool]]]:
    """label key -> (run-tagged case ids, A's flags, B's flags) of the reference-empty rows."""
    rows: dict[str, tuple[list[str], list[bool], list[bool]]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for case, _class, label, _a, _b, _difference, fp_a, fp_b, *_boundary in reader:
            if fp_a != "" and fp_b != "":
                ids, a, b = rows.setdefault(label, ([], [], []))
                ids.append(case)
                a.append(fp_a == "True")
                b.append(fp_b == "True")
    return rows


def flag_lines(flags_by_trainer: dict, baseline: str, names: dict, heading: str) -> list[str]:
    """The false-positive table: each side's rate over image-runs with the image-level interval,
    and the paired test with the images as the sample."""
    rows = []
    for trainer, by_key in flags_by_trainer.items():
        for key, (ids, a, b) in by_key.items():
            if key != FOREGROUND and len(by_key) == 2:
                continue  # one label: the foreground says the same
            test = clustered_paired_test(ids, a, b)
            paired = {"n": len(ids), "only_a": sum(x and not y for x, y in zip(a, b)),
                      "only_b": sum(y and not x for x, y in zip(a, b)), "mcnemar_p": None, "clustered": test}
            rows.append([short_name(trainer), names.get(key, key), rate_text(flag_rate(ids, a)),
                         rate_text(flag_rate(ids, b)), *paired_flag_cells(paired)])
    if not rows:
        return []
    return [heading, "",
            "Rate over image-runs (k/n) with an exact 95% interval whose sample is the images (n = images, k = "
            "flagged image-runs / runs; it holds whatever the correlation between the runs of an image), and the "
            "paired difference: a sign-flip test over images of the per-image difference in flagged runs "
            "(trainer - baseline), McNemar's exact test within each run. Never the image-runs pooled as "
            "independent images.", "",
            table(["trainer", "label", f"FPR {short_name(baseline)}", "FPR trainer", *PAIRED_FLAG_HEADER], rows), ""]


def robustness_lines(study_dir: Path, study: dict, baseline: str) -> tuple[list[str], dict]:
    """Run-level analysis and false positives per corruption condition, Holm over the conditions."""
    root = study_dir / COMPARISONS_DIR / COMPARISONS_SUBDIR
    if not root.is_dir():
        return [], {}
    pairs, flags, csv_files = {}, {}, {}
    # <trainer>_vs_<baseline>/ only: <trainer>/<condition>_vs_clean/ compares a trainer with itself
    for folder in sorted(f for f in root.iterdir() if "_vs_" in f.name):
        trainer = folder.name.split("_vs_")[0]
        order = [c.name for c in sorted(folder.iterdir()) if (c / PAIRED_CSV).is_file()]
        for condition in order:
            path = folder / condition / PAIRED_CSV
            pairs.setdefault(trainer, {})[condition] = run_level.pairs_from_paired_csv(path)[FOREGROUND]
            flags.setdefault(trainer, {})[condition] = flag_rows(path).get(FOREGROUND)
    analysis = run_level.run_level_analysis(pairs, study.get("mid", DEFAULT_MID),
                                            study.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN))
    rows = []
    for trainer, by_condition in analysis.items():
        for condition, e in by_condition.items():
            ids, a, b = flags[trainer][condition] or ([], [], [])
            paired = {"n": len(ids), "only_a": 0, "only_b": 0, "mcnemar_p": None,
                      "clustered": clustered_paired_test(ids, a, b) if ids else None}
            rows.append([short_name(trainer), condition, e["n_runs"], run_level.signed(e["mean_difference"]),
                         number(e["sd"]), run_level.interval(e["t_low"], e["t_high"]),
                         run_level.interval(e["two_way_low"], e["two_way_high"]), run_level.sign_flip(e),
                         p_value(e["sign_flip_p_holm"]), p_value(e["tost_p"]), e["conclusion"],
                         run_level.runs_for_power_text(e),
                         f"{sum(a)}/{len(ids)}" if ids else "n/a", f"{sum(b)}/{len(ids)}" if ids else "n/a",
                         paired_flag_cells(paired)[2] if ids else "n/a"])
    lines = ["## Robustness: run-level differences per corruption condition", "",
             "From comparisons/robustness/*/<condition>/per_case_paired.csv; foreground Dice, trainer - baseline, one "
             "difference per paired run; methods as in the section above, Holm over these conditions. False "
             "positives on the reference-empty images over the runs, the paired test with the images as the "
             "sample.", "",
             table(["trainer", "condition", "paired runs", "Δ Dice (mean)", "sd over runs", "95% t-interval",
                    "two-way bootstrap", "sign-flip p", "Holm p", "TOST p", "conclusion",
                    "runs for 80% power (sd obs. / 80% / 95% bound)", "FP baseline", "FP trainer",
                    PAIRED_FLAG_HEADER[2]], rows), ""]
    return lines, analysis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path)
    study_dir = parser.parse_args().study_dir
    study = json.loads((study_dir / "study.json").read_text())
    baseline = study["baseline"]
    pairs, protocols, csv_files, flags = {}, {}, {}, {}
    for trainer in study["trainers"]:
        if trainer == baseline:
            continue
        path = study_dir / COMPARISONS_DIR / f"{short_name(trainer)}_vs_{short_name(baseline)}" / PAIRED_CSV
        csv_files[f"{short_name(trainer)} {PAIRED_CSV}"] = path
        pairs[trainer] = run_level.pairs_from_paired_csv(path)
        flags[trainer] = flag_rows(path)
        records_a, records_b = per_run_records(path)
        protocols[baseline] = {run: protocols_of_run(labels) for run, labels in records_a.items()}
        protocols[trainer] = {run: protocols_of_run(labels) for run, labels in records_b.items()}
    analysis = run_level.run_level_analysis(pairs, study.get("mid", DEFAULT_MID),
                                            study.get("equivalence_margin", DEFAULT_EQUIVALENCE_MARGIN))
    summary = study_dir / "summary.json"  # the original report's label names
    names = json.loads(summary.read_text()).get("label_names", {}) if summary.is_file() else {}
    robustness, robustness_analysis = robustness_lines(study_dir, study, baseline)
    record = run_record(files=csv_files)
    lines = [f"# {study_dir.name}: run-level analysis, false positives and Dice protocols (re-report)", "",
             "Rebuilt from the committed comparisons' per_case_paired.csv by "
             "`benchmarks/studies/rereport_from_paired_csv.py` (the runs' per-condition metrics were not "
             "committed). `report.md` beside this file is the original report: its pooled case-level Dice table "
             "stands as a description; its run-level intervals, false-positive intervals and McNemar tests are "
             "superseded by this file.", "",
             *run_level.markdown(analysis, baseline, names, short_name),
             *flag_lines(flags, baseline, names, "## False positives on reference-empty cases"),
             *robustness,
             "## Foreground Dice of every run under the averaging protocols", "",
             "The pooled protocol needs voxel counts, which per_case_paired.csv does not keep (n/a).", "",
             table(["trainer", "run", *(PROTOCOL_TITLES[p] for p in DICE_PROTOCOLS)],
                   [[short_name(trainer), run, *(number(values[FOREGROUND][p]) for p in DICE_PROTOCOLS)]
                    for trainer, runs in protocols.items() for run, values in sorted(runs.items())]), ""]
    trainer, runs = next((t, r) for t, r in protocols.items() if t != baseline)
    run, values = sorted(runs.items())[0]
    lines += [f"### Every label of one run: {short_name(trainer)}, {run}", "",
              table(["label", *(PROTOCOL_TITLES[p] for p in DICE_PROTOCOLS)],
                    [[names.get(key, key), *(number(v[p]) for p in DICE_PROTOCOLS)] for key, v in values.items()]),
              "", *(f"- {PROTOCOL_TITLES[p]}: {PROTOCOL_DEFINITIONS[p]}." for p in DICE_PROTOCOLS), "",
              "## Provenance of this re-report", "", *short_form(record), ""]
    (study_dir / OUTPUT_REPORT).write_text("\n".join(lines), encoding="utf-8")
    write_json(study_dir / OUTPUT_JSON, {"run_level": analysis, "robustness_run_level": robustness_analysis,
                                         "planning": {"mid": study.get("mid", DEFAULT_MID),
                                                      "equivalence_margin": study.get("equivalence_margin",
                                                                                      DEFAULT_EQUIVALENCE_MARGIN)},
                                         "protocols": protocols})
    write_json(study_dir / OUTPUT_RECORD, record)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
