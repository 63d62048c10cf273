"""Writing into nnUNet_raw: names, refusal of existing targets, and all-or-nothing writes."""

import pytest

from pu_nnunet.datasets.synthetic import ct as synthetic_ct
from pu_nnunet.datasets.errors import DatasetError, EnvironmentNotSetError, TargetExistsError
from pu_nnunet.datasets.shared.raw_folder import atomic_dataset_folder, dataset_folder_name, raw_root_from_environment


def test_folder_names_and_environment(monkeypatch, tmp_path):
    assert dataset_folder_name(7, "KvasirSEG") == "Dataset007_KvasirSEG"
    for bad_id, bad_name in ((0, "A"), (1000, "A"), (5, "two words"), (5, "../x")):
        with pytest.raises(DatasetError):
            dataset_folder_name(bad_id, bad_name)
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(EnvironmentNotSetError, match="nnUNet_raw is not set"):
        raw_root_from_environment()
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))  # read at call time, not import time
    assert raw_root_from_environment() == tmp_path


def test_existing_target_and_same_id_refused(tmp_path):
    (tmp_path / "Dataset004_Other").mkdir()
    with pytest.raises(TargetExistsError, match="Dataset004_Other already uses dataset id 4"):
        with atomic_dataset_folder(tmp_path, 4, "Mine", overwrite=True):
            pass
    (tmp_path / "Dataset005_Mine").mkdir()
    with pytest.raises(TargetExistsError, match="Dataset005_Mine already exists; pass --overwrite"):
        with atomic_dataset_folder(tmp_path, 5, "Mine"):
            pass


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_ct, "_write_pair", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic_ct.generate_synthetic_ct(tmp_path, 9, num_cases=4, num_test=1, shape=(6, 24, 24))
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch):
    old = synthetic_ct.generate_synthetic_ct(tmp_path, 9, num_cases=3, num_test=1, shape=(6, 24, 24))
    before = sorted(p.relative_to(old) for p in old.rglob("*"))

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synthetic_ct, "_write_pair", failing)
    with pytest.raises(OSError, match="disk full"):
        synthetic_ct.generate_synthetic_ct(tmp_path, 9, num_cases=5, num_test=1, shape=(6, 24, 24), overwrite=True)
    assert sorted(p.relative_to(old) for p in old.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == [old.name]
