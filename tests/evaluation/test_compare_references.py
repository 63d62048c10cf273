"""compare refuses evaluations of different references, datasets or splits (naming the difference),
allows them with a flag and then says so, and compares only shared labels, saying which."""

import json
import re

import numpy as np
import pytest

from pu_nnunet.cli import main
from pu_nnunet.evaluation import EvaluationError, compare_evaluations, evaluate_folders


@pytest.fixture
def runs(tmp_path, synth):
    refs, preds = synth.hand_checked_3d()
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "eval_a", device="cpu", plots=False)
    return tmp_path, refs, preds


def evaluate(root, name, **kwargs):
    evaluate_folders(root / "pred", root / kwargs.pop("ref", "ref"), root / name, device="cpu", plots=False, **kwargs)
    return root / name


def test_different_case_sets_are_refused_then_allowed_and_reported(runs, synth):
    root, refs, preds = runs
    evaluate(root, "eval_b", cases=["overlap", "missed", "normal"])
    with pytest.raises(EvaluationError, match=r"not evaluated on the same references: different case sets "
                                              r"\(1 only in A: fp_only; 0 only in B: \).*--allow-different-references"):
        compare_evaluations(root / "eval_a", root / "eval_b", root / "cmp", plots=False)
    assert not (root / "cmp" / "comparison.json").exists()
    assert main(["compare", str(root / "eval_a"), str(root / "eval_b"), "-o", str(root / "cmp"), "--no-plots"]) == 1
    assert main(["compare", str(root / "eval_a"), str(root / "eval_b"), "-o", str(root / "cmp"), "--no-plots",
                 "--allow-different-references"]) == 0
    result = json.loads((root / "cmp" / "comparison.json").read_text())
    assert result["n_cases_compared"] == 3 and result["different_references"][0].startswith("different case sets")
    report = (root / "cmp" / "report.md").read_text()
    assert "**the evaluations were made on different references** (allowed with --allow-different-references)" in report
    assert (root / "cmp" / "provenance.json").is_file() and "## Provenance" in report


def test_different_reference_files_are_named(runs, synth):
    root, refs, _ = runs
    changed = dict(refs)
    changed["missed"] = synth.box(synth.SHAPE_3D, slice(0, 1), slice(0, 2), slice(0, 4))
    synth.write_cases(root / "ref2", changed, ".nii.gz")
    evaluate(root, "eval_b", ref="ref2")
    with pytest.raises(EvaluationError, match=r"different reference files for 1 case\(s\): missed"):
        compare_evaluations(root / "eval_a", root / "eval_b", root / "cmp", plots=False)


def test_different_dataset_json_or_split_is_refused(runs):
    root, _, _ = runs
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2},
                                                   "file_ending": ".nii.gz"}))
    evaluate(root, "eval_b", dataset_json=root / "dataset.json")
    with pytest.raises(EvaluationError, match=r"different dataset.json \(A: none, B: sha256 [0-9a-f]{12}\)"):
        compare_evaluations(root / "eval_a", root / "eval_b", root / "cmp", plots=False)
    split = root / "splits_final.json"
    split.write_text(json.dumps([{"train": [], "val": ["overlap", "fp_only", "normal", "missed"]}]))
    evaluate(root, "eval_c", split_file=split, cases=["overlap", "fp_only", "normal", "missed"])
    with pytest.raises(EvaluationError, match=r"different split file \(A: none, B: sha256"):
        compare_evaluations(root / "eval_a", root / "eval_c", root / "cmp", plots=False)


def test_only_shared_labels_are_compared_and_named(runs, capsys):
    root, _, _ = runs
    evaluate(root, "eval_b", labels=[1])
    assert main(["compare", str(root / "eval_a"), str(root / "eval_b"), "-o", str(root / "cmp"), "--no-plots"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "warning: the evaluations scored different labels" in captured.err
    assert "label 1 Dice" in out and "labels compared: 1 only (not compared: A ['2'])" in out
    assert "nan" not in out.lower()
    result = json.loads((root / "cmp" / "comparison.json").read_text())
    assert result["label_keys"] == ["1"] and result["labels_not_compared"] == {"A": ["2"], "B": []}
    report = re.sub(" +", " ", (root / "cmp" / "report.md").read_text())
    assert "**labels compared: 1 only**; not compared (scored by one run only): A ['2'], B none" in report
    assert "the foreground is not compared" in report
