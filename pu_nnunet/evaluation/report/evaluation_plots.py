"""PNG plots of one evaluation: the per-label Dice distribution and contour overlays.

Overlays show the cases with the highest and the lowest foreground Dice: reference contours
solid, prediction contours dashed, one colour per label. 2D cases are drawn whole; 3D cases at
the axial slice with the most reference foreground voxels (most predicted voxels when the
reference is empty). The image comes from ``--images`` (nnU-Net's CASE_0000 files); without
it the contours are drawn on a blank background.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pu_nnunet.evaluation.case_io import DatasetInfo, read_case, read_display_image
from pu_nnunet.evaluation.metrics.case_metrics import FOREGROUND

DICE_PLOT_FILE = "dice_distribution.png"
BEST_OVERLAY_FILE = "overlay_best.png"
WORST_OVERLAY_FILE = "overlay_worst.png"

# Panels per overlay figure (best cases in one, worst in the other).
OVERLAY_CASES = 3
# Display window of a grey image: these percentiles of the slice map to black and white, so CT
# and MRI both show soft tissue without a modality-specific window.
DISPLAY_PERCENTILES = (1.0, 99.0)
# 8-bit RGB images (NaturalImage2DIO) are scaled by this to [0, 1].
RGB_MAX = 255.0
FIGURE_DPI = 110
PANEL_INCHES = 4.0
LEGEND_INCHES = 1.2
# Width per label in the Dice distribution plot; 16 AMOS labels give a 13-inch figure.
INCHES_PER_LABEL = 0.75
MIN_DICE_PLOT_INCHES = 5.0
CONTOUR_WIDTH = 1.6
# Fixed seed for the horizontal jitter of case points, so reruns give identical plots.
JITTER_SEED = 0
JITTER_WIDTH = 0.12


def pyplot_agg():
    """matplotlib.pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_dice_distribution(results: dict[str, Any], path: Path) -> None:
    plt = pyplot_agg()
    keys = [str(label) for label in results["labels"]] + [FOREGROUND]
    values = [[c["labels"][k]["dice"] for c in results["cases"] if not c["labels"][k]["ref_empty"]] for k in keys]
    names = [results["label_names"].get(k, k) for k in keys]
    width = max(MIN_DICE_PLOT_INCHES, INCHES_PER_LABEL * len(keys))
    fig, ax = plt.subplots(figsize=(width, 4.5))
    positions = np.arange(1, len(keys) + 1)
    filled = [(p, v) for p, v in zip(positions, values) if v]
    if filled:
        ax.boxplot([v for _, v in filled], positions=[p for p, _ in filled], widths=0.5, showfliers=False)
    rng = np.random.default_rng(JITTER_SEED)
    for position, case_values in zip(positions, values):
        jitter = rng.uniform(-JITTER_WIDTH, JITTER_WIDTH, len(case_values))
        ax.scatter(position + jitter, case_values, s=10, alpha=0.6, color="tab:blue", zorder=3)
    ax.set_xticks(positions, [f"{n} (n={len(v)})" for n, v in zip(names, values)], rotation=45, ha="right",
                  fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("Dice (cases whose reference has the label)")
    ax.set_title("Dice per label")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def label_colour(index: int) -> tuple:
    """tab20's ten dark colours first, then their light partners: neighbouring labels differ."""
    palette = pyplot_agg().get_cmap("tab20")
    return palette((2 * index) % palette.N + (2 * index // palette.N) % 2)


def _slice_index(ref: np.ndarray, pred: np.ndarray, labels: list[int]) -> int:
    """Axial slice with the most reference foreground (else prediction) voxels."""
    for volume in (ref, pred):
        per_slice = np.isin(volume, labels).reshape(volume.shape[0], -1).sum(axis=1)
        if per_slice.any():
            return int(per_slice.argmax())
    return volume.shape[0] // 2


def _display(image: np.ndarray | None, shape: tuple[int, ...]) -> tuple[np.ndarray, str | None]:
    if image is None:
        return np.ones(shape), "gray"  # blank (white) background
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        return np.clip(image[..., :3] / RGB_MAX, 0, 1), None
    low, high = np.percentile(image, DISPLAY_PERCENTILES)
    return np.clip((image - low) / max(high - low, np.finfo(float).eps), 0, 1), "gray"


def _draw_overlay(ax, results: dict[str, Any], case: dict[str, Any], ref_dir: Path, pred_dir: Path,
                  images_dir: Path | None, info: DatasetInfo) -> None:
    from matplotlib.lines import Line2D

    pair = read_case(case["case"], None if case["missing_prediction"] else pred_dir, ref_dir, info)
    pred = pair.pred if pair.pred is not None else np.zeros_like(pair.ref)
    # label key -> label values (a region of a region-based dataset.json has several)
    classes = results.get("regions") or {str(label): [label] for label in results["labels"]}
    z = 0 if pair.is_2d else _slice_index(pair.ref, pred, sorted({v for values in classes.values() for v in values}))
    image = read_display_image(images_dir, case["case"], info)
    background, cmap = _display(None if image is None else image[z], pair.ref.shape[1:])
    spacing = pair.spacing[1:]
    ax.imshow(background, cmap=cmap, vmin=0, vmax=1, aspect=spacing[0] / spacing[1], interpolation="nearest")
    height, width = pair.ref.shape[1:]
    # a one-voxel frame closes the contours of structures touching the image border
    rows, columns = np.arange(-1, height + 1), np.arange(-1, width + 1)
    handles = []
    for index, (label, values) in enumerate(classes.items()):
        colour = label_colour(index)
        drawn = False
        for volume, style in ((pair.ref, "solid"), (pred, "dashed")):
            mask = np.isin(volume[z], values)
            if mask.any():
                ax.contour(columns, rows, np.pad(mask, 1), levels=[0.5], colors=[colour], linestyles=style,
                           linewidths=CONTOUR_WIDTH)
                drawn = True
        if drawn:
            handles.append(Line2D([], [], color=colour, label=results["label_names"].get(str(label), str(label))))
    handles += [Line2D([], [], color="black", linestyle="solid", label="reference"),
                Line2D([], [], color="black", linestyle="dashed", label="prediction")]
    ax.set_xlim(-0.5, width - 0.5)  # the image's extent, not the padded contour grid's
    ax.set_ylim(height - 0.5, -0.5)
    # beside the panel, so that it hides no contour
    ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fg = case["labels"][FOREGROUND]
    where = "" if pair.is_2d else f", slice z={z}"
    note = " (missing prediction)" if case["missing_prediction"] else ""
    dice = "n/a" if fg["dice"] is None else f"{fg['dice']:.3f}"
    ax.set_title(f"{case['case']}{note}\nforeground Dice {dice}{where}", fontsize=9)
    ax.set_xticks([])  # no ticks, but keep the frame: it marks the image's extent on a blank background
    ax.set_yticks([])


def plot_overlays(results: dict[str, Any], cases: list[dict[str, Any]], title: str, path: Path,
                  info: DatasetInfo) -> None:
    plt = pyplot_agg()
    s = results["settings"]
    images_dir = Path(s["images_dir"]) if s["images_dir"] else None
    fig, axes = plt.subplots(1, len(cases), figsize=((PANEL_INCHES + LEGEND_INCHES) * len(cases), PANEL_INCHES + 0.6), squeeze=False)
    for ax, case in zip(axes[0], cases):
        _draw_overlay(ax, results, case, Path(s["ref_dir"]), Path(s["pred_dir"]), images_dir, info)
    background = "image" if images_dir else "blank background (no --images)"
    fig.suptitle(f"{title}\nreference solid, prediction dashed; {background}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def best_and_worst(results: dict[str, Any], count: int = OVERLAY_CASES) -> tuple[list[dict], list[dict]]:
    """Cases with a non-empty reference, by foreground Dice: (best first, worst first), disjoint."""
    scored = [c for c in results["cases"] if not c["labels"][FOREGROUND]["ref_empty"]]
    scored.sort(key=lambda c: (c["labels"][FOREGROUND]["dice"], c["case"]))
    # with fewer than 2 * count cases, the worse half is "worst" and the better half "best"
    n_worst = min(count, (len(scored) + 1) // 2)
    n_best = min(count, len(scored) - n_worst)
    return scored[::-1][:n_best], scored[:n_worst]


def write_evaluation_plots(results: dict[str, Any], out_dir: Path, plots_dir: Path, info: DatasetInfo) -> list[str]:
    """Writes the PNGs; returns their paths relative to ``out_dir`` for the report."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = [plots_dir / DICE_PLOT_FILE]
    plot_dice_distribution(results, written[0])
    best, worst = best_and_worst(results)
    for cases, title, name in ((best, "Highest foreground Dice", BEST_OVERLAY_FILE),
                               (worst, "Lowest foreground Dice", WORST_OVERLAY_FILE)):
        if cases:
            plot_overlays(results, cases, title, plots_dir / name, info)
            written.append(plots_dir / name)
    return [str(path.relative_to(out_dir)) for path in written]
