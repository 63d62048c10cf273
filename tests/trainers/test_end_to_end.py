"""nnU-Net's own console scripts with nnUNetTrainerPURe, on tiny generated CT datasets.

The pipelines run once per session in fixtures (tests/conftest.py): ``tiny_trained_model`` (2d:
plan_and_preprocess -> train, interrupted after epoch 0 -> resume with --c -> predict) and
``tiny_trained_model_3d`` (3d_fullres: plan_and_preprocess -> train -> predict).
"""

import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
import torch

pytestmark = pytest.mark.slow


def test_training_resumes_from_the_checkpoint_and_the_loss_falls(tiny_trained_model):
    model = tiny_trained_model
    assert "Epoch 0" in model["first_run"]
    assert "Epoch 0" not in model["resumed"] and "Epoch 1" in model["resumed"]
    checkpoint = torch.load(model["fold"] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == model["trainer"]
    assert checkpoint["init_args"]["configuration"] == "2d"
    losses = checkpoint["logging"]["train_losses"]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    assert any(".pu.weight" in key for key in checkpoint["network_weights"])


def assert_predictions_keep_geometry_and_hold_foreground(model) -> None:
    images = sorted((model["dataset"] / "imagesTs").glob("*_0000.nii.gz"))
    assert len(images) == 2
    for image_path in images:
        prediction_path = model["predictions"] / image_path.name.replace("_0000.nii.gz", ".nii.gz")
        image, prediction = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(prediction_path))
        assert prediction.GetSize() == image.GetSize()
        np.testing.assert_allclose(prediction.GetSpacing(), image.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(prediction.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(prediction.GetDirection(), image.GetDirection(), atol=1e-6)
        labels = np.unique(sitk.GetArrayFromImage(prediction))
        assert labels.min() == 0 and labels.max() >= 1 and labels.max() <= 2, labels


def test_predictions_keep_the_input_geometry_and_hold_foreground(tiny_trained_model):
    assert_predictions_keep_geometry_and_hold_foreground(tiny_trained_model)


def test_3d_fullres_trains_pu_blocks_through_nnunet(tiny_trained_model_3d):
    model = tiny_trained_model_3d
    assert "Epoch 1" in model["training"]
    checkpoint = torch.load(model["fold"] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == model["trainer"]
    assert checkpoint["init_args"]["configuration"] == "3d_fullres"
    losses = checkpoint["logging"]["train_losses"]
    assert len(losses) == 2 and np.isfinite(losses).all(), losses
    pu_weights = {k: v for k, v in checkpoint["network_weights"].items() if k.endswith(".pu.weight")}
    assert pu_weights and all(v.dim() == 5 for v in pu_weights.values())  # Conv3d product units
    # nnU-Net's own validation of the held-out fold ran on the 3d network
    assert (model["fold"] / "validation" / "summary.json").is_file()


def test_3d_fullres_predictions_keep_the_input_geometry_and_hold_foreground(tiny_trained_model_3d):
    assert_predictions_keep_geometry_and_hold_foreground(tiny_trained_model_3d)


def test_missing_ext_trainer_variable_is_named_in_the_error(tiny_trained_model):
    model = tiny_trained_model
    env = dict(model["env"])
    env.pop("nnUNet_extTrainer")
    command = [str(model["bin"] / "nnUNetv2_train"), str(model["dataset_id"]), "2d", "0", "-tr", model["trainer"],
               "-device", "cpu"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "nnUNet_extTrainer" in result.stdout + result.stderr
    assert "Could not find requested nnunet trainer" in result.stdout + result.stderr
