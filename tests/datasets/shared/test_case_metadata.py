"""cases.json writing: entries without "class" or a known "split" raise, under python -O too."""

import json

import pytest

from pu_nnunet.datasets.shared.case_metadata import CASES_FILE_NAME, write_cases_json


def test_writes_sorted_cases(tmp_path):
    path = write_cases_json(tmp_path, {"b": {"class": "normal", "split": "test"},
                                       "a": {"class": "benign", "split": "train", "source_files": ["x.png"]}})
    assert path == tmp_path / CASES_FILE_NAME
    assert list(json.loads(path.read_text())) == ["a", "b"]


@pytest.mark.parametrize("entry", [{"split": "train"}, {"class": "benign"}, {"class": "benign", "split": "val"},
                                   "benign"])
def test_refuses_entries_the_evaluation_cannot_use(tmp_path, entry):
    with pytest.raises(ValueError, match=r"cases\['case_7'\] must be an object with \"class\" and \"split\""):
        write_cases_json(tmp_path, {"case_7": entry})
    assert not (tmp_path / CASES_FILE_NAME).exists()
