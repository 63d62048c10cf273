"""report.md and plots of ``compare``: both runs side by side, differences as B - A."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pu_nnunet.evaluation.report import markdown as md
from pu_nnunet.evaluation.report.evaluation_outputs import PLOTS_DIR, REPORT_FILE
from pu_nnunet.evaluation.report.evaluation_plots import FIGURE_DPI, pyplot_agg
from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND
from pu_nnunet.evaluation.metrics.paired_stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE_LEVEL
from pu_nnunet.provenance import RUN_RECORD_FILE, short_form

PAIRED_PLOT_FILE = "paired_dice.png"
DIFFERENCE_PLOT_FILE = "mean_difference.png"
# Scatter panels per row in the paired plot, and their size.
PANELS_PER_ROW = 5
PANEL_INCHES = 2.6
SCORE_NAMES = {"dice": "Dice", "iou": "IoU", "nsd": "NSD", "hd95": "HD95"}
# Scores where a smaller value is the better one: their "better" counts are read the other way.
LOWER_IS_BETTER = {"hd95"}
# Which cases each score is paired over, for the section titles.
SCORE_CASES = {"hd95": "cases where both runs have it"}


def _label(result: dict[str, Any], key: str) -> str:
    name = result["label_names"].get(key, key)
    return f"**{key}**" if key == FOREGROUND else (key if name == key else f"{key} ({name})")


def _signed(value: float | None) -> str:
    return md.NOT_AVAILABLE if value is None else f"{value:+.{md.SCORE_DIGITS}f}"


def _score_table(result: dict[str, Any], stats: dict[str, Any], score: str) -> str:
    a, b = result["names"]
    rows = []
    for key in result["label_keys"]:
        s = stats[key][score]
        ci = md.NOT_AVAILABLE if s["ci_low"] is None else f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}]"
        # paired_scores counts "b_better" as B higher
        a_better, b_better = s["a_better"], s["b_better"]
        if score in LOWER_IS_BETTER:
            a_better, b_better = b_better, a_better
        rows.append([_label(result, key), s["n"], md.number(s["mean_a"]), md.number(s["mean_b"]),
                     _signed(s["mean_difference"]), ci, md.p_value(s["wilcoxon_p"]),
                     f"{a_better} / {s['ties']} / {b_better}"])
    name = SCORE_NAMES[score]
    header = ["label", "cases", f"{name} {a}", f"{name} {b}", f"{b} - {a}",
              f"{CONFIDENCE_LEVEL:.0%} CI", "Wilcoxon p", f"{a} better / tie / {b} better"]
    return md.table(header, rows)


def _flag_table(result: dict[str, Any], stats: dict[str, Any], flag: str, cases: str) -> str:
    a, b = result["names"]
    rows = []
    for key in result["label_keys"]:
        s = stats[key][flag]
        clustered = s.get("clustered")
        # runs pooled: the image-runs are not independent, so the test is the per-image sign flip
        # across runs (flag_rates.clustered_paired_test), McNemar only within each run
        p = md.p_value(s["mcnemar_p"]) if clustered is None else (
            f"{md.p_value(clustered['clustered_p'])} (per-image sign flip, {clustered['n_images']} images x "
            f"{clustered['n_runs']} runs)")
        rows.append([_label(result, key), s["n"], md.rate(s["rate_a"], s["cases_a"], s["n"]),
                     md.rate(s["rate_b"], s["cases_b"], s["n"]), _signed(s["difference"]),
                     f"{s['only_a']} / {s['only_b']}", p])
    return md.table(["label", cases, f"rate {a}", f"rate {b}", f"{b} - {a}", f"only {a} / only {b}",
                     "McNemar p (runs pooled: per-image test)"], rows)


def _group_sections(result: dict[str, Any], stats: dict[str, Any], title: str) -> list[str]:
    lines = []
    for score in result.get("scores", ("dice", "iou")):
        where = f" ({SCORE_CASES[score]})" if score in SCORE_CASES else ""
        lines += [f"## {title}: {SCORE_NAMES[score]}{where}", "", _score_table(result, stats, score), ""]
    return lines + [
        f"## {title}: case-level false-positive rate", "",
        _flag_table(result, stats, "false_positive", "reference-empty cases"), "",
        f"## {title}: case-level false-negative rate", "",
        _flag_table(result, stats, "false_negative", "cases with the label"), "",
    ]


def report_markdown(result: dict[str, Any], plot_files: list[str]) -> str:
    a, b = result["names"]
    lines = [
        f"# Comparison: {a} vs {b}", "",
        f"- {a}: `{result['sources'][a]}` (missing predictions: {len(result['missing_predictions'][a])}, "
        f"min size {result['min_size'][a]})",
        f"- {b}: `{result['sources'][b]}` (missing predictions: {len(result['missing_predictions'][b])}, "
        f"min size {result['min_size'][b]})",
        f"- cases compared: {result['n_cases_compared']}; only in {a}: {len(result['only_in'][a])}; "
        f"only in {b}: {len(result['only_in'][b])}",
        *_scope_lines(result),
        *([f"- **{result['boundary_note']}**"] if result.get("boundary_note") else []),
        "",
        f"Differences are {b} - {a} (for HD95, lower is better). Scores are paired over cases whose reference has "
        "the label (HD95 over those where both runs have a finite HD95); the CI is a "
        f"paired bootstrap percentile interval of the mean difference ({BOOTSTRAP_RESAMPLES} resamples, seed "
        f"{BOOTSTRAP_SEED}); p is the two-sided Wilcoxon signed-rank test. Rates are paired over reference-empty "
        "(false positives) or reference-non-empty (false negatives) cases; p is McNemar's exact test. The min size "
        "(--min-size) sets only these case-level flags; every score counts every voxel.", "",
    ]
    lines += _group_sections(result, result["overall"], "All cases")
    for name, stats in result["per_class"].items():
        lines += _group_sections(result, stats, f"Class {name}")
    for name in (a, b):
        if result["only_in"][name]:
            lines += [f"## Cases only in {name} (not compared)", "",
                      ", ".join(f"`{c}`" for c in result["only_in"][name]), ""]
        if result["missing_predictions"][name]:
            lines += [f"## Missing predictions of {name} (scored as failures)", "",
                      ", ".join(f"`{c}`" for c in result["missing_predictions"][name]), ""]
    if plot_files:
        lines += ["## Plots", ""] + [f"![{Path(f).stem}]({f})" for f in plot_files] + [""]
    if result.get("provenance"):
        lines += ["## Provenance", "", f"Full record: `{RUN_RECORD_FILE}`.", "", *short_form(result["provenance"])]
        for name in (a, b):
            record = (result.get("evaluations_provenance") or {}).get(name)
            lines.append(f"- evaluation {name}: " + ("; ".join(line[2:] for line in short_form(record)
                                                              if not line.startswith(("- libraries", "- created")))
                                                    if record else "no run record (made before provenance records)"))
        lines.append("")
    return "\n".join(lines)


def _scope_lines(result: dict[str, Any]) -> list[str]:
    """What was compared when the evaluations differ in labels or references (said up front)."""
    a, b = result["names"]
    lines = []
    not_compared = result.get("labels_not_compared") or {}
    if any(not_compared.values()):
        compared = ", ".join(_label(result, key) for key in result["label_keys"])
        lines.append(f"- **labels compared: {compared} only**; not compared (scored by one run only): "
                     f"{a} {not_compared.get(a) or 'none'}, {b} {not_compared.get(b) or 'none'}; the foreground is "
                     "not compared because each run's merges different labels")
    if result.get("different_references"):
        lines.append("- **the evaluations were made on different references** (allowed with "
                     f"--allow-different-references): {'; '.join(result['different_references'])}; only the shared "
                     "cases are compared")
    return lines


def plot_paired_dice(result: dict[str, Any], pairs: list[tuple[dict, dict]], path: Path) -> None:
    """One scatter panel per label: Dice of A (x) against B (y) per case; above the line, B wins."""
    plt = pyplot_agg()
    a, b = result["names"]
    keys = result["label_keys"]
    columns = min(PANELS_PER_ROW, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES * columns, PANEL_INCHES * rows + 0.4),
                             squeeze=False)
    for ax, key in zip(axes.flat, keys):
        points = np.array([(x["labels"][key]["dice"], y["labels"][key]["dice"]) for x, y in pairs
                           if not x["labels"][key]["ref_empty"]], dtype=float).reshape(-1, 2)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, zorder=1)
        ax.scatter(points[:, 0], points[:, 1], s=10, alpha=0.7, color="tab:blue", zorder=2)
        difference = result["overall"][key]["dice"]["mean_difference"]
        name = result["label_names"].get(key, key)
        ax.set_title(f"{name}\n{b} - {a}: {_signed(difference)}", fontsize=8)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_axis_off()
    fig.supxlabel(f"Dice {a}", fontsize=9)
    fig.supylabel(f"Dice {b}", fontsize=9)
    fig.suptitle(f"Per-case Dice, {a} vs {b} (cases whose reference has the label)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def plot_mean_difference(result: dict[str, Any], path: Path) -> None:
    """Mean Dice difference per label with its bootstrap interval; right of zero, B is better."""
    plt = pyplot_agg()
    a, b = result["names"]
    keys = [k for k in result["label_keys"] if result["overall"][k]["dice"]["n"] > 0]
    stats = [result["overall"][k]["dice"] for k in keys]
    means = np.array([s["mean_difference"] for s in stats])
    errors = np.array([[m - s["ci_low"] for m, s in zip(means, stats)], [s["ci_high"] - m for m, s in zip(means, stats)]])
    fig, ax = plt.subplots(figsize=(6, 1.0 + 0.32 * max(len(keys), 1)))
    positions = np.arange(len(keys))[::-1]
    ax.errorbar(means, positions, xerr=errors.reshape(2, -1), fmt="o", color="tab:blue", capsize=3)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(positions, [result["label_names"].get(k, k) for k in keys], fontsize=8)
    ax.set_xlabel(f"mean Dice difference {b} - {a} ({CONFIDENCE_LEVEL:.0%} paired bootstrap CI)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def write_compare_report(result: dict[str, Any], pairs: list[tuple[dict, dict]], out_dir: Path,
                         plots: bool = True) -> None:
    plot_files = []
    if plots:
        plots_dir = out_dir / PLOTS_DIR
        plots_dir.mkdir(parents=True, exist_ok=True)
        plot_paired_dice(result, pairs, plots_dir / PAIRED_PLOT_FILE)
        plot_mean_difference(result, plots_dir / DIFFERENCE_PLOT_FILE)
        plot_files = [f"{PLOTS_DIR}/{PAIRED_PLOT_FILE}", f"{PLOTS_DIR}/{DIFFERENCE_PLOT_FILE}"]
    (out_dir / REPORT_FILE).write_text(report_markdown(result, plot_files), encoding="utf-8")
