"""Convergence of one nnU-Net run, shown rather than assumed: its learning curves and a stated
plateau criterion.

The curves are nnU-Net's own per-epoch log (``train_losses``, ``val_losses``, ``mean_fg_dice``,
``ema_fg_dice``): from the ``logging`` dict of ``checkpoint_final.pth`` (else
``checkpoint_latest.pth``), else parsed from the fold's ``training_log_*.txt`` (a study folder
kept without checkpoints; a resumed run's later log wins for the epochs it repeats).

Plateau criterion: the mean validation pseudo-Dice (nnU-Net's ``mean_fg_dice``) of the last
:data:`PLATEAU_FRACTION` of the epochs lies within :data:`PLATEAU_TOLERANCE` of its mean over the
same number of epochs before them. Runs too short to have two windows of
:data:`MIN_WINDOW_EPOCHS` are not judged (``met`` None).

The pseudo-Dice of one epoch is measured on a few random validation patches (nnU-Net's
``num_val_iterations_per_epoch`` x batch size), so the two window means differ by noise alone;
``noise_se`` (the standard error of that difference, from the epochs' spread in each window)
says whether the fixed tolerance can be met at all: a flat curve whose ``noise_se`` is above the
tolerance fails the criterion by chance (``within_noise``: the difference is within
:data:`NOISE_MULTIPLE` standard errors). The verdict stays the stated criterion's.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

# issue 27: "the validation pseudo-Dice of the last 10 % of epochs within 0.005 of the 10 % before"
PLATEAU_FRACTION = 0.10
PLATEAU_TOLERANCE = 0.005
# one epoch's pseudo-Dice (nnU-Net validates on a few patches) is too noisy to be a window
MIN_WINDOW_EPOCHS = 2
# nnU-Net's logger: ema_fg_dice = 0.9 * previous + 0.1 * mean_fg_dice (nnunetv2/training/logging)
EMA_WEIGHT = 0.9
# "within noise": the difference of the window means lies within 2 of its standard errors
NOISE_MULTIPLE = 2.0
CURVE_KEYS = ("train_losses", "val_losses", "mean_fg_dice", "ema_fg_dice")
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth")
CRITERION = (f"mean validation pseudo-Dice of the last {PLATEAU_FRACTION:.0%} of epochs within "
             f"{PLATEAU_TOLERANCE} of the {PLATEAU_FRACTION:.0%} before (windows of at least "
             f"{MIN_WINDOW_EPOCHS} epochs)")

# nnU-Net's print_to_log_file: "<datetime>: <message>"; the pseudo Dice is a list of numpy scalars
_LINE = re.compile(r"^\d{4}-\d{2}-\d{2} [\d:.]+: (.*)$")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan")


def _finite_or_none(value: Any) -> Optional[float]:
    value = float(value)
    return value if math.isfinite(value) else None


def _from_checkpoint(path: Path) -> dict[str, list]:
    import torch

    logging = torch.load(path, map_location="cpu", weights_only=False).get("logging") or {}
    return {key: [_finite_or_none(v) for v in logging.get(key, [])] for key in CURVE_KEYS}


def _numbers(text: str) -> list[float]:
    cleaned = re.sub(r"np\.float\d+\(", "", text)
    return [float(n) for n in _NUMBER.findall(cleaned)]


def parse_training_logs(paths: list[Path]) -> dict[str, list]:
    """nnU-Net's training_log_*.txt files of one fold, oldest first, into per-epoch curves."""
    epochs: dict[int, dict[str, Any]] = {}
    for path in paths:
        epoch = None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _LINE.match(line.strip())
            if not match:
                continue
            message = match.group(1)
            if re.fullmatch(r"Epoch \d+", message):
                epoch = int(message.split()[1])
                epochs[epoch] = {}  # a resumed run's later log replaces the epoch it repeats
            elif epoch is not None and message.startswith(("train_loss ", "val_loss ")):
                key = "train_losses" if message.startswith("train_loss") else "val_losses"
                epochs[epoch][key] = _finite_or_none(_numbers(message.split(" ", 1)[1])[0])
            elif epoch is not None and message.startswith("Pseudo dice"):
                values = [v for v in _numbers(message[len("Pseudo dice"):]) if not math.isnan(v)]
                epochs[epoch]["mean_fg_dice"] = float(np.mean(values)) if values else None
    curves: dict[str, list] = {key: [] for key in CURVE_KEYS}
    ema = None
    for epoch in range(max(epochs) + 1 if epochs else 0):
        entry = epochs.get(epoch, {})
        if "mean_fg_dice" not in entry:
            break  # an epoch that did not finish (the run was stopped in it)
        for key in ("train_losses", "val_losses", "mean_fg_dice"):
            curves[key].append(entry.get(key))
        value = entry["mean_fg_dice"]
        ema = value if ema is None or value is None else EMA_WEIGHT * ema + (1 - EMA_WEIGHT) * value
        curves["ema_fg_dice"].append(ema)
    return curves


def learning_curves(fold_dir: str | Path) -> Optional[dict[str, Any]]:
    """Per-epoch curves of a fold folder and where they came from; None when it holds neither a
    checkpoint nor a training log."""
    fold_dir = Path(fold_dir)
    for name in CHECKPOINTS:
        if (fold_dir / name).is_file():
            return {"source": name, **_from_checkpoint(fold_dir / name)}
    logs = sorted(fold_dir.glob("training_log_*.txt"))
    if logs:
        return {"source": ", ".join(p.name for p in logs), **parse_training_logs(logs)}
    return None


def plateau(values: list[Optional[float]], fraction: float = PLATEAU_FRACTION,
            tolerance: float = PLATEAU_TOLERANCE) -> dict[str, Any]:
    """The plateau criterion on one curve (the validation pseudo-Dice)."""
    n = len(values)
    window = max(MIN_WINDOW_EPOCHS, int(round(fraction * n)))
    result = {"criterion": CRITERION, "epochs": n, "window_epochs": window, "last_mean": None, "previous_mean": None,
              "difference": None, "met": None, "noise_se": None, "within_noise": None}
    if n < 2 * window:
        return {**result, "why_not_judged": f"{n} epochs: fewer than two windows of {window}"}
    last, previous = values[-window:], values[-2 * window:-window]
    if any(v is None for v in last + previous):
        return {**result, "why_not_judged": "an undefined pseudo-Dice in the windows"}
    last_mean, previous_mean = float(np.mean(last)), float(np.mean(previous))
    difference = last_mean - previous_mean
    noise_se = math.sqrt((np.var(last, ddof=1) + np.var(previous, ddof=1)) / window)
    return {**result, "last_mean": last_mean, "previous_mean": previous_mean, "difference": difference,
            "met": abs(difference) <= tolerance, "noise_se": noise_se,
            "within_noise": abs(difference) <= NOISE_MULTIPLE * noise_se}


def fold_convergence(fold_dir: str | Path) -> Optional[dict[str, Any]]:
    """Learning curves and the plateau verdict of one run (nnU-Net's fold_F folder)."""
    curves = learning_curves(fold_dir)
    if curves is None:
        return None
    return {**curves, "plateau": plateau(curves["mean_fg_dice"])}
