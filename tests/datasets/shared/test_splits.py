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


def test_one_split_writer_and_one_default_seed(tmp_path):
    """Issue 28: every split file this package writes comes from write_splits, and every split
    whose seed the user did not give uses nnU-Net's own seed: the converters' --seed, the split
    functions and the study's split of a dataset without one (equal to nnUNetTrainer.do_split's)."""
    import inspect
    from pathlib import Path
    from types import SimpleNamespace

    import pu_nnunet
    from pu_nnunet import cli
    from pu_nnunet.datasets.converters.busi import convert_busi
    from pu_nnunet.datasets.converters.kvasir import convert_kvasir
    from pu_nnunet.datasets.converters.registry import CONVERTERS
    from pu_nnunet.datasets.shared import splits
    from pu_nnunet.study.execution.steps import _write_nnunet_split

    assert splits.NNUNET_SPLIT_SEED == 12345
    for function in (splits.cross_validation_splits, splits.holdout_split, splits.stratified_holdout,
                     splits.stratified_group_folds, convert_busi, convert_kvasir):
        assert inspect.signature(function).parameters["seed"].default == splits.NNUNET_SPLIT_SEED, function
    parser = cli.build_parser(cli.COMMANDS, only="convert")
    seeded = [key for key, converter in CONVERTERS.items() if any("--seed" in o.flags for o in converter.options)]
    assert seeded and all(parser.parse_args(["convert", key, "src", "-d", "5"]).seed == 12345 for key in seeded)

    # the study's split: the one writer, nnU-Net's own folds
    raw = tmp_path / "raw"
    (raw / "imagesTr").mkdir(parents=True)
    ids = [f"case_{i:02d}" for i in range(7)]
    for case in ids:
        (raw / "imagesTr" / f"{case}_0000.nii.gz").touch()
    target = tmp_path / "pre" / "splits_final.json"
    target.parent.mkdir()
    _write_nnunet_split(SimpleNamespace(dataset_json=lambda: {"file_ending": ".nii.gz"}, raw_dataset=lambda: raw),
                        target)
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    expected = [{"train": list(s["train"]), "val": list(s["val"])} for s in generate_crossval_split(ids, 12345, 5)]
    assert json.loads(target.read_text()) == expected
    assert target.read_text().startswith("[\n    {")  # write_splits: nnU-Net's indent of 4

    # nnU-Net's fold builder is called in splits.py only
    callers = [str(path.relative_to(Path(pu_nnunet.__file__).parents[1]))
               for root in ("pu_nnunet", "trainers", "architectures", "benchmarks")
               for path in (Path(pu_nnunet.__file__).parents[1] / root).rglob("*.py")
               if "generate_crossval_split(" in path.read_text()]
    assert callers == ["pu_nnunet/datasets/shared/splits.py"]
