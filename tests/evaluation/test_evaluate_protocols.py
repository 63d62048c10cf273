"""evaluate's four Dice protocols on hand-built folders, the exact FP/FN intervals, provenance.json,
and the input checks that name a file (other file ending, --labels in no file, 0/255 masks)."""

import json
import re

import numpy as np
import pytest
from scipy.stats import binomtest

from pu_nnunet.evaluation import EvaluationError, evaluate_folders
from pu_nnunet.provenance import MODEL_RECORD_FILE, RUN_RECORD_FILE, sha256_file


@pytest.fixture(scope="module")
def hand_checked(tmp_path_factory, synth):
    root = tmp_path_factory.mktemp("protocols")
    refs, preds = synth.hand_checked_3d()
    synth.write_cases(root / "ref", refs, ".nii.gz")
    synth.write_cases(root / "pred", preds, ".nii.gz")
    (root / "pred" / MODEL_RECORD_FILE).write_text(json.dumps({"trainer": "nnUNetTrainerPURe", "folds": ["0"],
                                                               "checkpoint_sha256": {"0": "ab" * 32}}))
    results = evaluate_folders(root / "pred", root / "ref", root / "out", device="cpu", plots=False)
    return results, root


def test_protocols_by_hand(hand_checked):
    """hand_checked_3d: overlap (label 1 Dice 24/42, TP 12 FP 6 FN 12; label 2 exact, 8 voxels),
    fp_only (empty reference, 3 voxels of label 2), normal (empty/empty), missed (10 voxels of
    label 1 not predicted)."""
    aggregates = hand_checked[0]["aggregates"]
    one, two, fg = (aggregates[key]["dice_protocols"] for key in ("1", "2", "foreground"))
    assert one == pytest.approx({"per_case_nonempty": (24 / 42) / 2, "nnunet": (24 / 42) / 2,
                                 "per_case_empty_as_one": (24 / 42 + 1 + 1) / 4, "pooled": 24 / 52})
    assert two == pytest.approx({"per_case_nonempty": 1.0, "nnunet": 0.5,  # the FP case counts 0
                                 "per_case_empty_as_one": (1 + 0 + 1 + 1) / 4, "pooled": 16 / 19})
    assert fg == pytest.approx({"per_case_nonempty": (40 / 58) / 2,
                                "nnunet": ((24 / 42) / 2 + 0.5) / 2,  # nnU-Net's foreground_mean: mean of label means
                                "per_case_empty_as_one": (40 / 58 + 0 + 1 + 0) / 4, "pooled": 40 / 71})
    assert aggregates["foreground"]["dice_mean_nnunet"] == pytest.approx(((24 / 42) / 2 + 0.5) / 2)


def test_false_positive_and_negative_rates_have_exact_intervals(hand_checked):
    aggregates = hand_checked[0]["aggregates"]
    fp = aggregates["2"]  # 1 of 3 reference-empty cases
    expected = binomtest(1, 3).proportion_ci(method="exact")
    assert fp["false_positive_rate_ci"] == pytest.approx([expected.low, expected.high])
    fn = aggregates["1"]  # 1 of 2 reference-non-empty cases
    expected = binomtest(1, 2).proportion_ci(method="exact")
    assert fn["false_negative_rate_ci"] == pytest.approx([expected.low, expected.high])


def test_report_shows_the_protocols_and_provenance(hand_checked):
    results, root = hand_checked
    report = (root / "out" / "report.md").read_text()
    assert "## Dice protocols" in report and "pooled (all voxels at once)" in report
    assert "0.5634" in report  # the foreground's pooled Dice 40/71
    assert "[0.0084, 0.9057]" in report  # the FP rate 1/3's Clopper-Pearson interval
    assert "## Provenance" in report and "- code: pu-nnunet" in report and "- model: nnUNetTrainerPURe" in report
    record = json.loads((root / "out" / RUN_RECORD_FILE).read_text())
    assert record["model"]["checkpoint_sha256"] == {"0": "ab" * 32}  # predict's model record, as found
    assert record["device"] == "cpu" and record["libraries"]["nnunetv2"]
    expected_hashes = {c["case"]: sha256_file(root / "ref" / f"{c['case']}.nii.gz") for c in results["cases"]}
    assert {c["case"]: c["reference_sha256"] for c in results["cases"]} == expected_hashes
    assert record["references"]["n_cases"] == 4 and record["references"] == results["references"]


def test_all_empty_case_set(tmp_path, synth):
    empty = {f"case_{i}": np.zeros(synth.SHAPE_3D, np.uint8) for i in range(3)}
    synth.write_cases(tmp_path / "labelsTs", empty, ".nii.gz")
    synth.write_cases(tmp_path / "pred", empty, ".nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1},
                                                       "file_ending": ".nii.gz"}))
    results = evaluate_folders(tmp_path / "pred", tmp_path / "labelsTs", tmp_path / "out", device="cpu", plots=False)
    for key in ("1", "foreground"):
        aggregate = results["aggregates"][key]
        assert aggregate["dice_protocols"] == {"per_case_nonempty": None, "nnunet": None,
                                               "per_case_empty_as_one": 1.0, "pooled": None}
        assert aggregate["false_positive_rate"] == 0.0
        assert aggregate["false_positive_rate_ci"] == pytest.approx([0.0, 1 - 0.025 ** (1 / 3)])
        assert aggregate["false_negative_rate_ci"] is None
    json.loads((tmp_path / "out" / "metrics.json").read_text(),
               parse_constant=lambda token: pytest.fail(f"invalid JSON {token}"))
    assert not re.search(r"\bnan\b", (tmp_path / "out" / "report.md").read_text(), re.IGNORECASE)


def test_a_prediction_under_another_ending_is_named(tmp_path, synth):
    refs, preds = synth.hand_checked_3d()
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", {k: v for k, v in preds.items() if k != "missed"}, ".nii.gz")
    synth.write_nifti(tmp_path / "pred" / "missed.nii", preds["missed"])
    with pytest.raises(EvaluationError, match=r"end in another file ending .*\(\.nii\.gz\): missed\.nii;"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", device="cpu", plots=False)


def test_labels_in_no_file_are_an_error(tmp_path, synth):
    refs, preds = synth.hand_checked_3d()
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    with pytest.raises(EvaluationError, match=r"--labels: 4 occur\(s\) in no reference and no prediction"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", device="cpu", labels=[1, 4],
                         plots=False)


def test_0_255_predictions_against_0_1_references_are_flagged(tmp_path, synth):
    refs = {"a": synth.box(synth.SHAPE_3D, slice(0, 2), slice(0, 3), slice(0, 3)),
            "b": synth.box(synth.SHAPE_3D, slice(1, 3), slice(2, 5), slice(2, 5))}
    preds = {case: (array * 255).astype(np.uint8) for case, array in refs.items()}
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    with pytest.raises(EvaluationError, match=r"pred/a\.nii\.gz: predictions hold label values \[0, 255\], the "
                                              r"references \[0, 1\]; a 0/255 mask"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", device="cpu", plots=False)
    # named explicitly, the labels are scored as asked (255 never overlaps 1: Dice 0)
    results = evaluate_folders(tmp_path / "pred", tmp_path / "ref", tmp_path / "out", device="cpu", labels=[1],
                               plots=False)
    assert results["aggregates"]["1"]["dice_mean"] == 0.0


def test_boundary_metrics_in_records_aggregates_csv_and_report(hand_checked):
    """hand_checked_3d: label 2 exact in overlap (NSD 1, HD95 0), a 3-voxel false positive in
    fp_only (NSD 0, HD95 undefined); label 1 missed entirely in missed (NSD 0, HD95 undefined)."""
    results, root = hand_checked
    cases = {c["case"]: c["labels"] for c in results["cases"]}
    assert cases["overlap"]["2"]["nsd"] == 1.0 and cases["overlap"]["2"]["hd95"] == 0.0
    assert (cases["fp_only"]["2"]["nsd"], cases["fp_only"]["2"]["hd95"]) == (0.0, None)
    assert (cases["missed"]["1"]["nsd"], cases["missed"]["1"]["hd95"]) == (0.0, None)
    assert (cases["normal"]["foreground"]["nsd"], cases["normal"]["foreground"]["hd95"]) == (None, None)
    assert 0.0 < cases["overlap"]["1"]["nsd"] < 1.0 and cases["overlap"]["1"]["hd95"] > 0.0
    two = results["aggregates"]["2"]
    assert (two["nsd_mean"], two["n_hd95"], two["hd95_median"]) == (1.0, 1, 0.0)
    # NSD under the Dice protocols: nnU-Net's rule counts the FP case's 0; empty/empty counts 1
    assert two["nsd_protocols"] == pytest.approx({"per_case_nonempty": 1.0, "nnunet": 0.5,
                                                  "per_case_empty_as_one": (1 + 0 + 1 + 1) / 4})
    one = results["aggregates"]["1"]
    assert one["nsd_mean"] == pytest.approx(cases["overlap"]["1"]["nsd"] / 2)  # the missed case's 0 counts
    assert one["hd95_mean"] == pytest.approx(cases["overlap"]["1"]["hd95"]) and one["n_hd95"] == 1
    assert results["settings"]["nsd_tolerance"] == {"1": 2.0, "2": 2.0, "foreground": 2.0}
    assert results["settings"]["distance_unit"] == "mm"
    rows = (root / "out" / "per_case.csv").read_text().splitlines()
    assert rows[0].split(",")[6:10] == ["dice", "iou", "nsd", "hd95"]
    report = (root / "out" / "report.md").read_text()
    assert "## Boundary metrics (NSD, HD95)" in report and "## NSD protocols" in report
    assert "one of them empty: NSD 0, HD95 undefined" in report


def test_min_size_changes_only_the_detection_flags(hand_checked, tmp_path):
    """K = 4: fp_only's 3 voxels are no false positive any more; every score and protocol stays."""
    results, root = hand_checked
    k4 = evaluate_folders(root / "pred", root / "ref", tmp_path / "k4", device="cpu", plots=False, min_size=4)
    for key in ("1", "2", "foreground"):
        for field in ("dice_protocols", "nsd_protocols", "dice_mean", "nsd_mean", "hd95_mean", "dice_mean_nnunet"):
            assert k4["aggregates"][key][field] == results["aggregates"][key][field], (key, field)
    assert results["aggregates"]["2"]["false_positive_cases"] == 1
    assert k4["aggregates"]["2"]["false_positive_cases"] == 0
    report = (tmp_path / "k4" / "report.md").read_text()
    assert "K (--min-size) applies to these two rates only" in report
    assert "--min-size changes only the FP/FN rates" in report


def test_nsd_tolerance_per_label_and_no_boundary(hand_checked, tmp_path):
    from pu_nnunet.evaluation.metrics.boundary import parse_tolerances

    _, root = hand_checked
    wide = evaluate_folders(root / "pred", root / "ref", tmp_path / "wide", device="cpu", plots=False,
                            nsd_tolerance=parse_tolerances(["1=100"]))
    overlap = next(c for c in wide["cases"] if c["case"] == "overlap")["labels"]
    assert overlap["1"]["nsd"] == 1.0  # every surface voxel is within 100 mm
    assert wide["settings"]["nsd_tolerance"] == {"1": 100.0, "2": 2.0, "foreground": 2.0}
    with pytest.raises(EvaluationError, match="--nsd-tolerance names label"):
        evaluate_folders(root / "pred", root / "ref", tmp_path / "bad", device="cpu", plots=False,
                         nsd_tolerance=parse_tolerances(["7=1"]))
    plain = evaluate_folders(root / "pred", root / "ref", tmp_path / "plain", device="cpu", plots=False,
                             boundary=False)
    assert "nsd" not in plain["cases"][0]["labels"]["1"] and "nsd_mean" not in plain["aggregates"]["1"]
    assert "not computed (--no-boundary)" in (tmp_path / "plain" / "report.md").read_text()
