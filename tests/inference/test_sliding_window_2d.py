"""Batched 2d sliding window vs nnU-Net's one-patch-at-a-time predictor, on untrained networks.

No training needed: both run the same network (random weights) on the same preprocessed volume,
so any difference comes from the batching alone.
"""

import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from pu_nnunet.inference.sliding_window_2d import FALLBACK_BATCH, BatchedSlicePredictor, default_batch_size
from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe

NUM_CLASSES = 3
DATASET_JSON = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
                "numTraining": 1, "file_ending": ".nii.gz"}
# (channels, slices, rows, columns): rows below the 64x64 patch (padded), columns needing 3 tiles;
# 9 patches in all
VOLUME_SHAPE = (1, 3, 40, 100)
# fp16 accumulation: one unit in the last place of a logit of magnitude ~4 is ~0.004
FP16_TOLERANCE = 1e-2


def make_predictor(trainer_class, plans: dict, use_mirroring: bool, folds: int) -> nnUNetPredictor:
    plans_manager = PlansManager(plans)
    configuration = plans_manager.get_configuration("2d")
    torch.manual_seed(0)
    network = trainer_class.build_network_architecture(plans_manager, configuration, 1, NUM_CLASSES, False)
    # cloned, as checkpoints hold their own tensors: state_dict() aliases the live weights
    parameters = [{k: v.clone() for k, v in network.state_dict().items()}]
    for fold in range(1, folds):
        # another fold: the same weights, perturbed, so that averaging the folds matters
        parameters.append({k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v
                           for k, v in network.state_dict().items()})
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, configuration, parameters, DATASET_JSON,
                                    trainer_class.__name__, (0, 1))
    return predictor


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Tiny networks run fastest on one thread, above all on a shared, busy CPU (tests/conftest.py)."""


@pytest.fixture
def small_resenc_plans(resenc_plans):
    """The ResEnc plans with one block per stage: the same PU placement, a fraction of the compute."""
    resenc_plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["n_blocks_per_stage"] = [1] * 5
    return resenc_plans


@pytest.mark.parametrize("trainer_class, plans_fixture, use_mirroring, folds", [
    (nnUNetTrainer, "plain_plans", False, 2),  # nnU-Net's network, two folds averaged
    (nnUNetTrainerPURe, "small_resenc_plans", True, 1),  # the PU network, mirroring TTA
])
def test_batched_logits_match_nnunet(request, trainer_class, plans_fixture, use_mirroring, folds):
    predictor = make_predictor(trainer_class, request.getfixturevalue(plans_fixture), use_mirroring, folds)
    volume = torch.randn(VOLUME_SHAPE, generator=torch.Generator().manual_seed(1))
    expected = predictor.predict_logits_from_preprocessed_data(volume)
    assert expected.shape == (NUM_CLASSES, *VOLUME_SHAPE[1:])

    # batch 1 repeats nnU-Net's arithmetic step for step
    one_at_a_time = BatchedSlicePredictor(predictor, batch_size=1).predict_logits(volume)
    assert torch.equal(one_at_a_time, expected)
    for batch_size in (4, 9):  # batches across slice boundaries; all patches in one pass
        batched = BatchedSlicePredictor(predictor, batch_size=batch_size).predict_logits(volume)
        assert batched.dtype == expected.dtype and batched.shape == expected.shape
        torch.testing.assert_close(batched.float(), expected.float(), rtol=0, atol=FP16_TOLERANCE)
        agreement = (batched.argmax(0) == expected.argmax(0)).float().mean().item()
        assert agreement >= 0.999, f"batch {batch_size}: argmax agrees on {agreement:.4%} of voxels"


def test_mirroring_changes_the_logits(plain_plans):
    """Guards the test above: mirroring on and off must differ, or the comparison proves nothing."""
    volume = torch.randn(VOLUME_SHAPE, generator=torch.Generator().manual_seed(1))
    with_tta = BatchedSlicePredictor(make_predictor(nnUNetTrainer, plain_plans, True, 1), 8).predict_logits(volume)
    without = BatchedSlicePredictor(make_predictor(nnUNetTrainer, plain_plans, False, 1), 8).predict_logits(volume)
    assert (with_tta.float() - without.float()).abs().max() > FP16_TOLERANCE


def test_the_cpu_batch_is_chosen_by_timing_and_agrees_with_one_patch_at_a_time(plain_plans):
    """batch_size None on the CPU: the candidate sizes are tried on the tiles being predicted
    (no extra work), the fastest is kept, and the logits agree with batch 1's."""
    predictor = make_predictor(nnUNetTrainer, plain_plans, False, 1)
    volume = torch.randn(*VOLUME_SHAPE, generator=torch.Generator().manual_seed(3))
    one_at_a_time = BatchedSlicePredictor(predictor, batch_size=1).predict_logits(volume)
    tuned = BatchedSlicePredictor(predictor)
    assert tuned.tuner is not None and "timed" in tuned.describe_batch_size()
    for _ in range(8):  # enough tiles for every candidate's untimed and timed calls
        logits = tuned.predict_logits(volume)
        assert (logits.argmax(0) == one_at_a_time.argmax(0)).float().mean() >= 0.999
        if tuned.tuner.chosen is not None:
            break
    assert tuned.tuner.chosen in tuned.tuner.candidates
    assert tuned.batch_size == tuned.tuner.chosen and set(tuned.tuner.measurements()) == set(tuned.tuner.candidates)
    assert BatchedSlicePredictor(predictor, batch_size=4).tuner is None  # a given size is kept


def test_default_batch_size_follows_the_memory_budget(plain_plans):
    predictor = make_predictor(nnUNetTrainer, plain_plans, True, 1)
    patch = predictor.configuration_manager.patch_size
    elements = predictor.network.compute_conv_feature_map_size(tuple(patch))
    size = default_batch_size(predictor.network, patch, torch.device("cpu"))
    # 1 GiB of fp32 feature maps, at most 256 patches
    assert size == min(256, (1 << 30) // (int(elements) * 4))
    assert default_batch_size(torch.nn.Identity(), patch, torch.device("cpu")) == FALLBACK_BATCH


def test_rejects_a_3d_configuration(plain_plans):
    predictor = make_predictor(nnUNetTrainer, plain_plans, True, 1)
    predictor.configuration_manager.configuration["patch_size"] = [32, 32, 32]
    with pytest.raises(ValueError, match=r"2d configuration, got patch size \[32, 32, 32\]"):
        BatchedSlicePredictor(predictor, 4)


@pytest.mark.parametrize("batch_size, error, match", [
    (0, ValueError, "batch_size must be at least 1, got 0"),
    (-3, ValueError, "got -3"),
    (2.0, TypeError, "batch_size must be an int or None, got float 2.0"),
    ("8", TypeError, "got str '8'"),
])
def test_rejects_bad_batch_sizes(plain_plans, batch_size, error, match):
    with pytest.raises(error, match=match):
        BatchedSlicePredictor(make_predictor(nnUNetTrainer, plain_plans, False, 1), batch_size)


def test_out_of_memory_retry_is_logged_not_printed(plain_plans, caplog, capsys, monkeypatch):
    batched = BatchedSlicePredictor(make_predictor(nnUNetTrainer, plain_plans, False, 1), 8)
    real_pass, failures = batched._predict_all_folds, []

    def out_of_memory_once(data):  # a GPU's out-of-memory error, on the CPU
        if not failures:
            failures.append(batched.batch_size)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real_pass(data)

    monkeypatch.setattr(batched, "_predict_all_folds", out_of_memory_once)
    volume = torch.randn(*VOLUME_SHAPE)
    capsys.readouterr()  # nnUNetPredictor's own remarks
    with caplog.at_level("WARNING", logger="pu_nnunet.inference.sliding_window_2d"):
        logits = batched.predict_logits(volume)
    assert failures == [8] and batched.batch_size == 4 and logits.shape == (NUM_CLASSES, *VOLUME_SHAPE[1:])
    assert [r.getMessage() for r in caplog.records] == ["out of GPU memory: retrying with 4 patches per forward pass"]
    assert capsys.readouterr().out == ""  # a library user silences it through logging


def test_tta_subset_equals_nnunet_mirroring_the_same_axes(plain_plans):
    """--tta-axes 1: our batched logits equal nnU-Net's predictor restricted to the same axis, and
    differ from the full TTA's (so the restriction does something)."""
    from pu_nnunet.inference.precision import restrict_mirror_axes

    volume = torch.randn(VOLUME_SHAPE, generator=torch.Generator().manual_seed(1))
    full = BatchedSlicePredictor(make_predictor(nnUNetTrainer, plain_plans, True, 1), 9).predict_logits(volume)
    predictor = make_predictor(nnUNetTrainer, plain_plans, True, 1)
    assert restrict_mirror_axes(predictor, [1]) == (1,)
    expected = predictor.predict_logits_from_preprocessed_data(volume)
    subset = BatchedSlicePredictor(predictor, 9).predict_logits(volume)
    torch.testing.assert_close(subset.float(), expected.float(), rtol=0, atol=FP16_TOLERANCE)
    assert (subset.float() - full.float()).abs().max() > FP16_TOLERANCE
    assert restrict_mirror_axes(predictor, []) == () and predictor.use_mirroring is False


def test_tta_axes_the_model_does_not_mirror_are_refused(plain_plans):
    from pu_nnunet.inference.errors import PredictionError
    from pu_nnunet.inference.precision import restrict_mirror_axes

    with pytest.raises(PredictionError, match=r"mirrors along axes \[0, 1\] only .*\[2\] is not among them"):
        restrict_mirror_axes(make_predictor(nnUNetTrainer, plain_plans, True, 1), [0, 2])


def test_precision_choices_are_checked_against_the_device():
    from pu_nnunet.inference.errors import PredictionError
    from pu_nnunet.inference.precision import check_precision

    cpu = torch.device("cpu")
    check_precision("auto", cpu, is_2d=True)
    check_precision("fp32", cpu, is_2d=False)
    with pytest.raises(PredictionError, match="fp16 is for CUDA"):
        check_precision("fp16", cpu, is_2d=True)
    with pytest.raises(PredictionError, match="must be one of auto, fp32, bf16, fp16, got 'int8'"):
        check_precision("int8", cpu, is_2d=True)


def test_bf16_on_the_cpu_runs_where_supported_and_is_refused_elsewhere(small_resenc_plans):
    """bf16 autocast of the PU network (whose PU layers keep float32 math): close to float32's
    segmentation on a CPU with bf16 kernels; a one-line refusal on one without."""
    from pu_nnunet.inference.errors import PredictionError
    from pu_nnunet.inference.precision import check_precision, cpu_has_bf16_kernels

    if not cpu_has_bf16_kernels():
        with pytest.raises(PredictionError, match="no native bf16 kernels"):
            check_precision("bf16", torch.device("cpu"), is_2d=True)
        pytest.skip("this CPU has no native bf16 kernels (AVX512-BF16 or AMX): refusal checked, bf16 run not")
    predictor = make_predictor(nnUNetTrainerPURe, small_resenc_plans, True, 1)
    volume = torch.randn(VOLUME_SHAPE, generator=torch.Generator().manual_seed(1))
    fp32 = BatchedSlicePredictor(predictor, 9).predict_logits(volume)
    bf16 = BatchedSlicePredictor(predictor, 9, precision="bf16").predict_logits(volume)
    assert torch.isfinite(bf16.float()).all()
    agreement = (bf16.argmax(0) == fp32.argmax(0)).float().mean().item()
    assert agreement >= 0.95, f"bf16 argmax agrees with float32 on {agreement:.2%} of voxels"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_cuda_precisions_agree_with_the_cpu(small_resenc_plans, precision):
    cpu_predictor = make_predictor(nnUNetTrainerPURe, small_resenc_plans, True, 1)
    volume = torch.randn(VOLUME_SHAPE, generator=torch.Generator().manual_seed(1))
    reference = BatchedSlicePredictor(cpu_predictor, 9).predict_logits(volume)
    gpu_predictor = make_predictor(nnUNetTrainerPURe, small_resenc_plans, True, 1)
    gpu_predictor.device = torch.device("cuda")
    logits = BatchedSlicePredictor(gpu_predictor, 9, precision=precision).predict_logits(volume)
    agreement = (logits.argmax(0) == reference.argmax(0)).float().mean().item()
    assert agreement >= (0.999 if precision == "fp32" else 0.95), f"{precision}: {agreement:.2%}"
