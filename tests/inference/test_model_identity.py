"""A model is what it says it is: the checkpoint must match its folder's trainer, plans,
configuration and fold; ``pu-nnunet predict`` records which model wrote its folder
(model_record.json, provenance.json) and ``--continue`` refuses another model (the shared
tiny_trained_model fixture)."""

import hashlib
import json
import os
import shutil

import pytest

from pu_nnunet.cli import main
from pu_nnunet.provenance import MODEL_RECORD_FILE, RUN_RECORD_FILE, model_record, sha256_file, weights_sha256

pytestmark = pytest.mark.slow


def trained_folder(model):
    return model["fold"].parent


def first_image(model):
    return sorted((model["dataset"] / "imagesTs").glob("*_0000.nii.gz"))[0]


def predict_cli(capsys, *args):
    code = main(["predict", *map(str, args), "--device", "cpu", "--disable_tta"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("folder_name, field, checkpoint_value, folder_value", [
    ("nnUNetTrainer__nnUNetPlans__2d", "trainer", "nnUNetTrainerPURe_tiny", "nnUNetTrainer"),
    ("nnUNetTrainerPURe_tiny__nnUNetResEncUNetMPlans__2d", "plans", "nnUNetPlans", "nnUNetResEncUNetMPlans"),
    ("nnUNetTrainerPURe_tiny__nnUNetPlans__3d_fullres", "configuration", "2d", "3d_fullres"),
])
def test_a_checkpoint_in_a_folder_named_for_another_model_is_refused(tiny_trained_model, tmp_path, capsys,
                                                                    folder_name, field, checkpoint_value,
                                                                    folder_value):
    model = tmp_path / "Dataset990_SynthCT" / folder_name
    shutil.copytree(trained_folder(tiny_trained_model), model)
    code, _, err = predict_cli(capsys, "-i", first_image(tiny_trained_model), "-o", tmp_path / "out", "-m", model)
    checkpoint = model / "fold_0" / "checkpoint_final.pth"
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"pu-nnunet predict: error: {checkpoint}: the checkpoint was written by {field} "
                          f"{checkpoint_value} but its folder {folder_name}/fold_0 names {field} {folder_value}"), err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_copied_into_another_fold_is_refused(tiny_trained_model, tmp_path, capsys):
    model = tmp_path / "Dataset990_SynthCT" / trained_folder(tiny_trained_model).name
    shutil.copytree(trained_folder(tiny_trained_model), model)
    (model / "fold_0").rename(model / "fold_3")
    code, _, err = predict_cli(capsys, "-i", first_image(tiny_trained_model), "-o", tmp_path / "out", "-m", model)
    assert code == 1 and "the checkpoint was written by fold 0 but its folder" in err and "names fold 3" in err, err


def _retrained_copy(model_dir, target):
    """The same trainer, plans and configuration with other weights (as a second training gives)."""
    import torch

    shutil.copytree(model_dir, target)
    path = target / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    name = next(iter(checkpoint["network_weights"]))
    checkpoint["network_weights"][name] = checkpoint["network_weights"][name] + 0.01
    torch.save(checkpoint, path)
    return target


def test_predict_records_the_model_and_continue_refuses_another(tiny_trained_model, tmp_path, capsys):
    model = trained_folder(tiny_trained_model)
    images = tiny_trained_model["dataset"] / "imagesTs"
    out = tmp_path / "out"
    code, _, err = predict_cli(capsys, "-i", first_image(tiny_trained_model), "-o", out, "-m", model)
    assert code == 0, err
    record = json.loads((out / MODEL_RECORD_FILE).read_text())
    # the model (weights by content and by file) and every setting that shapes a segmentation
    assert record == {**model_record(model, [0], "checkpoint_final.pth"),
                      "prediction": {"mirroring": "off", "precision": "fp32", "backend": "torch", "onnx_sha256": None,
                                     "tile_step_size": 0.5}}
    assert record["trainer"] == "nnUNetTrainerPURe_tiny" and record["checkpoint_sha256"] == {
        "0": sha256_file(model / "fold_0" / "checkpoint_final.pth")}
    assert record["weights_sha256"] == {"0": weights_sha256(model / "fold_0" / "checkpoint_final.pth")}
    run = json.loads((out / RUN_RECORD_FILE).read_text())
    assert run["device"] == "cpu" and run["model"] == record and run["command"][:2] == ["pu-nnunet", "predict"]
    assert run["files"]["plans.json"]["sha256"] == sha256_file(model / "plans.json")
    assert run["files"]["dataset.json"]["sha256"] == sha256_file(model / "dataset.json")
    assert run["working_directory"] == os.getcwd()
    assert run["inputs"]["case_006"]["sha256"] == hashlib.sha256(
        f"case_006_0000.nii.gz|{sha256_file(first_image(tiny_trained_model))}|".encode()).hexdigest()

    # resuming with other weights of the same trainer would mix two models' segmentations
    other = _retrained_copy(model, tmp_path / "retrained" / model.name)
    code, _, err = predict_cli(capsys, "-i", images, "-o", out, "-m", other, "--continue")
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"pu-nnunet predict: error: {out / MODEL_RECORD_FILE}: the segmentations in this folder "
                          f"were written by another model (weights_sha256 {{fold 0: "
                          f"{record['weights_sha256']['0'][:12]}}} there, {{fold 0: "), err
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case_006.nii.gz"]  # nothing predicted
    # the same model resumes; another checkpoint file of it is another model
    code, out_text, err = predict_cli(capsys, "-i", images, "-o", out, "-m", model, "--continue")
    assert code == 0 and "kept 1 complete one(s)" in out_text, err
    code, _, err = predict_cli(capsys, "-i", images, "-o", out, "-m", model, "--continue", "--chk",
                               "checkpoint_best.pth")
    assert code == 1 and "checkpoint checkpoint_final.pth there, checkpoint_best.pth now" in err, err

    # --overwrite replaces segmentations and record
    code, _, err = predict_cli(capsys, "-i", images, "-o", out, "-m", other, "--overwrite")
    assert code == 0, err
    assert json.loads((out / MODEL_RECORD_FILE).read_text())["checkpoint_sha256"]["0"] == sha256_file(
        other / "fold_0" / "checkpoint_final.pth")


def test_continue_in_a_folder_without_a_record_is_refused(tiny_trained_model, tmp_path, capsys):
    """Segmentations written before records existed (or by another tool): which model made them is
    unknown, so they are not kept as this model's."""
    out = tmp_path / "old"
    out.mkdir()
    shutil.copy(tiny_trained_model["predictions"] / "case_006.nii.gz", out / "case_006.nii.gz")
    images = tiny_trained_model["dataset"] / "imagesTs"
    code, _, err = predict_cli(capsys, "-i", images, "-o", out, "-m", trained_folder(tiny_trained_model), "--continue")
    assert code == 1 and err == (f"pu-nnunet predict: error: {out}: has no model_record.json (written by an older "
                                 "pu-nnunet or another tool), so --continue cannot tell which model wrote "
                                 "case_006.nii.gz; pass --overwrite to predict every case again or choose another "
                                 "output folder\n")
    assert sorted(p.name for p in out.iterdir()) == ["case_006.nii.gz"]


def test_continue_accepts_resaved_identical_weights_and_refuses_other_prediction_settings(tiny_trained_model,
                                                                                          tmp_path, capsys):
    """nnUNetv2_train --c on a finished model re-writes checkpoint_final.pth (new bytes, same
    weights): the same model. Other mirroring or precision would mix two kinds of segmentation."""
    import torch

    model = tmp_path / "Dataset990_SynthCT" / trained_folder(tiny_trained_model).name
    shutil.copytree(trained_folder(tiny_trained_model), model)
    images, out = tiny_trained_model["dataset"] / "imagesTs", tmp_path / "out"
    code, _, err = predict_cli(capsys, "-i", first_image(tiny_trained_model), "-o", out, "-m", model)
    assert code == 0, err
    checkpoint_path = model / "fold_0" / "checkpoint_final.pth"
    before = sha256_file(checkpoint_path)
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    checkpoint["current_epoch"] = checkpoint["current_epoch"]  # re-saved as nnU-Net's --c does
    checkpoint["resaved"] = True
    torch.save(checkpoint, checkpoint_path)
    assert sha256_file(checkpoint_path) != before
    code, out_text, err = predict_cli(capsys, "-i", images, "-o", out, "-m", model, "--continue")
    assert code == 0 and "kept 1 complete one(s)" in out_text, err

    for extra, setting in ((["--disable_tta", "--precision", "fp32"], None),
                           ([], "mirroring off there, all model axes now"),
                           (["--tta-axes", "1"], "mirroring off there, [1] now")):
        code = main(["predict", "-i", str(images), "-o", str(out), "-m", str(model), "--device", "cpu", "--continue",
                     *extra])
        err = capsys.readouterr().err
        if setting is None:  # fp32 is what auto means on the CPU: the same settings
            assert code == 0, err
            continue
        assert code == 1 and err.count("\n") == 1, err
        assert (f"{out / MODEL_RECORD_FILE}: the segmentations in this folder were written with other prediction "
                f"settings ({setting})") in err, err
