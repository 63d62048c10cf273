"""Convergence shown, not assumed: learning curves from nnU-Net's checkpoint or training logs and
the plateau criterion, on constructed logs."""

import pytest
import torch

from pu_nnunet.study.report.convergence import (PLATEAU_TOLERANCE, fold_convergence, learning_curves, parse_training_logs,
                                         plateau)


def test_plateau_compares_the_last_tenth_of_epochs_with_the_tenth_before():
    rising = [i / 100 for i in range(40)]  # +0.01 per epoch: windows of 4 epochs differ by 0.04
    verdict = plateau(rising)
    assert (verdict["window_epochs"], verdict["met"]) == (4, False)
    assert verdict["last_mean"] == pytest.approx(0.375) and verdict["previous_mean"] == pytest.approx(0.335)
    flat = [0.5] * 32 + [0.80, 0.80, 0.80, 0.80] + [0.804, 0.804, 0.804, 0.804]
    assert plateau(flat)["difference"] == pytest.approx(0.004) and plateau(flat)["met"] is True
    assert plateau(flat)["noise_se"] == 0.0 and plateau(flat)["within_noise"] is False
    # a flat but noisy curve: windows [0.9, 0.94] x2 then [0.9, 0.948] x2 differ by 0.004 < 2 se
    noisy = [0.9] * 36 + [0.9, 0.94, 0.9, 0.94] + [0.9, 0.948, 0.9, 0.948]
    verdict = plateau(noisy)
    assert verdict["difference"] == pytest.approx(0.004) and verdict["met"] is True
    assert verdict["noise_se"] == pytest.approx(((0.0016 / 3 + 0.002304 / 3) / 4) ** 0.5)
    assert verdict["within_noise"] is True
    assert PLATEAU_TOLERANCE == 0.005
    short = plateau([0.1, 0.2, 0.3])
    assert short["met"] is None and "fewer than two windows of 2" in short["why_not_judged"]


def _log(dice, start=0):
    lines = ["2026-12-07 01:00:00.000001: Using torch.compile...", ""]
    for epoch in range(start, start + len(dice)):
        lines += [f"2026-12-07 01:00:{epoch:02d}.000000: Epoch {epoch}",
                  f"2026-12-07 01:00:{epoch:02d}.100000: Current learning rate: 0.00991",
                  f"2026-12-07 01:00:{epoch:02d}.200000: train_loss {-0.1 * epoch:.4f}",
                  f"2026-12-07 01:00:{epoch:02d}.300000: val_loss {-0.05 * epoch:.4f}",
                  f"2026-12-07 01:00:{epoch:02d}.400000: Pseudo dice [np.float32({dice[epoch - start][0]}), "
                  f"np.float32({dice[epoch - start][1]})]",
                  f"2026-12-07 01:00:{epoch:02d}.500000: Epoch time: 1.5 s"]
    return "\n".join(lines) + "\n"


def test_training_logs_of_a_resumed_run_give_one_curve(tmp_path):
    first = tmp_path / "training_log_2026_12_7_01_00_00.txt"
    # the first log stops in epoch 2 (before its pseudo Dice): epoch 2 restarts in the second log
    first.write_text(_log([(0.2, 0.4), (0.3, 0.5)]) + "2026-12-07 01:00:02.000000: Epoch 2\n"
                     "2026-12-07 01:00:02.200000: train_loss -9.0\n")
    second = tmp_path / "training_log_2026_12_7_02_00_00.txt"
    second.write_text(_log([(0.5, 0.7), (0.6, float("nan"))], start=2).replace("np.float32(nan)", "nan"))
    curves = parse_training_logs([first, second])
    assert curves["mean_fg_dice"] == pytest.approx([0.3, 0.4, 0.6, 0.6])  # nan labels dropped (np.nanmean)
    assert curves["train_losses"] == pytest.approx([0.0, -0.1, -0.2, -0.3])
    assert curves["val_losses"][3] == pytest.approx(-0.15)
    # nnU-Net's EMA: 0.9 * previous + 0.1 * current
    assert curves["ema_fg_dice"] == pytest.approx([0.3, 0.31, 0.339, 0.3651])
    assert learning_curves(tmp_path)["source"] == f"{first.name}, {second.name}"


def test_the_checkpoint_logging_is_preferred(tmp_path):
    logging = {"train_losses": [0.5, 0.4], "val_losses": [0.6, float("nan")], "mean_fg_dice": [0.1, 0.2],
               "ema_fg_dice": [0.1, 0.11], "dice_per_class_or_region": [[0.1], [0.2]]}
    torch.save({"logging": logging, "current_epoch": 2}, tmp_path / "checkpoint_final.pth")
    (tmp_path / "training_log_x.txt").write_text(_log([(0.9, 0.9)]))
    result = fold_convergence(tmp_path)
    assert result["source"] == "checkpoint_final.pth"
    assert result["val_losses"] == [0.6, None] and result["mean_fg_dice"] == [0.1, 0.2]
    assert result["plateau"]["met"] is None  # 2 epochs
    assert fold_convergence(tmp_path / "absent") is None
