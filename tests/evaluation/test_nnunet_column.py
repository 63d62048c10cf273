"""The nnU-Net protocol column equals what nnU-Net's own ``nnUNetv2_evaluate_folder`` writes.

Both run on the same folders: hand-made ones with reference-empty cases (with and without false
positives), a label present in no case's reference, a case without a prediction (nnU-Net scores
only the predicted cases, with ``--chill``) and an ignore label, and the predictions of a
trained model (``nnUNetv2_predict`` output of the shared tiny model). Every label mean, every
per-case Dice and the foreground (nnU-Net's ``foreground_mean``) are compared; nnU-Net's NaN is
our null. The fast tests call nnU-Net's ``compute_metrics_on_folder`` in this process (its
spawn pool swapped for threads); the slow ones run ``nnUNetv2_evaluate_folder`` itself.
"""

import json
import math
import os
import subprocess
import sys
from multiprocessing.pool import ThreadPool
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pu_nnunet.evaluation import EvaluationError, evaluate_folders

TOLERANCE = 1e-9
NNUNET_BIN = Path(sys.executable).parent


def nnunet_evaluate_folder(ref: Path, pred: Path, dataset_json: Path, plans: Path, out: Path,
                           chill: bool = False) -> dict:
    env = dict(os.environ, nnUNet_def_n_proc="1", nnUNet_raw=str(out.parent), nnUNet_preprocessed=str(out.parent),
               nnUNet_results=str(out.parent))
    result = subprocess.run([str(NNUNET_BIN / "nnUNetv2_evaluate_folder"), str(ref), str(pred), "-djfile",
                             str(dataset_json), "-pfile", str(plans), "-o", str(out), "-np", "1",
                             *(["--chill"] if chill else [])],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())  # Python's json reads nnU-Net's bare NaN


def assert_same(ours_value, theirs_value, what):
    if theirs_value is None or math.isnan(theirs_value):
        assert ours_value is None, f"{what}: nnU-Net NaN, ours {ours_value}"
    else:
        assert ours_value is not None and abs(ours_value - theirs_value) < TOLERANCE, \
            f"{what}: ours {ours_value}, nnU-Net {theirs_value}"


def nnunet_in_process(monkeypatch, ref: Path, pred: Path, labels: list, ignore_label: int | None) -> dict:
    """nnU-Net's compute_metrics_on_folder (chill: cases without a prediction are skipped) with
    threads in place of its spawn Pool (4 s a call, mostly imports); the per-case code is nnU-Net's."""
    from nnunetv2.evaluation import evaluate_predictions
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    fake = SimpleNamespace(get_context=lambda method: SimpleNamespace(Pool=ThreadPool))
    monkeypatch.setattr(evaluate_predictions, "multiprocessing", fake)
    result = evaluate_predictions.compute_metrics_on_folder(str(ref), str(pred), None, SimpleITKIO(), ".nii.gz",
                                                            labels, ignore_label=ignore_label, num_processes=1,
                                                            chill=True)
    # the keys and NaNs as summary.json has them
    return json.loads(json.dumps({
        "metric_per_case": [{"reference_file": c["reference_file"],
                             "metrics": {str(k): {m: float(v) for m, v in metrics.items()}
                                         for k, metrics in c["metrics"].items()}}
                            for c in result["metric_per_case"]],
        "mean": {str(k): {m: float(v) for m, v in means.items()} for k, means in result["mean"].items()},
        "foreground_mean": {m: float(v) for m, v in result["foreground_mean"].items()}}))


def assert_equal_to_nnunet(ours: dict, theirs: dict, labels: list) -> None:
    by_case = {Path(c["reference_file"]).name: c["metrics"] for c in theirs["metric_per_case"]}
    ending = ours["settings"]["file_ending"]
    predicted = [case for case in ours["cases"] if not case["missing_prediction"]]
    assert sorted(by_case) == sorted(case["case"] + ending for case in predicted)  # nnU-Net skips the others
    for case in predicted:
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


# nnU-Net's region-based labels (BraTS style): nested regions written back as the values of
# regions_class_order; "enhancing" is a single value, which nnU-Net keys "3"
REGION_LABELS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3, "ignore": 4}
PLAIN_LABELS = {"background": 0, "a": 1, "b": 2, "c": 3, "ignore": 4}


@pytest.fixture(scope="module", params=["labels", "regions"])
def missing_and_ignored(request, tmp_path_factory, synth):
    """3 label values, the ignore label 4 (nnU-Net: the highest value) over a slab of every
    reference where the predictions keep their labels, one reference-empty case with a false
    positive and one case without a prediction; a dataset.json of plain labels or of regions."""
    root = tmp_path_factory.mktemp(f"nnunet_missing_{request.param}")
    refs, preds = synth.random_pairs(synth.SHAPE_3D, n_cases=5, n_labels=3, seed=5)
    refs["empty_fp"] = np.zeros(synth.SHAPE_3D, np.uint8)
    preds["empty_fp"] = synth.box(synth.SHAPE_3D, slice(0, 1), slice(0, 2), slice(0, 2), label=1)
    for case, ref in refs.items():
        ref[:, :, :3] = 4  # not annotated: nnU-Net scores no voxel there
    del preds["case_01"]  # a missing prediction: ours scores it empty, nnU-Net (--chill) skips it
    synth.write_cases(root / "labelsTs", refs, ".nii.gz")
    synth.write_cases(root / "pred", preds, ".nii.gz")
    labels = REGION_LABELS if request.param == "regions" else PLAIN_LABELS
    (root / "dataset.json").write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz", "numTraining": 6,
                                                   "channel_names": {"0": "CT"},
                                                   **({"regions_class_order": [1, 2, 3]}
                                                      if request.param == "regions" else {})}))
    ours = evaluate_folders(root / "pred", root / "labelsTs", root / "ours", device="cpu",
                            dataset_json=root / "dataset.json")
    return root, ours, request.param


def nnunet_classes(kind: str) -> list:
    """What nnU-Net evaluates for the dataset.json: its LabelManager's foreground regions or labels."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    manager = LabelManager(REGION_LABELS if kind == "regions" else PLAIN_LABELS,
                           [1, 2, 3] if kind == "regions" else None)
    return manager.foreground_regions if manager.has_regions else manager.foreground_labels


def test_nnunet_column_with_a_missing_prediction_and_an_ignore_label(missing_and_ignored, monkeypatch):
    root, ours, kind = missing_and_ignored
    assert ours["missing_predictions"] == ["case_01"] and ours["settings"]["ignore_label"] == 4
    classes = nnunet_classes(kind)
    keys = [str(c) for c in classes]  # nnU-Net's summary.json keys
    assert [str(key) for key in ours["labels"]] == keys
    if kind == "regions":
        assert keys == ["(1, 2, 3)", "(2, 3)", "3"]
        assert ours["regions"] == {"(1, 2, 3)": [1, 2, 3], "(2, 3)": [2, 3], "3": [3]}
        assert ours["label_names"] == {"(1, 2, 3)": "whole", "(2, 3)": "core", "3": "enhancing"}
        assert "regions of a region-based dataset.json" in (root / "ours" / "report.md").read_text()
        with pytest.raises(EvaluationError, match="defines regions"):  # --labels picks values, not regions
            evaluate_folders(root / "pred", root / "labelsTs", root / "refused", device="cpu", labels=[1],
                             dataset_json=root / "dataset.json", plots=False)
    theirs = nnunet_in_process(monkeypatch, root / "labelsTs", root / "pred", classes, ignore_label=4)
    assert_equal_to_nnunet(ours, theirs, keys)
    # the other protocols still count the missing case as a failure (Dice 0 where it has a label)
    missed = next(c for c in ours["cases"] if c["case"] == "case_01")
    scored = [k for k in keys if not missed["labels"][k]["ref_empty"]]
    assert scored and all(missed["labels"][k]["dice"] == 0.0 for k in scored)
    defined = [c["labels"][scored[0]]["dice"] for c in ours["cases"] if c["labels"][scored[0]]["dice"] is not None]
    old_value = np.mean(defined)  # the missing case's 0 averaged in, as before this column followed --chill
    assert ours["aggregates"][scored[0]]["dice_protocols"]["nnunet"] > old_value + 0.01
    assert (root / "ours" / "plots" / "overlay_worst.png").is_file()


@pytest.mark.slow
def test_nnunet_column_equals_nnunet_evaluate_folder_chill(missing_and_ignored, plain_plans, tmp_path):
    root, ours, kind = missing_and_ignored
    (tmp_path / "plans.json").write_text(json.dumps(plain_plans))
    theirs = nnunet_evaluate_folder(root / "labelsTs", root / "pred", root / "dataset.json", tmp_path / "plans.json",
                                    tmp_path / "summary.json", chill=True)
    assert_equal_to_nnunet(ours, theirs, [str(c) for c in nnunet_classes(kind)])
