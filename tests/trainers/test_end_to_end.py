"""nnU-Net's own console scripts with nnUNetTrainerPURe, on a tiny generated CT dataset.

plan_and_preprocess -> train (interrupted after epoch 0) -> resume with --c -> predict held-out
volumes. About three minutes on 2 CPU cores.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pu_nnunet.datasets.synthetic_ct import generate_synthetic_ct
from pu_nnunet.trainers import EXT_TRAINER_DIR

pytestmark = pytest.mark.slow

DATASET_ID = 990
TRAINER = "nnUNetTrainerPURe_tiny"
BIN = Path(sys.executable).parent


def nnunet_env(root: Path, **extra) -> dict:
    env = dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_extTrainer=EXT_TRAINER_DIR, nnUNet_def_n_proc="1",
               PYTHONUNBUFFERED="1")
    env.pop("nnUNet_n_proc_DA", None)  # the planner fails with 0; set per command below
    env.update(extra)
    return env


def run(cmd: list, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def train_until_epoch_1_starts(env: dict) -> str:
    """Runs nnUNetv2_train and kills it once epoch 0 is done and its checkpoint written."""
    proc = subprocess.Popen([str(BIN / "nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device",
                             "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "Epoch 1" in line:  # printed after epoch 0's checkpoint_latest.pth is saved
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    output = "".join(seen)
    assert "Epoch 1" in output, f"training did not reach epoch 1:\n{output[-3000:]}"
    return output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    dataset = generate_synthetic_ct(root / "raw", DATASET_ID, num_cases=8, num_test=2, shape=(16, 48, 48),
                                    num_organs=2, seed=0)
    env = nnunet_env(root)
    run(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1",
         "--verify_dataset_integrity"], env)
    train_env = nnunet_env(root, nnUNet_n_proc_DA="0")
    first_run = train_until_epoch_1_starts(train_env)
    fold = root / "results" / "Dataset990_SynthCT" / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists()
    resumed = run(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu", "--c"],
                  train_env).stdout
    predictions = root / "predictions"
    run(["nnUNetv2_predict", "-i", str(dataset / "imagesTs"), "-o", str(predictions), "-d", str(DATASET_ID),
         "-c", "2d", "-f", "0", "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    return dict(root=root, dataset=dataset, fold=fold, first_run=first_run, resumed=resumed,
                predictions=predictions, env=env)


def test_training_resumes_from_the_checkpoint_and_the_loss_falls(trained):
    assert "Epoch 0" in trained["first_run"]
    assert "Epoch 0" not in trained["resumed"] and "Epoch 1" in trained["resumed"]
    checkpoint = torch.load(trained["fold"] / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["trainer_name"] == TRAINER
    assert checkpoint["init_args"]["configuration"] == "2d"
    losses = checkpoint["logging"]["train_losses"]
    assert len(losses) == 2 and losses[1] < losses[0], losses
    assert any(".pu.weight" in key for key in checkpoint["network_weights"])


def test_predictions_keep_the_input_geometry_and_hold_foreground(trained):
    images = sorted((trained["dataset"] / "imagesTs").glob("*_0000.nii.gz"))
    assert len(images) == 2
    for image_path in images:
        prediction_path = trained["predictions"] / image_path.name.replace("_0000.nii.gz", ".nii.gz")
        image, prediction = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(prediction_path))
        assert prediction.GetSize() == image.GetSize()
        np.testing.assert_allclose(prediction.GetSpacing(), image.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(prediction.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(prediction.GetDirection(), image.GetDirection(), atol=1e-6)
        labels = np.unique(sitk.GetArrayFromImage(prediction))
        assert labels.min() == 0 and labels.max() >= 1 and labels.max() <= 2, labels


def test_missing_ext_trainer_variable_is_named_in_the_error(trained):
    env = dict(trained["env"])
    env.pop("nnUNet_extTrainer")
    result = subprocess.run([str(BIN / "nnUNetv2_train"), str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device",
                             "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "nnUNet_extTrainer" in result.stdout + result.stderr
    assert "Could not find requested nnunet trainer" in result.stdout + result.stderr
