"""evaluate_folders: hand-computed values, and equality with nnU-Net's compute_metrics_on_folder."""

import json
from multiprocessing.pool import ThreadPool
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pu_nnunet.evaluation import evaluate_folders

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def hand_checked(tmp_path_factory, synth):
    root = tmp_path_factory.mktemp("hand")
    refs, preds = synth.hand_checked_3d()
    synth.write_cases(root / "ref", refs, ".nii.gz")
    synth.write_cases(root / "pred", preds, ".nii.gz")
    meta = synth.write_meta(root / "cases.json", {"overlap": "malignant", "fp_only": "normal", "normal": "normal",
                                            "missed": "benign"})
    results = evaluate_folders(root / "pred", root / "ref", root / "out", device="cpu", meta=meta, plots=False)
    return results, {c["case"]: c for c in results["cases"]}, root


def test_hand_computed_case_values(hand_checked, synth):
    _, cases, _ = hand_checked
    one = cases["overlap"]["labels"]["1"]
    assert (one["tp"], one["fp"], one["fn"], one["n_ref"], one["n_pred"]) == (12, 6, 12, 24, 18)
    assert one["dice"] == pytest.approx(24 / 42, abs=1e-12)
    assert one["iou"] == pytest.approx(12 / 30, abs=1e-12)
    # NIfTI headers store spacing as float32, hence a relative tolerance on volumes
    assert one["ref_volume"] == pytest.approx(24 * synth.VOXEL_ML, rel=1e-6)
    assert one["pred_volume"] == pytest.approx(18 * synth.VOXEL_ML, rel=1e-6)
    foreground = cases["overlap"]["labels"]["foreground"]  # labels 1 and 2 merged
    assert (foreground["tp"], foreground["fp"], foreground["fn"]) == (20, 6, 12)
    assert foreground["dice"] == pytest.approx(40 / 58, abs=1e-12)
    assert cases["overlap"]["volume_unit"] == "ml"

    fp_two = cases["fp_only"]["labels"]["2"]
    assert fp_two["ref_empty"] and fp_two["false_positive"] and fp_two["dice"] == 0.0
    assert cases["normal"]["labels"]["foreground"]["dice"] is None
    assert cases["normal"]["labels"]["foreground"]["false_positive"] is False
    missed = cases["missed"]["labels"]["1"]
    assert missed["dice"] == 0.0 and missed["false_negative"] is True and missed["false_positive"] is None


def test_hand_computed_aggregates(hand_checked):
    results, _, _ = hand_checked
    one, two, fg = (results["aggregates"][k] for k in ("1", "2", "foreground"))
    # label 1: Dice 24/42 (overlap) and 0 (missed) over its two reference-non-empty cases
    assert one["dice_mean"] == pytest.approx((24 / 42 + 0) / 2)
    assert one["dice_std"] == pytest.approx(np.std([24 / 42, 0], ddof=1))
    assert (one["false_negative_cases"], one["false_negative_rate"]) == (1, 0.5)
    # label 2: reference-empty in fp_only, normal, missed; fp_only predicts 3 voxels
    assert (two["n_reference_empty"], two["false_positive_cases"]) == (3, 1)
    assert two["false_positive_rate"] == pytest.approx(1 / 3)
    assert two["dice_mean"] == 1.0 and two["dice_std"] is None
    assert two["dice_mean_nnunet"] == pytest.approx(0.5)  # nnU-Net averages the FP case's 0 in
    assert (fg["n_reference_empty"], fg["false_positive_cases"], fg["false_positive_rate"]) == (2, 1, 0.5)
    assert fg["dice_mean"] == pytest.approx((40 / 58 + 0) / 2)


def test_per_class_aggregates(hand_checked):
    per_class = hand_checked[0]["per_class"]
    assert sorted(per_class) == ["benign", "malignant", "normal"]
    normal = per_class["normal"]["foreground"]
    assert (normal["n_cases"], normal["n_reference_empty"], normal["false_positive_rate"]) == (2, 2, 0.5)
    assert normal["dice_mean"] is None
    assert per_class["malignant"]["1"]["dice_mean"] == pytest.approx(24 / 42)


def test_metrics_json_is_strict(hand_checked):
    def reject(token):
        raise ValueError(f"invalid JSON constant {token}")

    text = (hand_checked[2] / "out" / "metrics.json").read_text()
    content = json.loads(text, parse_constant=reject)
    by_case = {c["case"]: c for c in content["cases"]}
    assert by_case["normal"]["labels"]["foreground"]["dice"] is None  # empty/empty: null, not NaN
    assert content["aggregates"]["2"]["dice_std"] is None  # one case: no sample std
    assert "NaN" not in text


def _nnunet_in_process(monkeypatch, ref, pred, reader, ending, labels):
    """nnU-Net's compute_metrics_on_folder, its spawn Pool swapped for threads in this process.

    It always starts a spawn Pool (4 s per call here, mostly imports); a thread pool runs the
    same per-case code, so the numbers are nnU-Net's own.
    """
    from nnunetv2.evaluation import evaluate_predictions

    fake = SimpleNamespace(get_context=lambda method: SimpleNamespace(Pool=ThreadPool))
    monkeypatch.setattr(evaluate_predictions, "multiprocessing", fake)
    return evaluate_predictions.compute_metrics_on_folder(str(ref), str(pred), None, reader, ending, labels,
                                                          ignore_label=None, num_processes=1)


@pytest.mark.parametrize("ending,n_labels", [(".nii.gz", 1), (".nii.gz", 3), (".png", 1), (".png", 3)])
def test_equal_to_nnunet(tmp_path, monkeypatch, ending, n_labels, synth):
    from nnunetv2.imageio.natural_image_reader_writer import NaturalImage2DIO
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    shape = synth.SHAPE_2D if ending == ".png" else synth.SHAPE_3D
    refs, preds = synth.random_pairs(shape, n_cases=5, n_labels=n_labels, seed=n_labels)
    refs["empty"], preds["empty"] = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    synth.write_cases(tmp_path / "ref", refs, ending)
    synth.write_cases(tmp_path / "pred", preds, ending)
    labels = list(range(1, n_labels + 1))
    reader = NaturalImage2DIO() if ending == ".png" else SimpleITKIO()
    theirs = _nnunet_in_process(monkeypatch, tmp_path / "ref", tmp_path / "pred", reader, ending, labels)
    theirs_by_case = {c["prediction_file"].split("/")[-1][: -len(ending)]: c["metrics"]
                      for c in theirs["metric_per_case"]}
    for device in ("cpu", "torch-cpu"):
        ours = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / device, device=device,
                                labels=labels, plots=False)
        assert ours["settings"]["reader"] == type(reader).__name__
        assert ours["volume_unit"] == ("pixels" if ending == ".png" else "ml")
        for case in ours["cases"]:
            for label in labels:
                mine, nnunet = case["labels"][str(label)], theirs_by_case[case["case"]][label]
                for ours_key, their_key in (("dice", "Dice"), ("iou", "IoU")):
                    if np.isnan(nnunet[their_key]):
                        assert mine[ours_key] is None
                    else:
                        assert abs(mine[ours_key] - nnunet[their_key]) < TOLERANCE
                assert (mine["tp"], mine["fp"], mine["fn"]) == (nnunet["TP"], nnunet["FP"], nnunet["FN"])
        for label in labels:
            aggregate = ours["aggregates"][str(label)]
            assert abs(aggregate["dice_mean_nnunet"] - theirs["mean"][label]["Dice"]) < TOLERANCE
            assert abs(aggregate["iou_mean_nnunet"] - theirs["mean"][label]["IoU"]) < TOLERANCE
        macro = ours["aggregates"]["mean_over_labels"]
        assert abs(macro["dice_mean_nnunet"] - theirs["foreground_mean"]["Dice"]) < TOLERANCE
        # the foreground's nnU-Net value is nnU-Net's foreground_mean, not the merged labels' mean
        foreground = ours["aggregates"]["foreground"]
        assert abs(foreground["dice_mean_nnunet"] - theirs["foreground_mean"]["Dice"]) < TOLERANCE
        assert abs(foreground["dice_protocols"]["nnunet"] - theirs["foreground_mean"]["Dice"]) < TOLERANCE


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False")
def test_cuda_equal_to_cpu(tmp_path, synth):
    refs, preds = synth.random_pairs(synth.SHAPE_3D, n_cases=4, n_labels=3, seed=11)
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    cpu = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "cpu", device="cpu", plots=False)
    cuda = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "cuda", device="cuda", plots=False)
    assert cuda["settings"]["device_used"] == "cuda"
    assert cuda["cases"] == cpu["cases"] and cuda["aggregates"] == cpu["aggregates"]


@pytest.mark.slow  # over 8 s on 2 cores: the full suite runs it, the quick lane does not
def test_two_processes_equal_one(tmp_path, synth):
    refs, preds = synth.random_pairs(synth.SHAPE_3D, n_cases=3, n_labels=2, seed=7)
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    one = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "one", device="cpu", plots=False)
    two = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "two", device="cpu", plots=False,
                           num_processes=2)
    assert one["cases"] == two["cases"]
