"""The fair classification benchmark: validation held out of train, lr chosen on it, runs resumable."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_classification  # noqa: E402
from classification_data import ClassificationData, with_validation_split  # noqa: E402


def test_validation_is_taken_from_train_and_never_touches_test():
    labels = torch.arange(100) % 5
    images = torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1)
    data = ClassificationData(images, labels, images[:10] + 1000, labels[:10], [str(i) for i in range(5)], "t")
    split = with_validation_split(data, 0.2, seed=0)
    fit, val = set(split.train_images.flatten().tolist()), set(split.val_images.flatten().tolist())
    assert len(val) == 20 and not fit & val and fit | val == set(range(100))
    assert torch.equal(split.val_labels.bincount(), torch.full((5,), 4))  # stratified
    assert torch.equal(split.test_images, data.test_images)


def test_lr_is_chosen_on_validation_and_both_choices_get_every_seed(tmp_path, capsys):
    out = tmp_path / "classification.json"
    argv = ["--models", "resnet20", "--epochs", "1", "--seeds", "0", "1", "--lr-grid", "0.01", "0.1",
            "--wd-grid", "1e-3", "--poisson-peaks", "4", "--threads", "1", "--output", str(out)]
    results = bench_classification.main(argv)
    entry = results["variants"]["resnet20"]
    grid = entry["grid"]
    best = max(grid, key=grid.get)  # "lr, wd" keys in grid order; max keeps the first on ties
    assert entry["choices"]["tuned"]["lr"] == float(best.split(",")[0])
    for choice in ("paper", "tuned"):
        runs = entry["choices"][choice]["runs"]
        assert [r["seed"] for r in runs] == [0, 1] and all(r["steps"] == results["steps_per_run"] for r in runs)
        assert all(set(r["relative_drop_bn_reestimated"]) == {"4.0"} for r in runs)
    assert entry["choices"]["paper"]["lr"] == 0.1  # the paper's ResNet lr
    assert json.loads(out.read_text())["settings"]["poisson_protocol"].startswith("x in [0,1]")
    # the finished runs are kept: a second invocation with a new output trains nothing
    saved = json.loads(out.with_suffix(".partial.json").read_text())["runs"]
    # 2 grid points at seed 0 (one is the paper's), seed 1 at the paper's lr, and at the tuned one when it differs
    assert len(saved) == (3 if entry["choices"]["tuned"]["lr"] == 0.1 else 4)
    with pytest.raises(SystemExit):
        bench_classification.main(argv)  # the output exists and --overwrite was not given
