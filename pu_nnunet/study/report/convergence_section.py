"""The study report's Convergence and training stability section: every run's learning curves,
the plateau criterion (:mod:`pu_nnunet.study.report.convergence`) met or the run marked, and the run's
training_stability.json (``pu_nnunet.trainers.stability``): non-finite steps, gradient spikes,
final loss. Plot: ``plots/learning_curves.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from pu_nnunet.evaluation.report.markdown import number, table
from pu_nnunet.study.report.convergence import CRITERION, fold_convergence
from pu_nnunet.study.jobs import Job
from pu_nnunet.study.spec import Study
from pu_nnunet.trainers.stability import STABILITY_FILE, read_record

PLOT_FILE = "learning_curves.png"
STABILITY_FIELDS = ("nonfinite_losses", "nonfinite_grad_steps", "skipped_steps", "applied_nonfinite_steps",
                    "grad_norm_spikes", "clipped_steps", "max_grad_norm", "final_loss", "steps", "grad_scaler", "autocast")


def _stability(fold: Path) -> Optional[dict[str, Any]]:
    try:
        content = read_record(str(fold / STABILITY_FILE))
    except ValueError:  # a damaged file: the run is shown without its counts, not the report lost
        return {"unreadable": str(fold / STABILITY_FILE)}
    return None if content is None else {key: content.get(key) for key in STABILITY_FIELDS}


def convergence_summary(study: Study, jobs: Iterable[Job]) -> dict[str, Any]:
    """Per finished run: its curves, the plateau verdict and its stability record."""
    runs = []
    for job in sorted(jobs, key=lambda j: (j.trainer, j.repeat, j.fold)):
        fold = study.model_folder(job.trainer, job.repeat) / f"fold_{job.fold}"
        runs.append({"job": job.name, "trainer": job.trainer, "fold": job.fold, "repeat": job.repeat,
                     "curves": fold_convergence(fold), "stability": _stability(fold)})
    judged = [r for r in runs if r["curves"] and r["curves"]["plateau"]["met"] is not None]
    return {"criterion": CRITERION, "runs": runs, "n_runs": len(runs),
            "n_met": sum(1 for r in judged if r["curves"]["plateau"]["met"]),
            "n_not_met": sum(1 for r in judged if not r["curves"]["plateau"]["met"]),
            "n_not_judged": len(runs) - len(judged)}


def _verdict(curves: Optional[dict[str, Any]]) -> str:
    if curves is None:
        return "no curves (no checkpoint or training log)"
    met = curves["plateau"]["met"]
    if met is None:
        return "not judged: " + curves["plateau"]["why_not_judged"]
    if met:
        return "plateau"
    noise = curves["plateau"]["within_noise"]
    return "**NOT CONVERGED**" + (f" (change within 2 se of the pseudo-Dice noise, se {curves['plateau']['noise_se']:.4f})"
                                  if noise else "")


def markdown(section: Optional[dict[str, Any]], short_name: Callable[[str], str], plots_dir: str) -> list[str]:
    if not section or not section["runs"]:
        return []
    lines = ["## Convergence and training stability", "",
             f"Plateau criterion: {section['criterion']}. Met by {section['n_met']} of {section['n_runs']} runs; "
             f"not met by {section['n_not_met']} (marked NOT CONVERGED); not judged: {section['n_not_judged']}. "
             f"Curves: `{plots_dir}/{PLOT_FILE}`.", ""]
    rows = []
    for run in section["runs"]:
        curves, stability = run["curves"], run["stability"] or {}
        p = curves["plateau"] if curves else {}
        difference = p.get("difference")
        rows.append([short_name(run["trainer"]), run["fold"], run["repeat"], p.get("epochs", "-"),
                     number(p.get("previous_mean")), number(p.get("last_mean")),
                     "n/a" if difference is None else f"{difference:+.4f}", _verdict(curves),
                     stability.get("nonfinite_losses", "-"), stability.get("nonfinite_grad_steps", "-"),
                     stability.get("skipped_steps", "-"), stability.get("grad_norm_spikes", "-"),
                     number(stability.get("max_grad_norm"), 2), number(stability.get("final_loss")),
                     # records written before the field: nnU-Net's own choice (fp16 on CUDA, else float32)
                     stability.get("autocast") or ("-" if not stability else "as nnU-Net")])
    lines += [table(["trainer", "fold", "repeat", "epochs", "pseudo-Dice (window before)", "pseudo-Dice (last window)",
                     "change", "verdict", "non-finite losses", "non-finite gradients", "skipped (GradScaler)",
                     "gradient spikes", "max gradient norm", "final training loss", "training precision"], rows), "",
              "Gradient spikes: a norm above 10x the median of the previous 100 finite norms; gradient norms before "
              "nnU-Net's clipping at 12 (trainers/stability.py); '-': the run wrote no training_stability.json.", ""]
    return lines


def plot(section: Optional[dict[str, Any]], path: Path, short_name: Callable[[str], str]) -> None:
    """Validation pseudo-Dice (top) and training loss (bottom) per epoch, one line per run,
    one colour per trainer; dashed: a run that fails the plateau criterion."""
    if not section or not any(run["curves"] for run in section["runs"]):
        return
    from pu_nnunet.evaluation.report.evaluation_plots import pyplot_agg

    plt = pyplot_agg()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True)
    trainers = list(dict.fromkeys(run["trainer"] for run in section["runs"]))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for run in section["runs"]:
        curves = run["curves"]
        if not curves:
            continue
        colour = cycle[trainers.index(run["trainer"]) % len(cycle)]
        style = "--" if curves["plateau"]["met"] is False else "-"
        label = short_name(run["trainer"]) if run == next(r for r in section["runs"] if r["trainer"] == run["trainer"]) \
            else None
        for axis, key in ((top, "mean_fg_dice"), (bottom, "train_losses")):
            values = [float("nan") if v is None else v for v in curves[key]]
            axis.plot(range(len(values)), values, style, color=colour, linewidth=0.9, alpha=0.8, label=label)
    top.set_ylabel("validation pseudo-Dice")
    bottom.set_ylabel("training loss")
    bottom.set_xlabel("epoch")
    top.legend(fontsize=7)
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    top.set_title("Learning curves of every run (dashed: plateau criterion not met)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
