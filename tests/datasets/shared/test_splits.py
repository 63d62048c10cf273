"""Split construction and installing splits_final.json into nnUNet_preprocessed."""

import json

import pytest

from pu_nnunet.datasets.errors import DatasetError, SourceLayoutError
from pu_nnunet.datasets.shared.splits import (cross_validation_splits, install_splits, stratified_group_folds,
                                       stratified_holdout)

CLASSES = {f"b{i}": "benign" for i in range(10)} | {f"m{i}": "malignant" for i in range(6)} | {
    f"n{i}": "normal" for i in range(4)}


def test_cross_validation_equals_nnunet_default():
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    ids = [f"case_{i:02d}" for i in range(12)]
    ours = cross_validation_splits(list(reversed(ids)))
    theirs = generate_crossval_split(ids, seed=12345, n_splits=5)
    assert ours == [{"train": list(s["train"]), "val": list(s["val"])} for s in theirs]
    assert len(cross_validation_splits(ids[:3])) == 3
    with pytest.raises(DatasetError):
        cross_validation_splits(ids[:1])


def test_stratified_holdout_counts_classes_and_groups():
    rest, held = stratified_holdout(list(CLASSES), CLASSES, 0.25, seed=0)
    assert len(held) == 5 and {CLASSES[c] for c in held} == {"benign", "malignant", "normal"}
    assert sorted(rest + held) == sorted(CLASSES)
    assert stratified_holdout(list(CLASSES), CLASSES, 0.25, seed=0) == (rest, held)
    groups = {"b0": "g", "m0": "g", "n0": "g"}
    for seed in range(10):
        rest, held = stratified_holdout(list(CLASSES), CLASSES, 0.25, seed=seed, groups=groups)
        assert len({("b0" in held), ("m0" in held), ("n0" in held)}) == 1
    _, exact = stratified_holdout(list(CLASSES), CLASSES, 0.5, seed=1, num_held_out=7)
    assert len(exact) == 7


def test_stratified_group_folds():
    folds = stratified_group_folds(list(CLASSES), CLASSES, seed=0, groups={"b1": "g", "b2": "g"})
    assert len(folds) == 5
    assert sorted(sum((f["val"] for f in folds), [])) == sorted(CLASSES)
    for fold in folds:
        assert {CLASSES[c] for c in fold["val"]} >= {"benign", "malignant"}
        assert ("b1" in fold["val"]) == ("b2" in fold["val"])
        assert not set(fold["train"]) & set(fold["val"])


def test_install_splits(tmp_path, monkeypatch):
    from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct

    raw, preprocessed = tmp_path / "raw", tmp_path / "preprocessed"
    folder = generate_synthetic_ct(raw, 12, num_cases=4, num_test=1, shape=(6, 24, 24))
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(preprocessed))
    with pytest.raises(SourceLayoutError, match="run nnUNetv2_plan_and_preprocess -d 12 first"):
        install_splits(12)
    (preprocessed / folder.name).mkdir(parents=True)
    written = install_splits(12)
    assert written == preprocessed / folder.name / "splits_final.json"
    assert json.loads(written.read_text()) == json.loads((folder / "splits_final.json").read_text())
    (folder / "splits_final.json").write_text(json.dumps([{"train": ["case_000"], "val": ["nope"]}]))
    with pytest.raises(DatasetError, match="names cases that are not in"):
        install_splits(12)
    with pytest.raises(SourceLayoutError, match="no folder named Dataset013_"):
        install_splits(13)
