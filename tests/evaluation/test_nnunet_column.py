"""The nnU-Net protocol column equals what nnU-Net's own ``nnUNetv2_evaluate_folder`` writes.

Both run on the same folders: hand-made ones with reference-empty cases (with and without false
positives) and a label present in no case's reference, and the predictions of a trained model
(``nnUNetv2_predict`` output of the shared tiny model). Every label mean, every per-case Dice
and the foreground (nnU-Net's ``foreground_mean``) are compared; nnU-Net's NaN is our null.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pu_nnunet.evaluation import evaluate_folders

TOLERANCE = 1e-9
NNUNET_BIN = Path(sys.executable).parent


def nnunet_evaluate_folder(ref: Path, pred: Path, dataset_json: Path, plans: Path, out: Path) -> dict:
    env = dict(os.environ, nnUNet_def_n_proc="1", nnUNet_raw=str(out.parent), nnUNet_preprocessed=str(out.parent),
               nnUNet_results=str(out.parent))
    result = subprocess.run([str(NNUNET_BIN / "nnUNetv2_evaluate_folder"), str(ref), str(pred), "-djfile",
                             str(dataset_json), "-pfile", str(plans), "-o", str(out), "-np", "1"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())  # Python's json reads nnU-Net's bare NaN


def assert_same(ours_value, theirs_value, what):
    if theirs_value is None or math.isnan(theirs_value):
        assert ours_value is None, f"{what}: nnU-Net NaN, ours {ours_value}"
    else:
        assert ours_value is not None and abs(ours_value - theirs_value) < TOLERANCE, \
            f"{what}: ours {ours_value}, nnU-Net {theirs_value}"


def assert_equal_to_nnunet(ours: dict, theirs: dict, labels: list[int]) -> None:
    by_case = {Path(c["reference_file"]).name: c["metrics"] for c in theirs["metric_per_case"]}
    ending = ours["settings"]["file_ending"]
    for case in ours["cases"]:
        for label in labels:
            assert_same(case["labels"][str(label)]["dice"], by_case[case["case"] + ending][str(label)]["Dice"],
                        f"case {case['case']} label {label}")
    for label in labels:
        aggregate = ours["aggregates"][str(label)]
        assert_same(aggregate["dice_protocols"]["nnunet"], theirs["mean"][str(label)]["Dice"], f"label {label}")
        assert_same(aggregate["dice_mean_nnunet"], theirs["mean"][str(label)]["Dice"], f"label {label}")
        assert_same(aggregate["iou_mean_nnunet"], theirs["mean"][str(label)]["IoU"], f"label {label} IoU")
    foreground = ours["aggregates"]["foreground"]
    assert_same(foreground["dice_protocols"]["nnunet"], theirs["foreground_mean"]["Dice"], "foreground_mean")
    assert_same(foreground["iou_mean_nnunet"], theirs["foreground_mean"]["IoU"], "foreground_mean IoU")


@pytest.mark.slow
@pytest.mark.parametrize("absent_label", [False, True])
def test_nnunet_column_equals_nnunet_evaluate_folder(tmp_path, synth, plain_plans, absent_label):
    refs, preds = synth.random_pairs(synth.SHAPE_3D, n_cases=5, n_labels=3, seed=3)
    shape = synth.SHAPE_3D
    refs["empty_correct"], preds["empty_correct"] = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    refs["empty_fp"] = np.zeros(shape, np.uint8)
    preds["empty_fp"] = synth.box(shape, slice(0, 1), slice(0, 2), slice(0, 2), label=2)
    if absent_label:  # label 3 in no reference and no prediction: nnU-Net's mean and foreground_mean are NaN
        for arrays in (refs, preds):
            for array in arrays.values():
                array[array == 3] = 0
    dataset = tmp_path / "Dataset990_Equal"
    synth.write_cases(dataset / "labelsTs", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    (dataset / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1, "b": 2, "c": 3},
                                                      "file_ending": ".nii.gz", "channel_names": {"0": "CT"},
                                                      "numTraining": 7}))
    (tmp_path / "plans.json").write_text(json.dumps(plain_plans))
    theirs = nnunet_evaluate_folder(dataset / "labelsTs", tmp_path / "pred", dataset / "dataset.json",
                                    tmp_path / "plans.json", tmp_path / "summary.json")
    ours = evaluate_folders(tmp_path / "pred", dataset / "labelsTs", tmp_path / "ours", device="cpu", plots=False)
    assert ours["labels"] == [1, 2, 3]
    assert_equal_to_nnunet(ours, theirs, [1, 2, 3])
    # the old foreground value (the merged labels' nnU-Net-style mean) is not nnU-Net's foreground_mean here
    merged = [c["labels"]["foreground"]["dice"] for c in ours["cases"] if c["labels"]["foreground"]["dice"] is not None]
    assert abs(np.mean(merged) - theirs["foreground_mean"]["Dice"]) > 1e-3 or absent_label


@pytest.mark.slow
def test_nnunet_column_equals_nnunet_on_a_trained_models_predictions(tiny_trained_model, tmp_path):
    model = tiny_trained_model
    dataset = model["dataset"]
    plans = model["root"] / "preprocessed" / dataset.name / "nnUNetPlans.json"
    theirs = nnunet_evaluate_folder(dataset / "labelsTs", model["predictions"], dataset / "dataset.json", plans,
                                    tmp_path / "summary.json")
    ours = evaluate_folders(model["predictions"], dataset / "labelsTs", tmp_path / "ours", device="cpu",
                            dataset_json=dataset / "dataset.json", plots=False)
    assert_equal_to_nnunet(ours, theirs, ours["labels"])
    assert ours["provenance"]["files"]["plans"]["sha256"]  # nnUNetv2_predict's plans.json, hashed
