"""``pu-nnunet compare EVAL_A EVAL_B -o OUT_DIR``: paired comparison of two evaluations."""

from __future__ import annotations

import argparse

HELP = "Compare two evaluate outputs case by case: Dice/IoU differences with paired tests, FP-rate difference."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("eval_a", metavar="EVAL_A", help="output folder (or metrics.json) of the first evaluate run")
    parser.add_argument("eval_b", metavar="EVAL_B", help="output folder (or metrics.json) of the second run")
    parser.add_argument("-o", "--output", dest="out_dir", required=True, metavar="OUT_DIR",
                        help="folder for comparison.json, per_case_paired.csv, report.md and plots/")
    parser.add_argument("--names", nargs=2, default=("A", "B"), metavar=("A", "B"),
                        help="names of the two runs in the report (default A B); differences are B - A")
    parser.add_argument("--allow-different-references", action="store_true",
                        help="compare evaluations made on different case sets, reference files, dataset.json or "
                             "split file (refused by default); the report then says so")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in OUT_DIR")


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes (OUT_DIR): one run at a time (pu_nnunet/cli.py locks it)."""
    return [args.out_dir]


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.evaluation.compare import compare_evaluations
    from pu_nnunet.evaluation.report.markdown import number, p_value

    result = compare_evaluations(args.eval_a, args.eval_b, args.out_dir, names=tuple(args.names),
                                 overwrite=args.overwrite, plots=not args.no_plots,
                                 allow_different_references=args.allow_different_references)
    a, b = result["names"]
    # the foreground, or the first shared label when the label sets differ (no foreground compared)
    key = result["label_keys"][-1]
    shown = "foreground" if key == "foreground" else f"label {key}"
    dice = result["overall"][key]["dice"]
    fp = result["overall"][key]["false_positive"]
    print(f"{result['n_cases_compared']} cases: {shown} Dice {a} {number(dice['mean_a'])}, "
          f"{b} {number(dice['mean_b'])} ({b} - {a} {number(dice['mean_difference'])}, "
          f"Wilcoxon p {p_value(dice['wilcoxon_p'])}); FP rate {a} {number(fp['rate_a'])}, {b} {number(fp['rate_b'])}")
    for line in _scope_warnings(result):
        print(line)
    print(f"wrote {args.out_dir}/report.md")
    return 0


def _scope_warnings(result: dict) -> list[str]:
    lines = []
    not_compared = result.get("labels_not_compared") or {}
    if any(not_compared.values()):
        lines.append(f"labels compared: {', '.join(result['label_keys'])} only (not compared: "
                     + ", ".join(f"{name} {labels}" for name, labels in not_compared.items() if labels) + ")")
    if result.get("different_references"):
        lines.append("different references (allowed): " + "; ".join(result["different_references"]))
    return lines
