"""Operating points: FPR on normal cases against lesion sensitivity and Dice, and the comparison
at matched sensitivity that sees through a model which merely predicts less."""

import json

import numpy as np
import pytest

from pu_nnunet.cli import main
from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.evaluation.metrics.operating_points import (LABEL_MAP, MinSize, case_components, fpr_at_sensitivity,
                                                           frontier, grid_points, matched_comparison)
from pu_nnunet.evaluation.operating_points import folder_operating_points, operating_points

SHAPE = (1, 12, 12)  # nnU-Net reads a 2D image as one slice
SPACING_2D = (999.0, 0.5, 0.5)  # a pixel is 0.25 mm^2


def _hand_built():
    """normal_a: predicted components of 3 and 8 pixels; normal_b: nothing predicted;
    lesion: lesions of 4 (A) and 2 (B) pixels; predicted 6 pixels over all of A, 1 pixel on B."""
    normal_a = np.zeros(SHAPE, bool)
    normal_a[0, 0, 0:3] = True
    normal_a[0, 5:7, 5:9] = True
    reference, prediction = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    reference[0, 2:4, 2:4] = True  # A
    reference[0, 9, 9:11] = True  # B
    prediction[0, 2:4, 2:5] = True  # 6 pixels, 4 of them on A
    prediction[0, 9, 9] = True  # 1 pixel on B
    empty = np.zeros(SHAPE, bool)
    return [case_components(normal_a, empty, SPACING_2D, True), case_components(empty, empty, SPACING_2D, True),
            case_components(prediction, reference, SPACING_2D, True)]


def test_hand_built_points_have_exact_values():
    cases = _hand_built()
    points = {p["min_size"]: p for p in grid_points({LABEL_MAP: cases}, [MinSize(1, "voxels"), MinSize(2, "voxels"),
                                                                        MinSize(9, "voxels")])}
    every, two, nine = points[1], points[2], points[9]
    assert (every["false_positive_cases"], every["n_normal"], every["lesions_hit"], every["n_lesions"]) == (1, 2, 2, 2)
    assert every["lesion_dice"] == pytest.approx(2 * 5 / (7 + 6))
    assert every["fpr_ci"][0] == pytest.approx(0.0126, abs=1e-4) and every["fpr_ci"][1] == pytest.approx(0.9874, abs=1e-4)
    assert (two["false_positive_cases"], two["lesions_hit"]) == (1, 1)
    assert two["lesion_dice"] == pytest.approx(2 * 4 / (6 + 6))
    assert (nine["false_positive_cases"], nine["lesions_hit"], nine["lesion_dice"]) == (0, 0, 0.0)
    # 2 mm^2 at 0.25 mm^2 per pixel: components of 8 pixels or more
    assert MinSize(2.0, "mm").voxels(cases[0].voxel_size_mm) == 8
    (in_mm,) = grid_points({LABEL_MAP: cases}, [MinSize(2.0, "mm")])
    assert (in_mm["false_positive_cases"], in_mm["lesions_hit"]) == (1, 0)


def test_nnunet_postprocessing_keeps_the_largest_component_and_no_false_positive_goes():
    result = operating_points([{LABEL_MAP: case} for case in _hand_built()], [MinSize(1, "voxels")])
    point = result["nnunet_postprocessing"]
    # nnU-Net's Dice: normal_a 0 (a false positive), normal_b dropped, lesion 10/13 -> 8/12 kept largest
    assert point["nnunet_dice_without"] == pytest.approx((0 + 10 / 13) / 2)
    assert point["nnunet_dice_keep_largest"] == pytest.approx((0 + 8 / 12) / 2)
    assert point["keep_largest"] is False  # it lowers the Dice, so nnU-Net's rule does not choose it
    assert (point["false_positive_cases"], point["lesions_hit"]) == (1, 2)
    assert point["nnunet_dice_scored_cases"] == {"without": point["nnunet_dice_without"],
                                                 "keep_largest": point["nnunet_dice_keep_largest"]}
    # decided elsewhere (a fold's validation cases) and applied here: the lesion keeps only A
    applied = operating_points([{LABEL_MAP: case} for case in _hand_built()], [MinSize(1, "voxels")],
                               {"source": "validation", "keep_largest": True})["nnunet_postprocessing"]
    assert (applied["source"], applied["false_positive_cases"], applied["lesions_hit"]) == ("validation", 1, 1)
    assert applied["lesion_dice"] == pytest.approx(8 / 12)


def _blob_cases(probabilities_normal, probabilities_lesion):
    """Each normal case: one 2x2 blob of the given probability; each lesion case: a 2x2 lesion
    whose prediction carries the given probability."""
    grids = []
    for value in probabilities_normal:
        reference, foreground = np.zeros(SHAPE, bool), np.zeros(SHAPE, np.float32)
        foreground[0, 3:5, 3:5] = value
        grids.append((foreground, reference))
    for value in probabilities_lesion:
        reference, foreground = np.zeros(SHAPE, bool), np.zeros(SHAPE, np.float32)
        reference[0, 6:8, 6:8] = True
        foreground[0, 6:8, 6:8] = value
        grids.append((foreground, reference))
    return grids


THRESHOLDS = tuple(k / 8 for k in range(1, 9))  # dyadic: exact in float32


def _curve(grids):
    by_threshold = {t: [case_components(f >= t, r, SPACING_2D, True) for f, r in grids] for t in THRESHOLDS}
    points = grid_points(by_threshold, [MinSize(1, "voxels")])
    return points, next(p for p in points if p["threshold"] == 0.5)


def test_a_model_that_predicts_less_is_seen_through_at_matched_sensitivity():
    normal = [0.25, 0.5, 0.75, 1.0, 0.25, 0.25]
    lesion = [1.0, 1.0, 0.75, 0.5, 0.5, 0.25]
    full = _blob_cases(normal, lesion)
    # the same model, every probability lowered by 0.25: it predicts less everywhere
    shy = [(np.where(f > 0, f - 0.25, 0).astype(np.float32), r) for f, r in full]
    points_full, at_half_full = _curve(full)
    points_shy, at_half_shy = _curve(shy)
    # at the same threshold the shy model looks better on normal images and worse on lesions
    assert (at_half_full["false_positive_cases"], at_half_full["lesions_hit"]) == (3, 5)
    assert (at_half_shy["false_positive_cases"], at_half_shy["lesions_hit"]) == (2, 3)
    # at matched sensitivity the advantage vanishes: the two curves give the same FPR everywhere
    curves = {"full": frontier(points_full), "shy": frontier(points_shy)}
    rows = matched_comparison(curves, {"full": at_half_full, "shy": at_half_shy}, levels=(0.5, 2 / 3, 5 / 6))
    for row in rows:
        assert row["fpr"]["full"] == pytest.approx(row["fpr"]["shy"]), row
    by_level = {row["lesion_sensitivity"]: row for row in rows}
    # 3 of 6 lesions cost 2 of 6 normal images; 4 of 6 lie halfway between 3/6 (2/6) and 5/6 (3/6)
    assert by_level[0.5]["fpr"]["full"] == pytest.approx(2 / 6)
    assert by_level[round(2 / 3, 6)]["fpr"]["shy"] == pytest.approx(5 / 12)
    # the shy model's default point (3/6 detected) is matched, as is the full model's (5/6: FPR 3/6)
    assert by_level[round(5 / 6, 6)]["fpr"]["shy"] == pytest.approx(3 / 6)
    assert by_level[round(5 / 6, 6)]["level_from"] == "default point of full"


def test_interpolation_between_frontier_points_and_unreached_levels():
    curve = [{"lesion_sensitivity": 0.4, "fpr": 0.1}, {"lesion_sensitivity": 0.8, "fpr": 0.5}]
    assert fpr_at_sensitivity(curve, 0.6) == pytest.approx(0.3)
    assert fpr_at_sensitivity(curve, 0.2) == pytest.approx(0.1)
    assert fpr_at_sensitivity(curve, 0.9) is None


@pytest.fixture
def png_folders(tmp_path, synth):
    """Four PNG cases with nnU-Net-style probabilities (CASE.npz, channels first)."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    shape = (8, 8)
    cases = {"n1": (None, 0.8), "n2": (None, 0.3), "l1": ((2, 5), 0.9), "l2": ((1, 3), 0.4)}
    for case, (lesion, probability) in cases.items():
        reference, foreground = np.zeros(shape, np.uint8), np.zeros(shape, np.float32)
        if lesion:
            reference[lesion[0]:lesion[1], lesion[0]:lesion[1]] = 1
            foreground[lesion[0]:lesion[1], lesion[0]:lesion[1]] = probability
        else:
            foreground[5:7, 5:7] = probability
        synth.write_png(ref / f"{case}.png", reference)
        synth.write_png(pred / f"{case}.png", (foreground >= 0.5).astype(np.uint8))
        probabilities = np.stack([1 - foreground, foreground])[:, None]  # (C, 1, y, x) as nnU-Net's 2D
        np.savez_compressed(pred / f"{case}.npz", probabilities=probabilities)
    return tmp_path


def test_evaluate_command_writes_operating_points(png_folders, capsys, check_plot):
    out = png_folders / "out"
    code = main(["evaluate", str(png_folders / "pred"), str(png_folders / "ref"), "-o", str(out), "--device", "cpu",
                 "--no-plots", "--operating-points", "--op-thresholds", "0.2", "0.5", "0.85", "--op-min-sizes", "1",
                 "5", "--op-min-sizes-mm", "4"])
    assert code == 0
    assert "label map: FPR 1/2, lesion sensitivity 1/2" in capsys.readouterr().out
    content = json.loads((out / "operating_points.json").read_text())
    assert content["settings"]["thresholds"] == [LABEL_MAP, 0.2, 0.5, 0.85]
    assert len(content["points"]) == 4 * 3
    point = {(p["threshold"], p["min_size"], p["min_size_unit"]): p for p in content["points"]}
    # threshold 0.2: both blobs of normal images, both lesions (9 and 4 pixels)
    assert (point[(0.2, 1, "voxels")]["false_positive_cases"], point[(0.2, 1, "voxels")]["lesions_hit"]) == (2, 2)
    # min size 5 pixels removes the 2x2 blobs and the 4-pixel lesion; PNG spacing 1 mm: 4 mm^2 = 4 pixels
    assert (point[(0.2, 5, "voxels")]["false_positive_cases"], point[(0.2, 5, "voxels")]["lesions_hit"]) == (0, 1)
    assert (point[(0.2, 4.0, "mm")]["false_positive_cases"], point[(0.2, 4.0, "mm")]["lesions_hit"]) == (2, 2)
    assert (point[(0.85, 1, "voxels")]["false_positive_cases"], point[(0.85, 1, "voxels")]["lesions_hit"]) == (0, 1)
    assert content["nnunet_postprocessing"]["source"].startswith("nnU-Net's rule")
    rows = (out / "operating_points.csv").read_text().splitlines()
    assert len(rows) == 1 + 12 and rows[0].startswith("threshold,min_size,min_size_unit,fpr")
    assert not (out / "operating_points.png").exists()  # --no-plots


def test_folder_operating_points_plot_and_postprocessing_json(png_folders, check_plot):
    (png_folders / "pred" / "postprocessing.json").write_text(json.dumps(
        {"postprocessing_fns": ["remove_all_but_largest_component_from_segmentation"],
         "postprocessing_kwargs": [{"labels_or_regions": [1]}]}))
    result = folder_operating_points(png_folders / "pred", png_folders / "ref", png_folders / "out")
    assert result["nnunet_postprocessing"]["keep_largest"] is True
    assert result["settings"]["probabilities"] is True and len(result["settings"]["thresholds"]) == 11
    check_plot(png_folders / "out" / "operating_points.png", min_width=600)


def test_thresholds_without_every_probability_file_are_refused(png_folders):
    (png_folders / "pred" / "l2.npz").unlink()
    with pytest.raises(EvaluationError, match="missing for l2"):
        folder_operating_points(png_folders / "pred", png_folders / "ref", thresholds=[0.5])
    # without thresholds the label maps alone are scored
    result = folder_operating_points(png_folders / "pred", png_folders / "ref")
    assert result["settings"]["thresholds"] == [LABEL_MAP]
    with pytest.raises(EvaluationError, match=r"\(0, 1\]"):
        folder_operating_points(png_folders / "pred", png_folders / "ref", thresholds=[1.5])


def test_probabilities_of_another_shape_are_refused_naming_the_file(png_folders):
    np.savez_compressed(png_folders / "pred" / "n1.npz", probabilities=np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(EvaluationError, match="n1.npz: probabilities of shape"):
        folder_operating_points(png_folders / "pred", png_folders / "ref", thresholds=[0.5])


def test_an_evaluation_without_the_option_warns_of_operating_points_left_from_before(png_folders, capsys):
    out = png_folders / "out"
    arguments = ["evaluate", str(png_folders / "pred"), str(png_folders / "ref"), "-o", str(out), "--device", "cpu",
                 "--no-plots"]
    assert main([*arguments, "--operating-points"]) == 0
    assert main([*arguments, "--overwrite"]) == 0
    assert "operating_points.json is left from an earlier evaluation" in capsys.readouterr().err
