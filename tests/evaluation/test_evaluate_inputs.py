"""evaluate_folders on bad or unusual input: missing, extra, mismatched, unreadable cases."""

import csv
import json

import numpy as np
import pytest

from pu_nnunet.evaluation import EvaluationError, evaluate_folders


@pytest.fixture
def folders(tmp_path, synth):
    refs, preds = synth.hand_checked_3d()
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    return tmp_path


def test_missing_prediction_is_a_failure(folders):
    (folders / "pred" / "overlap.nii.gz").unlink()
    results = evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", plots=False)
    assert results["missing_predictions"] == ["overlap"]
    overlap = next(c for c in results["cases"] if c["case"] == "overlap")
    assert overlap["missing_prediction"] is True
    assert overlap["labels"]["1"]["dice"] == 0.0 and overlap["labels"]["1"]["fn"] == 24
    assert overlap["labels"]["foreground"]["false_negative"] is True
    # overlap and missed both scored 0 for label 1
    assert results["aggregates"]["1"]["dice_mean"] == 0.0
    report = (folders / "out" / "report.md").read_text()
    assert "Missing predictions" in report and "`overlap`" in report


def test_extra_prediction_is_ignored_with_warning(folders, synth):
    synth.write_nifti(folders / "pred" / "stray.nii.gz", np.ones(synth.SHAPE_3D, np.uint8))
    with pytest.warns(UserWarning, match="stray"):
        results = evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", plots=False)
    assert results["extra_predictions"] == ["stray"]
    assert "stray" not in {c["case"] for c in results["cases"]}


def test_shape_mismatch_names_the_case(folders, synth):
    synth.write_nifti(folders / "pred" / "missed.nii.gz", np.zeros((6, 10, 11), np.uint8))
    with pytest.raises(EvaluationError, match="case missed: prediction shape"):
        evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", plots=False)
    assert not (folders / "out" / "metrics.json").exists()


def test_geometry_mismatch_names_the_case(folders, synth):
    synth.write_nifti(folders / "pred" / "normal.nii.gz", np.zeros(synth.SHAPE_3D, np.uint8), spacing=(0.8, 0.9, 3.0))
    with pytest.raises(EvaluationError, match="case normal: prediction spacing"):
        evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", plots=False)
    synth.write_nifti(folders / "pred" / "normal.nii.gz", np.zeros(synth.SHAPE_3D, np.uint8), origin=(5.0, 0.0, 0.0))
    with pytest.raises(EvaluationError, match="case normal: prediction origin"):
        evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", plots=False)


def test_unreadable_file_names_the_case(folders):
    (folders / "pred" / "fp_only.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(EvaluationError, match=r"fp_only.nii.gz: not a gzip-compressed file .*prediction of case fp_only"):
        evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", plots=False)


def test_no_matching_prediction_at_all(folders, tmp_path):
    (tmp_path / "empty_pred").mkdir()
    with pytest.raises(EvaluationError, match="none of the 4 reference cases"):
        evaluate_folders(tmp_path / "empty_pred", folders / "ref", folders / "out", device="cpu", plots=False)


def test_existing_results_need_overwrite(folders):
    evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", plots=False)
    marker = (folders / "out" / "metrics.json").read_text()
    with pytest.raises(EvaluationError, match="--overwrite"):
        evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", min_size=5, plots=False)
    assert (folders / "out" / "metrics.json").read_text() == marker
    results = evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", min_size=5,
                               overwrite=True, plots=False)
    assert json.loads((folders / "out" / "metrics.json").read_text())["settings"]["min_size"] == 5
    # K = 5 > the 3 voxels predicted in fp_only: no false positive left
    assert results["aggregates"]["foreground"]["false_positive_cases"] == 0


def test_dataset_json_names_labels_and_ignore_label(folders, synth):
    (folders / "dataset.json").write_text(json.dumps({
        "labels": {"background": 0, "liver": 1, "tumour": 2, "ignore": 4}, "file_ending": ".nii.gz"}))
    # voxels marked 4 (ignore) in the reference are not scored: the prediction's label 1 there is no FP
    synth.write_nifti(folders / "ref" / "normal.nii.gz", synth.box(synth.SHAPE_3D, slice(0, 2), slice(0, 2), slice(0, 2), label=4))
    synth.write_nifti(folders / "pred" / "normal.nii.gz", synth.box(synth.SHAPE_3D, slice(0, 2), slice(0, 2), slice(0, 2), label=1))
    results = evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", plots=False)
    assert results["settings"]["dataset_json"] == str(folders / "dataset.json")  # found as REF_DIR/../
    assert results["labels"] == [1, 2]
    assert results["label_names"] == {"1": "liver", "2": "tumour"}
    normal = next(c for c in results["cases"] if c["case"] == "normal")["labels"]["1"]
    assert (normal["fp"], normal["false_positive"]) == (0, False)


def test_per_case_csv_rows(folders):
    evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", labels=[1, 2], plots=False)
    rows = list(csv.DictReader(open(folders / "out" / "per_case.csv")))
    assert len(rows) == 4 * 3  # cases x (labels 1, 2, foreground)
    overlap_one = next(r for r in rows if r["case"] == "overlap" and r["label"] == "1")
    assert float(overlap_one["dice"]) == pytest.approx(24 / 42)
    assert (overlap_one["tp"], overlap_one["fp"], overlap_one["fn"]) == ("12", "6", "12")
    normal_fg = next(r for r in rows if r["case"] == "normal" and r["label"] == "foreground")
    assert normal_fg["dice"] == "" and normal_fg["false_positive"] == "False"


def test_invalid_arguments(folders):
    with pytest.raises(EvaluationError, match="min-size"):
        evaluate_folders(folders / "pred", folders / "ref", folders / "out", min_size=0)
    with pytest.raises(EvaluationError, match="background"):
        evaluate_folders(folders / "pred", folders / "ref", folders / "out", device="cpu", labels=[0, 1])
    with pytest.raises(EvaluationError, match="reference folder not found"):
        evaluate_folders(folders / "pred", folders / "nowhere", folders / "out")


def test_fold_selection_evaluates_only_that_folds_validation_cases(folders):
    from pu_nnunet.cli import main

    refs = sorted(p.name[:-len(".nii.gz")] for p in (folders / "ref").glob("*.nii.gz"))
    chosen = refs[:2]
    for case in refs[2:]:  # the other cases were never predicted, as in nnU-Net's fold_0/validation
        (folders / "pred" / f"{case}.nii.gz").unlink()
    splits = folders / "splits_final.json"
    splits.write_text(json.dumps([{"train": refs[2:], "val": chosen}]))
    assert main(["evaluate", str(folders / "pred"), str(folders / "ref"), "-o", str(folders / "out"),
                 "--split-file", str(splits), "--fold", "0", "--no-plots", "--device", "cpu"]) == 0
    results = json.loads((folders / "out" / "metrics.json").read_text())
    assert [c["case"] for c in results["cases"]] == chosen and results["missing_predictions"] == []
    # a fold naming a case without a reference is an error that names it
    splits.write_text(json.dumps([{"train": [], "val": chosen + ["ghost"]}]))
    with pytest.raises(EvaluationError, match="ghost"):
        evaluate_folders(folders / "pred", folders / "ref", folders / "out2", device="cpu", plots=False,
                         cases=chosen + ["ghost"])
    assert main(["evaluate", str(folders / "pred"), str(folders / "ref"), "-o", str(folders / "out3"),
                 "--split-file", str(splits), "--fold", "3"]) == 1


@pytest.mark.parametrize("marker", ["model_record.json", "predict_from_raw_data_args.json", "summary.json",
                                    "overlap.npz"])
def test_swapped_folders_are_refused(folders, capsys, marker):
    """Issue 28: ``evaluate REF PRED`` (nnUNetv2_evaluate_folder's order) gives the same Dice but
    exchanges false positives and false negatives: refused when REF_DIR looks like predictions and
    PRED_DIR does not; --reference-is-a-prediction scores one model against another."""
    from pu_nnunet.cli import main

    (folders / "pred" / marker).write_text("{}")
    code = main(["evaluate", str(folders / "ref"), str(folders / "pred"), "-o", str(folders / "out"), "--device",
                 "cpu", "--no-plots", "--no-boundary"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"pu-nnunet evaluate: error: {folders / 'pred'}: REF_DIR looks like a folder of predictions "
                          f"(it holds {marker}) and PRED_DIR {folders / 'ref'} does not: are the folders swapped?"), err
    assert not (folders / "out").exists()
    # in the right order it runs; so does a comparison against another model's predictions when asked
    assert main(["evaluate", str(folders / "pred"), str(folders / "ref"), "-o", str(folders / "out"), "--device",
                 "cpu", "--no-plots", "--no-boundary"]) == 0
    assert main(["evaluate", str(folders / "ref"), str(folders / "pred"), "-o", str(folders / "out2"), "--device",
                 "cpu", "--no-plots", "--no-boundary", "--reference-is-a-prediction"]) == 0
