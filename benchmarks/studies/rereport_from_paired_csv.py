"""Re-reports a study folder kept without its runs (only compare's per_case_paired.csv files) with
the run-level analysis and the Dice protocols that per-case Dice allows.

The committed first study (synthct_demo_3repeats) keeps report, summary, job states and the two
comparisons, not the runs' metrics.json, predictions or checkpoints, so ``pu-nnunet study
report`` cannot rebuild it. Each comparison's per_case_paired.csv still holds every case's Dice
per label for the baseline (A) and the trainer (B), tagged ``case|fold_F|repeat_R``, and the
false-positive flag of reference-empty cases: enough for the run-level analysis and for three of
the four protocols (the pooled one needs voxel counts, which the CSV does not keep).

    python benchmarks/studies/rereport_from_paired_csv.py benchmarks/studies/synthct_demo_3repeats

writes STUDY_DIR/report_run_level.md, run_level.json and provenance.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from pu_nnunet.evaluation.jsonio import write_json
from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.protocols import (DICE_PROTOCOLS, NNUNET, PROTOCOL_DEFINITIONS, PROTOCOL_TITLES,
                                                     dice_protocols, nnunet_foreground_mean)
from pu_nnunet.evaluation.report.markdown import number, table
from pu_nnunet.provenance import RUN_RECORD_FILE, run_record, short_form
from pu_nnunet.study import run_level
from pu_nnunet.study.report import COMPARISONS_DIR, short_name

PAIRED_CSV = "per_case_paired.csv"
OUTPUT_REPORT, OUTPUT_JSON = "report_run_level.md", "run_level.json"
_POOLED_CASE = re.compile(r"(?P<case>.+)\|fold_(?P<fold>\d+)\|repeat_(?P<repeat>\d+)")


def per_run_records(path: Path) -> tuple[dict, dict]:
    """(A, B): run id -> label key -> per-case records {dice, ref_empty} from one paired CSV."""
    runs: tuple[dict, dict] = ({}, {})
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        for case, _class, label, dice_a, dice_b, _difference, fp_a, fp_b in reader:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study_dir", type=Path)
    study_dir = parser.parse_args().study_dir
    study = json.loads((study_dir / "study.json").read_text())
    baseline = study["baseline"]
    pairs, protocols, csv_files = {}, {}, {}
    for trainer in study["trainers"]:
        if trainer == baseline:
            continue
        path = study_dir / COMPARISONS_DIR / f"{short_name(trainer)}_vs_{short_name(baseline)}" / PAIRED_CSV
        csv_files[f"{short_name(trainer)} {PAIRED_CSV}"] = path
        pairs[trainer] = run_level.pairs_from_paired_csv(path)
        records_a, records_b = per_run_records(path)
        protocols[baseline] = {run: protocols_of_run(labels) for run, labels in records_a.items()}
        protocols[trainer] = {run: protocols_of_run(labels) for run, labels in records_b.items()}
    analysis = run_level.run_level_analysis(pairs)
    summary = study_dir / "summary.json"  # the original report's label names
    names = json.loads(summary.read_text()).get("label_names", {}) if summary.is_file() else {}
    record = run_record(files=csv_files)
    lines = [f"# {study_dir.name}: run-level analysis and Dice protocols (re-report)", "",
             "Rebuilt from the committed comparisons' per_case_paired.csv by "
             "`benchmarks/studies/rereport_from_paired_csv.py` (the runs' metrics.json were not committed). "
             "`report.md` beside this file is the original report; its pooled case-level table stands.", "",
             *run_level.markdown(analysis, baseline, names, short_name),
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
    write_json(study_dir / OUTPUT_JSON, {"run_level": analysis, "protocols": protocols})
    write_json(study_dir / RUN_RECORD_FILE, record)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
