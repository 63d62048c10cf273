"""Shared fixtures: nnU-Net plans as nnU-Net's planners write them, and a tiny trained model."""

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

_COMMON_ARCH = {
    "conv_op": "torch.nn.modules.conv.Conv2d",
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}


def _plans(network_class_name: str, stage_kwargs: dict, plans_name: str) -> dict:
    """A 2d configuration in the layout of nnU-Net 2.8's plans files (5 stages, 64x64 patches)."""
    arch_kwargs = {"n_stages": 5, "features_per_stage": [8, 16, 32, 64, 64],
                   "kernel_sizes": [[3, 3]] * 5, "strides": [[1, 1]] + [[2, 2]] * 4,
                   **stage_kwargs, "n_conv_per_stage_decoder": [1, 1, 1, 1], **_COMMON_ARCH}
    return {
        "dataset_name": "Dataset990_Test", "plans_name": plans_name,
        "original_median_spacing_after_transp": [3.0, 0.8, 0.8], "original_median_shape_after_transp": [16, 64, 64],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {"2d": {
            "data_identifier": f"{plans_name}_2d", "preprocessor_name": "DefaultPreprocessor", "batch_size": 2,
            "patch_size": [64, 64], "median_image_size_in_voxels": [64.0, 64.0], "spacing": [0.8, 0.8],
            "normalization_schemes": ["CTNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": {"network_class_name": network_class_name, "arch_kwargs": arch_kwargs,
                             "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]},
            "batch_dice": True}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"max": 200.0, "mean": 50.0, "median": 50.0, "min": -100.0,
                                                              "percentile_00_5": -90.0, "percentile_99_5": 190.0,
                                                              "std": 40.0}},
    }


@pytest.fixture
def plain_plans() -> dict:
    """Default nnUNetPlans: PlainConvUNet with two convs per encoder stage."""
    return copy.deepcopy(_plans("dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                {"n_conv_per_stage": [2, 2, 2, 2, 2]}, "nnUNetPlans"))


@pytest.fixture
def resenc_plans() -> dict:
    """A ResEnc preset (nnUNetResEncUNetMPlans layout): ResidualEncoderUNet, blocks 1,3,4,6,6."""
    return copy.deepcopy(_plans("dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
                                {"n_blocks_per_stage": [1, 3, 4, 6, 6]}, "nnUNetResEncUNetMPlans"))


# real scans of one patient (TotalSegmentator's test files, Apache-2.0: see their NOTICE.md): CI
# puts a read-only shared/ beside the checkout; a git worktree finds it beside its main checkout
REAL_CT_PATH = Path("shared") / "data" / "real-ct"
REPOSITORY = Path(__file__).resolve().parent.parent


def _real_ct_candidates() -> list[Path]:
    roots = [REPOSITORY.parent, REPOSITORY]
    common = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "--path-format=absolute",
                             "--git-common-dir"], capture_output=True, text=True)
    if common.returncode == 0 and common.stdout.strip():
        roots.append(Path(common.stdout.strip()).parent.parent)  # MAIN/.git -> beside MAIN
    return [root / REAL_CT_PATH for root in roots]


@pytest.fixture(scope="session")
def real_ct() -> Path:
    """The folder of real scans (``../shared/data/real-ct``); the test is skipped, saying where it
    looked, when the files are absent."""
    candidates = _real_ct_candidates()
    for folder in candidates:
        if (folder / "NOTICE.md").is_file():
            return folder
    pytest.skip(f"real scans not found (looked in {', '.join(map(str, candidates))})")


# the tiny trained model: one nnU-Net pipeline run shared by the tests that need a trained model
TINY_DATASET_ID = 990
TINY_TRAINER = "nnUNetTrainerPURe_tiny"
NNUNET_BIN = Path(sys.executable).parent


def nnunet_env(root: Path, **extra) -> dict:
    from pu_nnunet.trainers import EXT_TRAINER_DIR

    env = dict(os.environ, nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_extTrainer=EXT_TRAINER_DIR, nnUNet_def_n_proc="1",
               PYTHONUNBUFFERED="1")
    env.pop("nnUNet_n_proc_DA", None)  # the planner fails with 0; set per command below
    env.update(extra)
    return env


def run(cmd: list, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    # explicit encoding: SimpleITK's DICOM writer can switch the process to the "C" locale
    result = subprocess.run([str(NNUNET_BIN / cmd[0]), *cmd[1:]], env=env, capture_output=True, text=True,
                            encoding="utf-8", timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def train_until_epoch_1_starts(env: dict) -> str:
    """Runs nnUNetv2_train and kills it once epoch 0 is done and its checkpoint written."""
    proc = subprocess.Popen([str(NNUNET_BIN / "nnUNetv2_train"), str(TINY_DATASET_ID), "2d", "0", "-tr", TINY_TRAINER,
                             "-device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            encoding="utf-8", start_new_session=True)
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


@pytest.fixture(scope="session")
def tiny_trained_model(tmp_path_factory):
    """A 2-epoch nnUNetTrainerPURe_tiny model on a generated CT dataset, trained through nnU-Net's
    console scripts (interrupted after epoch 0 and resumed with --c), with nnUNetv2_predict's
    predictions (default settings, mirroring TTA) of the held-out volumes. ~3 min on 2 cores."""
    from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct

    root = tmp_path_factory.mktemp("nnunet")
    dataset = generate_synthetic_ct(root / "raw", TINY_DATASET_ID, num_cases=8, num_test=2, shape=(16, 48, 48),
                                    num_organs=2, seed=0)
    env = nnunet_env(root)
    run(["nnUNetv2_plan_and_preprocess", "-d", str(TINY_DATASET_ID), "-c", "2d", "-np", "1",
         "--verify_dataset_integrity"], env)
    train_env = nnunet_env(root, nnUNet_n_proc_DA="0")
    first_run = train_until_epoch_1_starts(train_env)
    fold = root / "results" / f"Dataset{TINY_DATASET_ID:03d}_SynthCT" / f"{TINY_TRAINER}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists()
    resumed = run(["nnUNetv2_train", str(TINY_DATASET_ID), "2d", "0", "-tr", TINY_TRAINER, "-device", "cpu", "--c"],
                  train_env).stdout
    predictions = root / "predictions"
    run(["nnUNetv2_predict", "-i", str(dataset / "imagesTs"), "-o", str(predictions), "-d", str(TINY_DATASET_ID),
         "-c", "2d", "-f", "0", "-tr", TINY_TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    return dict(root=root, dataset=dataset, dataset_id=TINY_DATASET_ID, trainer=TINY_TRAINER, fold=fold,
                first_run=first_run, resumed=resumed, predictions=predictions, env=env, bin=NNUNET_BIN)


# the tiny 3d_fullres model: nnU-Net's most used configuration, shared by the 3d tests
TINY_3D_DATASET_ID = 991
TINY_3D_CONFIGURATION = "3d_fullres"


@pytest.fixture(scope="session")
def tiny_trained_model_3d(tmp_path_factory):
    """nnUNetTrainerPURe_tiny trained on ``3d_fullres`` plans of a generated CT dataset (16x32x32
    volumes; nnU-Net's plans with the demo's CPU features) through nnU-Net's console scripts, with nnUNetv2_predict's predictions (default
    settings, mirroring TTA) of the held-out volumes."""
    from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct
    from pu_nnunet.study.cpu_plans import CPU_PLANS, write_cpu_plans

    root = tmp_path_factory.mktemp("nnunet_3d")
    dataset = generate_synthetic_ct(root / "raw", TINY_3D_DATASET_ID, num_cases=7, num_test=2, shape=(16, 32, 32),
                                    num_organs=2, seed=0)
    env = nnunet_env(root)
    # the 2d fixture runs nnU-Net's dataset integrity check on the same generator's output
    run(["nnUNetv2_plan_and_preprocess", "-d", str(TINY_3D_DATASET_ID), "-c", TINY_3D_CONFIGURATION, "-np", "1"], env)
    # the demo's narrower features (16..256 instead of 32..320): a 3d network costs 3x less per iteration
    write_cpu_plans(root / "preprocessed" / dataset.name, TINY_3D_CONFIGURATION)
    training = run(["nnUNetv2_train", str(TINY_3D_DATASET_ID), TINY_3D_CONFIGURATION, "0", "-tr", TINY_TRAINER,
                    "-p", CPU_PLANS, "-device", "cpu"], nnunet_env(root, nnUNet_n_proc_DA="0")).stdout
    model_dir = (root / "results" / dataset.name / f"{TINY_TRAINER}__{CPU_PLANS}__{TINY_3D_CONFIGURATION}")
    predictions = root / "predictions"
    run(["nnUNetv2_predict", "-i", str(dataset / "imagesTs"), "-o", str(predictions), "-d", str(TINY_3D_DATASET_ID),
         "-c", TINY_3D_CONFIGURATION, "-p", CPU_PLANS, "-f", "0", "-tr", TINY_TRAINER, "-device", "cpu", "-npp", "1",
         "-nps", "1"], env)
    return dict(root=root, dataset=dataset, dataset_id=TINY_3D_DATASET_ID, trainer=TINY_TRAINER,
                configuration=TINY_3D_CONFIGURATION, fold=model_dir / "fold_0", training=training,
                predictions=predictions, env=env, bin=NNUNET_BIN)


# The suite runs on both cores (pytest-xdist, --dist loadgroup; see scripts/test.sh): a trained
# model fixture is built once per group, so the tests that share it run in one worker, and every
# other module stays whole in one worker, so module-scoped fixtures are built once too. The tests
# of the 2d model take longer than the rest of the suite together, so they form two groups, each
# building the model once (about 2 minutes) and running beside the other on its own core.
SHARED_MODEL_GROUPS = {"tiny_trained_model": "tiny_model_2d", "tiny_trained_model_3d": "tiny_model_3d"}
# test folders whose 2d-model tests form the second group
SECOND_2D_GROUP_FOLDERS = ("tests/trainers/", "tests/robustness/", "tests/study/")


# tryfirst: the marks must exist before pytest-xdist reads them (its own hook, which otherwise runs first)
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.nodeid.split("::")[0]
        group = next((g for fixture, g in SHARED_MODEL_GROUPS.items() if fixture in item.fixturenames), module)
        if group == "tiny_model_2d" and module.startswith(SECOND_2D_GROUP_FOLDERS):
            group = "tiny_model_2d_b"
        item.add_marker(pytest.mark.xdist_group(group))
