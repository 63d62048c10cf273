"""Shared fixtures: nnU-Net plans as nnU-Net's planners write them, and a tiny trained model."""

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
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


# small plans and one torch thread for the tests that compile, train or spawn processes on tiny networks
def _small_plans(plain_plans: dict, configuration: str) -> dict:
    """nnU-Net's PlainConvUNet plans cut to 3 small stages and small patches (2d or 3d_fullres)."""
    plans = copy.deepcopy(plain_plans)
    config = plans["configurations"].pop("2d")
    arch = config["architecture"]["arch_kwargs"]
    arch.update(n_stages=3, features_per_stage=[4, 8, 8], n_conv_per_stage=[2] * 3, n_conv_per_stage_decoder=[1] * 2,
                kernel_sizes=[[3, 3]] * 3, strides=[[1, 1]] + [[2, 2]] * 2)
    config.update(patch_size=[32, 32])
    if configuration == "3d_fullres":
        # an anisotropic CT's 3d_fullres: in-plane kernels and strides first, as nnU-Net's planner makes them
        arch.update(conv_op="torch.nn.modules.conv.Conv3d", norm_op="torch.nn.modules.instancenorm.InstanceNorm3d",
                    kernel_sizes=[[1, 3, 3]] + [[3, 3, 3]] * 2, strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]])
        config.update(data_identifier="nnUNetPlans_3d_fullres", patch_size=[8, 16, 16], spacing=[3.0, 0.8, 0.8])
    plans["configurations"][configuration] = config
    return plans


@pytest.fixture
def small_plans(plain_plans):
    """``small_plans("2d")`` / ``small_plans("3d_fullres")``: plans dicts small enough to compile and train fast."""
    return lambda configuration: _small_plans(plain_plans, configuration)


@pytest.fixture
def one_torch_thread():
    """Tiny networks gain nothing from a second thread, and on a shared machine each op's wait for it
    costs more than the op (40x per training step, measured); restored afterwards."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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


def _shared_root(tmp_path_factory) -> Path:
    """The folder every pytest-xdist worker of this run sees (each worker's basetemp lies inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build) -> tuple[Path, dict]:
    """``build(root) -> dict`` run once for the whole test run, whichever worker asks first (the
    others wait on a file lock), then copied into this worker's own folder, so that tests in two
    workers never write into one model folder. Returns the copy's root and what ``build`` returned.
    A build that raised leaves no record and is tried again by the next worker that asks."""
    from filelock import FileLock  # a dependency of torch

    shared = _shared_root(tmp_path_factory) / name
    record_file = shared.with_name(f"{name}.json")
    with FileLock(str(shared.with_name(f"{name}.lock"))):
        if not record_file.is_file():
            shutil.rmtree(shared, ignore_errors=True)  # a build that failed half-way
            record = build(shared)
            record_file.write_text(json.dumps(record))
    own = tmp_path_factory.mktemp(name) / "root"
    shutil.copytree(shared, own, symlinks=True)
    return own, json.loads(record_file.read_text())


def _build_tiny_model(root: Path) -> dict:
    from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct

    dataset = generate_synthetic_ct(root / "raw", TINY_DATASET_ID, num_cases=8, num_test=2, shape=(16, 48, 48),
                                    num_organs=2, seed=0)
    env = nnunet_env(root)
    # -npfp 1: nnU-Net's integrity check and fingerprint otherwise start 8 processes each
    run(["nnUNetv2_plan_and_preprocess", "-d", str(TINY_DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1",
         "--verify_dataset_integrity"], env)
    train_env = nnunet_env(root, nnUNet_n_proc_DA="0")
    first_run = train_until_epoch_1_starts(train_env)
    fold = root / "results" / dataset.name / f"{TINY_TRAINER}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists()
    resumed = run(["nnUNetv2_train", str(TINY_DATASET_ID), "2d", "0", "-tr", TINY_TRAINER, "-device", "cpu", "--c"],
                  train_env).stdout
    run(["nnUNetv2_predict", "-i", str(dataset / "imagesTs"), "-o", str(root / "predictions"), "-d",
         str(TINY_DATASET_ID), "-c", "2d", "-f", "0", "-tr", TINY_TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1"],
        env)
    return dict(dataset=dataset.name, first_run=first_run, resumed=resumed)


@pytest.fixture(scope="session")
def tiny_trained_model(tmp_path_factory):
    """A 2-epoch nnUNetTrainerPURe_tiny model on a generated CT dataset, trained through nnU-Net's
    console scripts (interrupted after epoch 0 and resumed with --c), with nnUNetv2_predict's
    predictions (default settings, mirroring TTA) of the held-out volumes. Built once per test run
    (~2 min on one core), each worker holding its own copy."""
    root, built = built_once(tmp_path_factory, "tiny_model_2d", _build_tiny_model)
    fold = root / "results" / built["dataset"] / f"{TINY_TRAINER}__nnUNetPlans__2d" / "fold_0"
    return dict(root=root, dataset=root / "raw" / built["dataset"], dataset_id=TINY_DATASET_ID, trainer=TINY_TRAINER,
                fold=fold, first_run=built["first_run"], resumed=built["resumed"], predictions=root / "predictions",
                env=nnunet_env(root), bin=NNUNET_BIN)


# the tiny 3d_fullres model: nnU-Net's most used configuration, shared by the 3d tests
TINY_3D_DATASET_ID = 991
TINY_3D_CONFIGURATION = "3d_fullres"


def _build_tiny_model_3d(root: Path) -> dict:
    from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct
    from pu_nnunet.study.cpu_plans import CPU_PLANS, write_cpu_plans

    dataset = generate_synthetic_ct(root / "raw", TINY_3D_DATASET_ID, num_cases=7, num_test=2, shape=(16, 32, 32),
                                    num_organs=2, seed=0)
    env = nnunet_env(root)
    # the 2d fixture runs nnU-Net's dataset integrity check on the same generator's output
    run(["nnUNetv2_plan_and_preprocess", "-d", str(TINY_3D_DATASET_ID), "-c", TINY_3D_CONFIGURATION, "-np", "1",
         "-npfp", "1"], env)
    # the demo's narrower features (16..256 instead of 32..320): a 3d network costs 3x less per iteration
    write_cpu_plans(root / "preprocessed" / dataset.name, TINY_3D_CONFIGURATION)
    training = run(["nnUNetv2_train", str(TINY_3D_DATASET_ID), TINY_3D_CONFIGURATION, "0", "-tr", TINY_TRAINER,
                    "-p", CPU_PLANS, "-device", "cpu"], nnunet_env(root, nnUNet_n_proc_DA="0")).stdout
    run(["nnUNetv2_predict", "-i", str(dataset / "imagesTs"), "-o", str(root / "predictions"), "-d",
         str(TINY_3D_DATASET_ID), "-c", TINY_3D_CONFIGURATION, "-p", CPU_PLANS, "-f", "0", "-tr", TINY_TRAINER,
         "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    return dict(dataset=dataset.name, plans=CPU_PLANS, training=training)


@pytest.fixture(scope="session")
def tiny_trained_model_3d(tmp_path_factory):
    """nnUNetTrainerPURe_tiny trained on ``3d_fullres`` plans of a generated CT dataset (16x32x32
    volumes; nnU-Net's plans with the demo's CPU features) through nnU-Net's console scripts, with
    nnUNetv2_predict's predictions (default settings, mirroring TTA) of the held-out volumes."""
    root, built = built_once(tmp_path_factory, "tiny_model_3d", _build_tiny_model_3d)
    model_dir = root / "results" / built["dataset"] / f"{TINY_TRAINER}__{built['plans']}__{TINY_3D_CONFIGURATION}"
    return dict(root=root, dataset=root / "raw" / built["dataset"], dataset_id=TINY_3D_DATASET_ID,
                trainer=TINY_TRAINER, configuration=TINY_3D_CONFIGURATION, fold=model_dir / "fold_0",
                training=built["training"], predictions=root / "predictions", env=nnunet_env(root), bin=NNUNET_BIN)


# The suite runs on both cores (pytest-xdist, --dist loadgroup --no-loadscope-reorder; see
# scripts/test.sh). Each module is one group, run whole in one worker, so module-scoped fixtures are
# built once; the trained models are built once for the run (built_once above). xdist hands a worker
# the next group whenever it is nearly idle, in the order below: the longest modules first (their
# durations on 2 cores in the comments, model builds excluded), so that no long module starts last
# and the two workers end together. The 2d model's first user and the demo (which needs no model)
# come first, so one worker builds the model while the other runs the demo.
LONGEST_MODULES_FIRST = (
    "tests/study/test_study_run.py",                      # ~230 s: a study interrupted and resumed
    "tests/demo/test_demo.py",                            # ~190 s: the demo pipeline end to end
    "tests/trainers/test_save_on_signal.py",              # ~170 s: trainings signalled and resumed
    "tests/inference/test_onnx_export.py",                # ~110 s
    "tests/study/test_study_robustness_run.py",           # ~90 s
    "tests/trainers/test_pu_plans.py",                    # ~90 s
    "tests/study/test_study_requeue.py",                  # ~90 s
    "tests/inference/test_predict_trained_model.py",      # builds the 3d model (~95 s)
    "tests/evaluation/test_nnunet_column.py",             # ~50 s
    "tests/datasets/converters/test_amos_real_ct.py",     # ~40 s
    "tests/sharing/test_export_model.py",
    "tests/trainers/test_end_to_end.py",
    "tests/trainers/test_transfer_weights_training.py",
)


# tryfirst: the marks must exist before pytest-xdist reads them (its own hook, which otherwise runs first)
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    rank = {module: index for index, module in enumerate(LONGEST_MODULES_FIRST)}
    module_of = lambda item: item.nodeid.split("::")[0]  # noqa: E731
    size = Counter(module_of(item) for item in items)
    # after the longest, the modules with the most tests first (xdist's own order, which
    # --no-loadscope-reorder turns off; the quick lane, where the long ones are deselected, needs it);
    # a stable sort keeps each module's tests in pytest's order
    items.sort(key=lambda item: (rank.get(module_of(item), len(rank)), -size[module_of(item)], module_of(item)))
    for item in items:
        item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
