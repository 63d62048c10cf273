"""``pu-nnunet evaluate`` and ``pu-nnunet compare`` through pu_nnunet.cli.main, plots included."""

import json
import re

import numpy as np
import pytest

from pu_nnunet.cli import main


@pytest.fixture
def nifti_folders(tmp_path, synth):
    refs, preds = synth.hand_checked_3d()
    synth.write_cases(tmp_path / "ref", refs, ".nii.gz")
    synth.write_cases(tmp_path / "pred", preds, ".nii.gz")
    rng = np.random.default_rng(0)
    for case in refs:  # CT-like intensities for the overlay background
        synth.write_nifti(tmp_path / "images" / f"{case}_0000.nii.gz",
                    rng.normal(40, 20, synth.SHAPE_3D).clip(0, 255).astype(np.uint8))
    return tmp_path


def test_evaluate_command_writes_everything(nifti_folders, capsys, check_plot):
    out = nifti_folders / "out"
    code = main(["evaluate", str(nifti_folders / "pred"), str(nifti_folders / "ref"), "-o", str(out),
                 "--device", "cpu", "--images", str(nifti_folders / "images"), "--min-size", "2",
                 "--nsd-tolerance", "3", "--nsd-tolerance", "2=0.5"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 cases" in printed and "FP rate 0.5000 (1/2)" in printed and "NSD " in printed
    content = json.loads((out / "metrics.json").read_text())
    assert content["settings"]["min_size"] == 2 and content["settings"]["images_dir"].endswith("images")
    assert content["settings"]["nsd_tolerance"] == {"1": 3.0, "2": 0.5, "foreground": 3.0}
    report = (out / "report.md").read_text()
    # table cells are padded to their column's width
    assert "| **foreground** | 2 |" in re.sub(" +", " ", report)
    assert "![overlay_best](plots/overlay_best.png)" in report
    for name in ("dice_distribution.png", "overlay_best.png", "overlay_worst.png"):
        check_plot(out / "plots" / name, min_height=300)


def test_evaluate_command_errors_are_one_line(nifti_folders, capsys, synth):
    args = ["evaluate", str(nifti_folders / "pred"), str(nifti_folders / "ref"), "-o", str(nifti_folders / "out"),
            "--device", "cpu", "--no-plots"]
    assert main(args + ["--nsd-tolerance", "1=x"]) == 1
    assert "--nsd-tolerance '1=x': expected MM or LABEL=MM" in capsys.readouterr().err
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 1  # results exist and --overwrite is missing
    error = capsys.readouterr().err
    assert error.startswith(f"pu-nnunet evaluate: error: {nifti_folders / 'out'}: the output folder already") \
        and "--overwrite" in error
    assert error.count("\n") == 1 and "Traceback" not in error
    synth.write_nifti(nifti_folders / "pred" / "stray.nii.gz", np.zeros(synth.SHAPE_3D, np.uint8))
    assert main(args + ["--overwrite"]) == 0
    assert capsys.readouterr().err == ("pu-nnunet evaluate: warning: 1 prediction(s) without a reference are "
                                       "ignored: stray\n")
    synth.write_nifti(nifti_folders / "pred" / "normal.nii.gz", np.zeros((2, 2, 2), np.uint8))
    assert main(args + ["--overwrite"]) == 1
    assert "case normal: prediction shape" in capsys.readouterr().err


def test_png_rgb_overlays_and_pixel_volumes(tmp_path, synth, check_plot):
    refs = {f"img{i}": synth.box(synth.SHAPE_2D, slice(4, 12), slice(5 + i, 15 + i)) for i in range(3)}
    refs["normal0"] = np.zeros(synth.SHAPE_2D, np.uint8)
    preds = {case: np.roll(ref, 2, axis=1) for case, ref in refs.items()}
    synth.write_cases(tmp_path / "ref", refs, ".png")
    synth.write_cases(tmp_path / "pred", preds, ".png")
    rng = np.random.default_rng(1)
    for case in refs:
        synth.write_png(tmp_path / "images" / f"{case}_0000.png", rng.integers(0, 255, (*synth.SHAPE_2D, 3)))
    meta = synth.write_meta(tmp_path / "cases.json", {"img0": "benign", "img1": "benign", "img2": "malignant",
                                                "normal0": "normal"})
    code = main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(tmp_path / "out"),
                 "--device", "cpu", "--images", str(tmp_path / "images"), "--meta", str(meta)])
    assert code == 0
    content = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert content["volume_unit"] == "pixels" and content["settings"]["reader"] == "NaturalImage2DIO"
    first = content["cases"][0]["labels"]["1"]
    # 8 x 10 box shifted by 2 columns: 8 x 8 shared
    assert (first["ref_volume"], first["tp"], first["dice"]) == (80.0, 64, pytest.approx(0.8))
    # its right edge lies 2 pixels beyond the reference's (in pixels: natural images have no spacing)
    assert content["settings"]["distance_unit"] == "pixels" and first["hd95"] == pytest.approx(2.0)
    assert sorted(content["per_class"]) == ["benign", "malignant", "normal"]
    assert "## Class: normal" in (tmp_path / "out" / "report.md").read_text()
    check_plot(tmp_path / "out" / "plots" / "overlay_best.png", min_height=300)


def test_compare_command(nifti_folders, capsys, synth):
    refs, _ = synth.hand_checked_3d()
    synth.write_cases(nifti_folders / "perfect", refs, ".nii.gz")
    for name, pred in (("a", "pred"), ("b", "perfect")):
        assert main(["evaluate", str(nifti_folders / pred), str(nifti_folders / "ref"), "-o",
                     str(nifti_folders / f"eval_{name}"), "--device", "cpu", "--no-plots"]) == 0
    capsys.readouterr()
    out = nifti_folders / "cmp"
    code = main(["compare", str(nifti_folders / "eval_a"), str(nifti_folders / "eval_b"), "-o", str(out),
                 "--names", "baseline", "pure"])
    assert code == 0
    assert "FP rate baseline 0.5000, pure 0.0000" in capsys.readouterr().out
    result = json.loads((out / "comparison.json").read_text())
    assert result["overall"]["foreground"]["dice"]["mean_b"] == 1.0
    assert main(["compare", str(nifti_folders / "eval_a"), str(nifti_folders / "missing"), "-o", str(out),
                 "--overwrite"]) == 1
    assert "evaluation metrics not found" in capsys.readouterr().err
