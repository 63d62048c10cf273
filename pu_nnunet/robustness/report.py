"""The summary and report of ``pu-nnunet robustness``: its runs (NAME=DIR, repeats of a NAME
paired repeat k with repeat k) through the statistics and tables a study's Robustness section
uses (:mod:`pu_nnunet.robustness.summary`), with the command's own title, settings and provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pu_nnunet.robustness.summary import SweptRun, paired_lines, per_trainer_lines, summarize as summarize_runs
from pu_nnunet.robustness.sweep import COMPARISONS_DIR, Condition, ModelRun

RESULT_FORMAT = "pu-nnunet-robustness/2"  # 2: the statistics and keys of a study's Robustness section
PLOT_FILE = "dice_vs_strength.png"


def swept_run(model: ModelRun) -> SweptRun:
    """A model of the command as a run of the sweep: repeat k of a NAME pairs with repeat k of the baseline."""
    return SweptRun(model.name, (model.index,), f"repeat {model.index}", f"|run_{model.index}", str(model.folder))


def summarize(models: Sequence[ModelRun], conditions: Sequence[Condition], metrics: dict[str, dict[str, dict]],
              baseline: str | None, out: Path) -> dict[str, Any]:
    """``metrics``: run label -> condition -> metrics.json content; compare's folders under OUT_DIR/comparisons."""
    runs = {swept_run(model): model for model in models}
    summary = summarize_runs(list(runs), conditions, {run: metrics[model.label] for run, model in runs.items()},
                             baseline, out / COMPARISONS_DIR)
    return {"format": RESULT_FORMAT, **summary}


def report_markdown(summary: dict[str, Any], settings: dict[str, Any], provenance_lines: list[str]) -> str:
    names = summary["trainers"]
    lines = ["# Robustness under image corruptions", "",
             "Models: " + "; ".join(f"{name} ({len(summary['runs'][name])} run(s))" for name in names)
             + f". Held-out images: `{settings['images']}`; seed {settings['seed']}; mirroring "
             f"{'on' if settings['mirroring'] else 'off'}; intensity model `{settings['intensity_model']}`.", "",
             "## Per trainer", "", *per_trainer_lines(summary)]
    if summary["paired"]:
        lines += ["## Paired with the baseline", "", *paired_lines(summary)]
    lines += ["## Corruptions", "", settings["corruption_notes"], "", f"![Dice vs strength](plots/{PLOT_FILE})", "",
              "## Provenance", "", *provenance_lines, ""]
    return "\n".join(lines)
