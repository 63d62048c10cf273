"""Files written by ``evaluate``: metrics.json, per_case.csv, report.md and plots/."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pu_nnunet.evaluation.report import markdown as md
from pu_nnunet.evaluation.case_io import DatasetInfo
from pu_nnunet.evaluation.jsonio import write_json
from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.boundary import HD_PERCENTILE
from pu_nnunet.evaluation.metrics.protocols import (DICE_PROTOCOLS, NSD_PROTOCOLS, PROTOCOL_DEFINITIONS,
                                                     PROTOCOL_TITLES, RATE_CONFIDENCE)
from pu_nnunet.evaluation.published import PROTOCOL_NOT_STATED, PUBLISHED_SOURCE, published_for
from pu_nnunet.provenance import RUN_RECORD_FILE, short_form

METRICS_FILE = "metrics.json"
PER_CASE_FILE = "per_case.csv"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
# What one evaluation writes; an output folder holding any of them needs overwrite=True.
EVALUATION_OUTPUTS = (METRICS_FILE, PER_CASE_FILE, REPORT_FILE, PLOTS_DIR, RUN_RECORD_FILE)

# per_case.csv: one row per case and label key (labels, then "foreground").
CSV_CASE_COLUMNS = ("case", "class", "split", "missing_prediction")
# nsd and hd95 are empty in files of evaluations made with --no-boundary.
CSV_LABEL_COLUMNS = ("dice", "iou", "nsd", "hd95", "tp", "fp", "fn", "n_ref", "n_pred", "ref_volume", "pred_volume",
                     "ref_empty", "false_positive", "false_negative")

# Cases listed in the report's table of lowest foreground Dice.
WORST_CASES_LISTED = 10


def label_keys(results: dict[str, Any]) -> list[str]:
    return [str(label) for label in results["labels"]] + [FOREGROUND]


def display_name(results: dict[str, Any], key: str) -> str:
    name = results["label_names"].get(key, key)
    return key if key == FOREGROUND or name == key else f"{key} ({name})"


def write_per_case_csv(results: dict[str, Any], path: Path) -> None:
    keys = label_keys(results)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*CSV_CASE_COLUMNS, "label", "label_name", *CSV_LABEL_COLUMNS, "volume_unit"])
        for case in results["cases"]:
            for key in keys:
                values = case["labels"][key]
                writer.writerow([*("" if case[c] is None else case[c] for c in CSV_CASE_COLUMNS), key,
                                 results["label_names"].get(key, key),
                                 *("" if values.get(c) is None else values[c] for c in CSV_LABEL_COLUMNS),
                                 case["volume_unit"]])


def aggregate_table(results: dict[str, Any], aggregates: dict[str, Any]) -> str:
    rows = []
    for key in label_keys(results):
        a = aggregates[key]
        rows.append([
            f"**{key}**" if key == FOREGROUND else display_name(results, key),
            a["n_reference_nonempty"],
            md.mean_std(a["dice_mean"], a["dice_std"]),
            md.number(a["dice_median"]),
            md.mean_std(a["iou_mean"], a["iou_std"]),
            md.rate_ci(a["false_positive_rate"], a["false_positive_cases"], a["n_reference_empty"],
                       a.get("false_positive_rate_ci")),
            md.rate_ci(a["false_negative_rate"], a["false_negative_cases"], a["n_reference_nonempty"],
                       a.get("false_negative_rate_ci")),
            md.number(a["dice_mean_nnunet"]),
        ])
    over = aggregates["mean_over_labels"]
    rows.append(["mean over labels", "", md.number(over["dice_mean"]), "", md.number(over["iou_mean"]), "", "",
                 md.number(over["dice_mean_nnunet"])])
    header = ["label", "cases with label", "Dice mean ± std", "Dice median", "IoU mean ± std",
              f"FP rate (cases) [{RATE_CONFIDENCE:.0%} CI]", f"FN rate (cases) [{RATE_CONFIDENCE:.0%} CI]",
              "nnU-Net mean Dice"]
    return md.table(header, rows)


def has_boundary(results: dict[str, Any]) -> bool:
    return "nsd_mean" in results["aggregates"][FOREGROUND]


def boundary_table(results: dict[str, Any], aggregates: dict[str, Any]) -> str:
    unit = results["settings"].get("distance_unit", "mm")
    tolerances = results["settings"].get("nsd_tolerance") or {}
    rows = []
    for key in label_keys(results):
        a = aggregates[key]
        rows.append([f"**{key}**" if key == FOREGROUND else display_name(results, key),
                     md.number(tolerances.get(key), 2), a["n_reference_nonempty"],
                     md.mean_std(a["nsd_mean"], a["nsd_std"]), md.number(a["nsd_median"]), a["n_hd95"], md.mean_std(a["hd95_mean"], a["hd95_std"], 2),
                     md.number(a["hd95_median"], 2)])
    over = aggregates["mean_over_labels"]
    rows.append(["mean over labels", "", "", md.number(over.get("nsd_mean")), "", "",
                 md.number(over.get("hd95_mean"), 2), ""])
    return md.table(["label", f"NSD tolerance ({unit})", "cases with label", "NSD mean ± std", "NSD median",
                     "cases with HD95", f"HD95 mean ± std ({unit})", f"HD95 median ({unit})"], rows)


def boundary_lines(results: dict[str, Any]) -> list[str]:
    unit = results["settings"].get("distance_unit", "mm")
    return [f"NSD: normalised surface distance (Metrics Reloaded's boundary metric), the share of both surfaces "
            f"within the label's tolerance of the other; HD{HD_PERCENTILE:g}: the larger of the two directed "
            f"{HD_PERCENTILE:g}th percentiles of the surface distances. Computed by MONAI's "
            f"definitions (compute_surface_dice, compute_hausdorff_distance; edge voxels, exact Euclidean "
            f"distances between voxel centres), distances in {unit} (3D: the image spacing; "
            "2D images: pixels). Empty conventions: reference and prediction empty: NSD and HD95 undefined (as "
            "Dice); one of them empty: NSD 0, HD95 undefined. NSD mean over the cases whose reference has the "
            "label (a missing or empty prediction counts 0); HD95 over the cases where both reference and "
            "prediction have it (\"cases with HD95\"), so it says nothing about missed structures: read it "
            "beside the FN rate."]


def protocol_table(results: dict[str, Any], aggregates: dict[str, Any], published: dict | None = None,
                   score: str = "dice") -> str:
    """Dice (or NSD, ``score="nsd"``) of every label and the foreground under the averaging
    protocols; with ``published``, the paper's foreground Dice beside each protocol."""
    protocols = DICE_PROTOCOLS if score == "dice" else NSD_PROTOCOLS
    rows = []
    for key in label_keys(results):
        values = aggregates[key][f"{score}_protocols"]
        cells = [md.number(values[name]) for name in protocols]
        if published is not None and key == FOREGROUND:
            cells = [f"{cell} (paper {published['dice']:.3f})" for cell in cells]
        rows.append([f"**{key}**" if key == FOREGROUND else display_name(results, key), *cells])
    return md.table(["label", *(PROTOCOL_TITLES[name] for name in protocols)], rows)


def protocol_lines(published: dict | None) -> list[str]:
    lines = [f"- {PROTOCOL_TITLES[name]}: {PROTOCOL_DEFINITIONS[name]}." for name in DICE_PROTOCOLS]
    if published is not None:
        lines.append(f"- paper: {PUBLISHED_SOURCE}'s foreground Dice on this dataset. {PROTOCOL_NOT_STATED}")
    lines.append("- foreground row: the nnU-Net column is the mean of the label means (nnU-Net's foreground_mean), "
                 "the other columns score all labels merged into one.")
    lines.append("- every protocol counts every predicted voxel: --min-size changes only the FP/FN rates.")
    return lines


NSD_PROTOCOL_NOTE = ("NSD under the same protocols (its empty conventions are Dice's); nnU-Net computes no NSD, so "
                     "its column applies nnU-Net's averaging rule to NSD; there is no pooled NSD.")


def _case_note(case: dict[str, Any]) -> str:
    if case["missing_prediction"]:
        return "missing prediction"
    return "reference empty: false positive" if case["labels"][FOREGROUND]["ref_empty"] else ""


def _worst_cases_table(results: dict[str, Any]) -> str:
    scored = [c for c in results["cases"] if c["labels"][FOREGROUND]["dice"] is not None]
    scored.sort(key=lambda c: c["labels"][FOREGROUND]["dice"])
    unit = results["volume_unit"]
    boundary = has_boundary(results)
    rows = [[c["case"], c["class"] or "", md.number(c["labels"][FOREGROUND]["dice"]),
             md.number(c["labels"][FOREGROUND]["iou"]),
             *([md.number(c["labels"][FOREGROUND]["nsd"]), md.number(c["labels"][FOREGROUND]["hd95"], 2)]
               if boundary else []),
             md.number(c["labels"][FOREGROUND]["ref_volume"], md.VOLUME_DIGITS),
             md.number(c["labels"][FOREGROUND]["pred_volume"], md.VOLUME_DIGITS),
             _case_note(c)]
            for c in scored[:WORST_CASES_LISTED]]
    distance = results["settings"].get("distance_unit", "mm")
    return md.table(["case", "class", "Dice", "IoU", *(["NSD", f"HD95 ({distance})"] if boundary else []),
                     f"reference ({unit})", f"prediction ({unit})", "note"], rows)


def _label_scope_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    if results.get("regions"):
        regions = "; ".join(f"{display_name(results, key)} = label values {values}"
                            for key, values in results["regions"].items())
        lines.append(f"- regions of a region-based dataset.json, scored as nnU-Net scores them (a region's mask: the "
                     f"voxels holding any of its values; foreground: all of them): {regions}")
    if results["settings"].get("ignore_label") is not None:
        lines.append(f"- ignore label {results['settings']['ignore_label']}: voxels the reference marks with it are "
                     "not scored (as nnU-Net)")
    return lines


def report_markdown(results: dict[str, Any], plot_files: list[str]) -> str:
    s = results["settings"]
    k = s["min_size"]
    lines = [
        "# Evaluation report", "",
        f"- predictions: `{s['pred_dir']}`",
        f"- references: `{s['ref_dir']}` ({results['n_reference_cases']} cases, {s['file_ending']}, "
        f"read with nnU-Net's {s['reader']})",
        f"- missing predictions (scored as empty, Dice 0): {len(results['missing_predictions'])}; "
        f"extra predictions ignored: {len(results['extra_predictions'])}",
        f"- device: {s['device_used']} (asked: {s['device_requested']}); volumes in {results['volume_unit']}",
        *_label_scope_lines(results),
        "",
        "Dice and IoU: mean ± sample std over cases whose reference has the label. FP rate: share of "
        f"reference-empty cases with at least K = {k} predicted voxel(s). FN rate: share of cases whose reference "
        f"has the label with fewer than {k} voxel(s) of it predicted; intervals are exact (Clopper-Pearson). "
        f"K (--min-size) applies to these two rates only: Dice, IoU, NSD, HD95 and every protocol count every "
        "predicted voxel. Foreground: all labels merged into one. nnU-Net mean Dice: what nnU-Net's summary.json "
        "holds (nnUNetv2_evaluate_folder --chill: reference-empty false positives count as 0, cases without a "
        "prediction are left out; foreground: its foreground_mean, the mean of the label means).", "",
        "## All cases", "", aggregate_table(results, results["aggregates"]), "",
    ]
    boundary = has_boundary(results)
    if boundary:
        lines += ["## Boundary metrics (NSD, HD95)", "", boundary_table(results, results["aggregates"]), "",
                  *boundary_lines(results), ""]
    else:
        lines += ["Boundary metrics (NSD, HD95): not computed (--no-boundary).", ""]
    published = published_for(results.get("dataset_name"))
    lines += ["## Dice protocols", "", protocol_table(results, results["aggregates"], published), "",
              *protocol_lines(published), ""]
    if boundary:
        lines += ["## NSD protocols", "", protocol_table(results, results["aggregates"], score="nsd"), "",
                  NSD_PROTOCOL_NOTE, ""]
    for name, aggregates in results["per_class"].items():
        lines += [f"## Class: {name}", "", aggregate_table(results, aggregates), "",
                  "Dice protocols:", "", protocol_table(results, aggregates), ""]
        if boundary:
            lines += ["Boundary metrics:", "", boundary_table(results, aggregates), "",
                      "NSD protocols:", "", protocol_table(results, aggregates, score="nsd"), ""]
    if results["missing_predictions"]:
        lines += ["## Missing predictions (counted as failures)", "",
                  ", ".join(f"`{c}`" for c in results["missing_predictions"]), ""]
    if results["extra_predictions"]:
        lines += ["## Predictions without a reference (ignored)", "",
                  ", ".join(f"`{c}`" for c in results["extra_predictions"]), ""]
    lines += [f"## Lowest foreground Dice ({WORST_CASES_LISTED} at most)", "", _worst_cases_table(results), ""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{Path(f).stem}]({f})" for f in plot_files] + [""]
    if results.get("provenance"):
        lines += ["## Provenance", "", f"Full record: `{RUN_RECORD_FILE}`.", "", *short_form(results["provenance"]),
                  *reference_lines(results.get("references")), ""]
    return "\n".join(lines)


def reference_lines(references: dict | None) -> list[str]:
    if not references:
        return []
    return [f"- references: {references['n_cases']} cases, case list sha256 {references['cases_sha256'][:12]}, "
            f"reference files sha256 {references['files_sha256'][:12]}"]


def write_evaluation_outputs(results: dict[str, Any], out_dir: Path, info: DatasetInfo, plots: bool = True) -> None:
    write_json(out_dir / METRICS_FILE, results)
    if results.get("provenance"):
        write_json(out_dir / RUN_RECORD_FILE, {**results["provenance"], "references": results.get("references")})
    write_per_case_csv(results, out_dir / PER_CASE_FILE)
    plot_files = []
    if plots:
        from pu_nnunet.evaluation.report.evaluation_plots import write_evaluation_plots

        plot_files = write_evaluation_plots(results, out_dir, out_dir / PLOTS_DIR, info)
    (out_dir / REPORT_FILE).write_text(report_markdown(results, plot_files), encoding="utf-8")
