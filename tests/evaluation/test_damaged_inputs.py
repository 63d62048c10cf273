"""evaluate and compare on damaged input: truncated files, values the format does not allow,
malformed JSON, bad splits, output folders that are inputs, interrupted --overwrite."""

import json

import numpy as np
import pytest

from pu_nnunet.cli import main
from pu_nnunet.evaluation.compare import compare_evaluations
from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.evaluation.evaluate import evaluate_folders


def evaluate(folders, out="out", **kwargs):
    return evaluate_folders(folders / "pred", folders / "ref", folders / out, device="cpu", plots=False,
                            dataset_json=folders / "dataset.json", **kwargs)


def cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("role", ["prediction", "reference"])
def test_truncated_gzip_is_named_not_scored(folders, role):
    """SimpleITK fills the missing part of a .nii.gz with zeros; that would be scored as it is."""
    path = cut_in_half(folders / ("pred" if role == "prediction" else "ref") / "overlap.nii.gz")
    with pytest.raises(EvaluationError) as error:
        evaluate(folders)
    assert str(error.value) == (f"{path}: truncated: the gzip stream ends before its end marker (file cut short?) "
                                f"({role} of case overlap)")
    assert not (folders / "out").exists()


def test_truncated_png_is_named(tmp_path, synth):
    synth.write_cases(tmp_path / "ref", {"a": synth.box(synth.SHAPE_2D, slice(2, 8), slice(2, 8))}, ".png")
    synth.write_cases(tmp_path / "pred", {"a": synth.box(synth.SHAPE_2D, slice(2, 8), slice(3, 9))}, ".png")
    path = cut_in_half(tmp_path / "pred" / "a.png")
    with pytest.raises(EvaluationError, match="a.png: damaged or truncated PNG"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", device="cpu", plots=False)
    assert path.is_file()


def test_a_0_255_mask_where_dataset_json_says_0_1(folders, synth):
    refs, _ = synth.hand_checked_3d()
    synth.write_nifti(folders / "ref" / "missed.nii.gz", (refs["missed"] > 0).astype(np.uint8) * 255)
    with pytest.raises(EvaluationError) as error:
        evaluate(folders)
    assert str(error.value).startswith(f"{folders / 'ref' / 'missed.nii.gz'}: label values [255] are not in "
                                       f"the labels of {folders / 'dataset.json'} (0, 1, 2)")


@pytest.mark.parametrize("content, problem", [
    ('{"labels": {"background": 0', "dataset.json is not valid JSON"),
    ("[1, 2]", "dataset.json must hold an object ({...}), found list"),
    ('{"labels": [0, 1]}', "labels must be an object"),
    ('{"labels": {"background": 0, "organ": 1}, "file_ending": 5}', "file_ending must be text"),
    ("", "dataset.json is not valid JSON (empty file)"),
])
def test_malformed_dataset_json(folders, content, problem):
    (folders / "dataset.json").write_text(content)
    with pytest.raises(EvaluationError) as error:
        evaluate(folders)
    assert str(error.value).startswith(f"{folders / 'dataset.json'}: ") and problem in str(error.value)


@pytest.mark.parametrize("content, problem", [
    ('{"missed": "benign"}', 'case missed must map to an object like {"class": "benign"}'),
    ('{"missed": {"split": "train"}}', 'case missed has no "class" text'),
    ("NaN", "cases.json is not valid JSON (non-standard JSON token NaN)"),
    ('["missed"]', "cases.json must hold an object"),
])
def test_malformed_cases_json(folders, content, problem):
    (folders / "cases.json").write_text(content)
    with pytest.raises(EvaluationError) as error:
        evaluate(folders, meta=folders / "cases.json")
    assert str(error.value).startswith(f"{folders / 'cases.json'}: ") and problem in str(error.value)


@pytest.mark.parametrize("splits, fold, problem", [
    ([{"train": ["a"], "val": ["missed"]}], -1, "no fold -1; the split file has folds 0 to 0"),
    ([{"train": ["a"], "val": ["missed"]}], 3, "no fold 3; the split file has folds 0 to 0"),
    ([{"train": ["missed"], "val": ["missed"]}], 0, "fold 0 has 1 case(s) in both train and val"),
    ([{"train": ["a"], "val": []}], 0, "fold 0 has no validation cases"),
    ([], 0, "the split file holds no fold"),
    ([{"train": "a", "val": ["b"]}], 0, 'fold 0 must be {"train": [case ids], "val": [case ids]}'),
])
def test_bad_split_files_and_folds(folders, capsys, splits, fold, problem):
    (folders / "splits.json").write_text(json.dumps(splits))
    code = main(["evaluate", str(folders / "pred"), str(folders / "ref"), "-o", str(folders / "out"),
                 "--split-file", str(folders / "splits.json"), "--fold", str(fold), "--device", "cpu"])
    assert code == 1
    assert capsys.readouterr().err == f"pu-nnunet evaluate: error: {folders / 'splits.json'}: {problem}" + (
        "" if problem.endswith("0 to 0") else _rest_of(problem, splits)) + "\n"


def _rest_of(problem, splits):
    if "both" in problem:
        return ", e.g. missed"
    if "must be" in problem:
        return f", found {str(splits[0])[:80]}"
    if "holds no fold" in problem:
        return " (an empty list)"
    return ""


def test_output_folder_that_is_an_input_or_anothers_output(folders, capsys):
    def run(*args):
        code = main(["evaluate", *map(str, args), "--device", "cpu", "--no-plots"])
        return code, capsys.readouterr().err

    assert run(folders / "pred", folders / "ref", "-o", folders / "pred") == (
        1, f"pu-nnunet evaluate: error: {folders / 'pred'}: the output folder is the prediction folder; choose "
           "another output folder\n")
    assert run(folders / "pred", folders / "ref", "-o", folders / "dataset.json") == (
        1, f"pu-nnunet evaluate: error: {folders / 'dataset.json'}: the output path is a file, expected a folder\n")
    assert run(folders / "pred", folders / "ref", "-o", folders / "a")[0] == 0
    assert run(folders / "pred", folders / "ref", "-o", folders / "b")[0] == 0
    assert main(["compare", str(folders / "a"), str(folders / "b"), "-o", str(folders / "a")]) == 1
    assert capsys.readouterr().err == (f"pu-nnunet compare: error: {folders / 'a'}: the output folder is the first "
                                       "evaluation; choose another output folder\n")
    assert main(["compare", str(folders / "a"), str(folders / "b"), "-o", str(folders / "c"), "--no-plots"]) == 0
    assert run(folders / "pred", folders / "ref", "-o", folders / "c", "--overwrite") == (
        1, f"pu-nnunet evaluate: error: {folders / 'c'}: holds the output of pu-nnunet compare (comparison.json); "
           "choose another output folder\n")
    long_name = folders / ("x" * 300)
    assert run(folders / "pred", folders / "ref", "-o", long_name) == (
        1, f"pu-nnunet evaluate: error: {long_name}: file name too long\n")


def test_interrupted_evaluate_overwrite_keeps_the_old_results(folders, monkeypatch, synth):
    from pu_nnunet.evaluation.report import evaluation_outputs

    evaluate(folders)
    before = {p.name: p.read_bytes() for p in (folders / "out").iterdir()}
    refs, _ = synth.hand_checked_3d()
    synth.write_cases(folders / "pred", refs, ".nii.gz")  # a perfect run: every result would change

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # after metrics.json was written into the temporary folder

    monkeypatch.setattr(evaluation_outputs, "write_per_case_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(folders, overwrite=True)
    assert {p.name: p.read_bytes() for p in (folders / "out").iterdir()} == before  # no hidden folder either
    monkeypatch.undo()
    results = evaluate(folders, overwrite=True)
    assert results["aggregates"]["foreground"]["dice_mean"] == 1.0
    assert json.loads((folders / "out" / "metrics.json").read_text())["aggregates"]["foreground"]["dice_mean"] == 1.0


def test_interrupted_compare_overwrite_keeps_the_old_results(folders, monkeypatch):
    from pu_nnunet.evaluation import compare

    evaluate(folders, "a")
    evaluate(folders, "b")
    compare_evaluations(folders / "a", folders / "b", folders / "cmp", plots=False)
    before = {p.name: p.read_bytes() for p in (folders / "cmp").iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "_write_paired_csv", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compare_evaluations(folders / "a", folders / "b", folders / "cmp", names=("x", "y"), overwrite=True,
                            plots=False)
    assert {p.name: p.read_bytes() for p in (folders / "cmp").iterdir()} == before


@pytest.mark.parametrize("damage, problem", [
    (lambda m: json.dumps(m)[:200], "evaluation metrics is not valid JSON"),
    (lambda m: json.dumps({"something": 1}), 'not a complete pu-nnunet evaluate metrics.json (no "cases" and '
                                             '"labels" lists)'),
    (lambda m: json.dumps({**m, "cases": [{**m["cases"][0], "labels": {}}]}),
     "not a complete pu-nnunet evaluate metrics.json (a malformed case entry"),
    (lambda m: json.dumps({**m, "format": "someone-else/2"}), "format 'someone-else/2'"),
])
def test_malformed_metrics_json_in_compare(folders, damage, problem):
    metrics = evaluate(folders, "a")
    evaluate(folders, "b")
    path = folders / "b" / "metrics.json"
    path.write_text(damage(json.loads(path.read_text())))
    with pytest.raises(EvaluationError) as error:
        compare_evaluations(folders / "a", folders / "b", folders / "cmp", plots=False)
    assert str(error.value).startswith(f"{path}: ") and problem in str(error.value)
    assert metrics["format"] == "pu-nnunet-evaluation/1"


def test_negative_labels_are_refused(folders):
    with pytest.raises(EvaluationError, match="--labels: label values are 0 or more, got -1"):
        evaluate(folders, labels=[-1, 1])
