"""The operating-point plot: one curve per model (trainer and run), FPR on normal cases against
lesion sensitivity (left) and lesion Dice (right)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pu_nnunet.evaluation.report.evaluation_plots import pyplot_agg


def plot_curves(results: dict[str, dict[str, Any]], path: Path, colours: dict[str, Any] | None = None,
                title: str | None = None) -> None:
    """``results``: name -> operating_points.json content. Each model: its grid points (faint),
    its frontier (line), its default point (circle) and nnU-Net's postprocessing point (cross)."""
    plt = pyplot_agg()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, result) in enumerate(results.items()):
        colour = (colours or {}).get(name, cycle[index % len(cycle)])
        points = [p for p in result["points"] if p["fpr"] is not None]
        curve = result["frontier"]
        left.scatter([p["lesion_sensitivity"] for p in points], [p["fpr"] for p in points], s=6, alpha=0.25,
                     color=colour)
        left.plot([p["lesion_sensitivity"] for p in curve], [p["fpr"] for p in curve], color=colour, label=name,
                  linewidth=1.3, drawstyle="default")
        right.scatter([p["lesion_dice"] for p in points], [p["fpr"] for p in points], s=6, alpha=0.25, color=colour)
        right.plot([p["lesion_dice"] for p in curve], [p["fpr"] for p in curve], color=colour, linewidth=1.3)
        for marker, point in (("o", result["default_point"]), ("x", result["nnunet_postprocessing"])):
            if point.get("fpr") is not None:
                left.scatter([point["lesion_sensitivity"]], [point["fpr"]], marker=marker, s=40, color=colour,
                             zorder=3)
                right.scatter([point["lesion_dice"]], [point["fpr"]], marker=marker, s=40, color=colour, zorder=3)
    left.set_xlabel("lesion sensitivity (reference components hit)")
    left.set_ylabel("image-level FPR on normal cases")
    right.set_xlabel("lesion Dice (mean over lesion cases)")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.set_ylim(-0.03, 1.03)
    left.legend(fontsize=7, loc="upper left")
    figure.suptitle(title or "Operating points: lines = lowest FPR per sensitivity; o = label map, every "
                             "component; x = nnU-Net's postprocessing", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
