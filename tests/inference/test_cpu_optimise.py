"""``--cpu-optimise``: the optimised forward pass equals eager's, and falls back to eager where it cannot apply.

Tiny PURe networks (PU blocks in the deep stages, their no-graph inference path), 2d and 3d,
random weights: both forms run the same weights on the same input.
"""

import copy
import logging

import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from pu_nnunet.inference import cpu_optimise
from pu_nnunet.inference.cpu_optimise import CpuOptimisedNetwork, check_cpu_optimisation, use_cpu_optimisation
from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.inference.predict import prediction_settings
from pu_nnunet.inference.sliding_window_2d import BatchedSlicePredictor
from pu_nnunet.product_units import ProductUnitConv
from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe

NUM_CLASSES = 3
# float32: channels-last and fused kernels may sum in another order than eager's
FLOAT32_TOLERANCE = dict(rtol=1e-4, atol=1e-5)
# nnU-Net's fp16 tile accumulation: one unit in the last place of a logit of magnitude ~4
FP16_TOLERANCE = 1e-2


def small_pure_network(small_plans, configuration: str) -> torch.nn.Module:
    """PURe's network for 3 small stages (2d: 32x32 patch; 3d: 8x16x16, anisotropic as CT's 3d_fullres)."""
    plans = small_plans(configuration)
    manager = PlansManager(plans)
    torch.manual_seed(0)
    network = nnUNetTrainerPURe.build_network_architecture(manager, manager.get_configuration(configuration), 1,
                                                           NUM_CLASSES, False).eval()
    assert any(isinstance(m, ProductUnitConv) for m in network.modules()), "the test network must hold PU layers"
    return network


def perturbed(state: dict, seed: int) -> dict:
    """Another fold's weights: the same, perturbed."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()
            for k, v in state.items()}


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Tiny networks run fastest on one thread (tests/conftest.py)."""


@pytest.mark.parametrize("configuration, patch", [("2d", (32, 32)), ("3d_fullres", (8, 16, 16))])
@pytest.mark.parametrize("option", ["channels-last", "freeze"])
def test_optimised_forward_equals_eager_for_each_fold_and_batch_size(small_plans, configuration, patch, option,
                                                                    recwarn):
    eager = small_pure_network(small_plans, configuration)
    folds = [{k: v.clone() for k, v in eager.state_dict().items()}, perturbed(eager.state_dict(), 1)]
    optimised = CpuOptimisedNetwork(copy.deepcopy(eager), option)
    # the batch traced first, then larger and smaller ones (the tuner's sizes, a volume's last partial batch)
    inputs = [torch.randn(b, 1, *patch, generator=torch.Generator().manual_seed(b)) for b in (2, 4, 1)]
    with torch.inference_mode():
        for fold in folds * 2:  # switching back to a fold uses its own weights again
            eager.load_state_dict(fold)
            optimised.load_state_dict(fold)
            for x in inputs:
                expected, got = eager(x), optimised(x)
                assert got.shape == expected.shape and got.is_contiguous()
                torch.testing.assert_close(got, expected, **FLOAT32_TOLERANCE)
                assert torch.equal(got.argmax(1), expected.argmax(1))
    assert optimised.fallback_reason is None
    if option == "freeze":
        assert len(optimised._frozen) == 2  # one frozen graph per fold, each built once
    # torch.jit's deprecation notices and tracer notes are not the user's business
    assert not [w for w in recwarn if issubclass(w.category, (FutureWarning, torch.jit.TracerWarning))]


def test_freezing_that_fails_falls_back_to_eager_and_says_why(small_plans, monkeypatch, caplog):
    eager = small_pure_network(small_plans, "2d")
    optimised = CpuOptimisedNetwork(copy.deepcopy(eager), "freeze")

    def no_tracing(*args, **kwargs):
        raise RuntimeError("tracer cannot follow this network\nsecond line")
    monkeypatch.setattr(torch.jit, "trace", no_tracing)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger=cpu_optimise.__name__), torch.inference_mode():
        first, second = optimised(x), optimised(x)
        expected = eager(x)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert optimised.fallback_reason == "RuntimeError: tracer cannot follow this network"
    # said once, not per batch
    assert [r.getMessage() for r in caplog.records] == [
        "--cpu-optimise freeze not applied, running the eager network: RuntimeError: tracer cannot follow this network"]


def test_a_fault_of_the_input_is_raised_not_hidden_by_the_fallback(small_plans):
    optimised = CpuOptimisedNetwork(small_pure_network(small_plans, "2d"), "freeze")
    with torch.inference_mode(), pytest.raises(RuntimeError):
        optimised(torch.randn(2, 3, 32, 32))  # 3 channels for a 1-channel network: eager fails too
    assert optimised.fallback_reason is None


def test_compile_without_a_cpp_compiler_falls_back_to_eager(small_plans, monkeypatch, caplog):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, "no-such-compiler-pu-nnunet"))
    eager = small_pure_network(small_plans, "2d")
    with caplog.at_level(logging.WARNING, logger=cpu_optimise.__name__):
        optimised = CpuOptimisedNetwork(copy.deepcopy(eager), "compile")
    assert optimised.fallback_reason == ("no C++ compiler for torch.compile's CPU kernels (looked for "
                                         "no-such-compiler-pu-nnunet)")
    assert "running the eager network: no C++ compiler" in caplog.text
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(optimised(x), eager(x))


def test_compile_that_fails_falls_back_to_eager(small_plans, monkeypatch):
    def failing_compile(model, **kwargs):
        def forward(x):
            raise RuntimeError("BackendCompilerFailed: inductor could not build")
        return forward
    monkeypatch.setattr(torch, "compile", failing_compile)
    eager = small_pure_network(small_plans, "2d")
    optimised = CpuOptimisedNetwork(copy.deepcopy(eager), "compile")
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(optimised(x), eager(x))
    assert optimised.fallback_reason == "RuntimeError: BackendCompilerFailed: inductor could not build"


@pytest.mark.slow  # a real inductor compile: tens of seconds on 2 busy cores
@pytest.mark.parametrize("folds", [1, 2])  # 1: inductor's freezing; 2: weights as graph inputs
def test_compiled_forward_equals_eager(small_plans, tmp_path, monkeypatch, folds):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    eager = small_pure_network(small_plans, "2d")
    folds = [{k: v.clone() for k, v in eager.state_dict().items()}, perturbed(eager.state_dict(), 1)][:folds]
    optimised = CpuOptimisedNetwork(copy.deepcopy(eager), "compile", folds=len(folds))
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for fold in folds:  # the weights are graph inputs: switching folds needs no recompile
            eager.load_state_dict(fold)
            optimised.load_state_dict(fold)
            expected, got = eager(x), optimised(x)
            torch.testing.assert_close(got, expected, **FLOAT32_TOLERANCE)
            assert torch.equal(got.argmax(1), expected.argmax(1))
    assert optimised.fallback_reason is None


def test_sliding_window_with_a_frozen_network_agrees_with_eager(small_plans, plain_plans):
    """Through the predictor: two folds (weights switched by load_state_dict), mirroring TTA."""
    eager = small_pure_network(small_plans, "2d")
    parameters = [{k: v.clone() for k, v in eager.state_dict().items()}, perturbed(eager.state_dict(), 1)]
    plans = copy.deepcopy(plain_plans)
    plans["configurations"]["2d"]["patch_size"] = [32, 32]
    manager = PlansManager(plans)
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2},
                    "numTraining": 1, "file_ending": ".nii.gz"}

    def predictor(network):
        p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                            perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
        p.manual_initialization(network, manager, manager.get_configuration("2d"), parameters, dataset_json,
                                "nnUNetTrainerPURe", (0, 1))
        return p
    reference, frozen = predictor(eager), predictor(copy.deepcopy(eager))
    use_cpu_optimisation(frozen, "freeze")
    assert isinstance(frozen.network, CpuOptimisedNetwork)
    volume = torch.randn((1, 2, 32, 48), generator=torch.Generator().manual_seed(1))
    expected = BatchedSlicePredictor(reference, batch_size=4).predict_logits(volume)
    got = BatchedSlicePredictor(frozen, batch_size=4).predict_logits(volume)
    torch.testing.assert_close(got.float(), expected.float(), rtol=0, atol=FP16_TOLERANCE)
    assert torch.equal(got.argmax(0), expected.argmax(0))
    assert frozen.network.fallback_reason is None and len(frozen.network._frozen) == 2


def test_options_refused_where_they_cannot_apply():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    check_cpu_optimisation("freeze", cpu, "torch")
    check_cpu_optimisation("none", cuda, "onnxruntime")
    with pytest.raises(PredictionError, match=r"^--cpu-optimise freeze is for the CPU; on cuda leave it out$"):
        check_cpu_optimisation("freeze", cuda, "torch")
    with pytest.raises(PredictionError, match=r"^--cpu-optimise compile optimises PyTorch's network; --backend "
                                              r"onnxruntime runs its own$"):
        check_cpu_optimisation("compile", cpu, "onnxruntime")
    with pytest.raises(PredictionError, match=r"^--cpu-optimise must be one of none, channels-last, freeze, compile, "
                                              r"got 'fast'$"):
        check_cpu_optimisation("fast", cpu, "torch")


def test_the_model_record_pins_the_option_only_when_given():
    cpu = torch.device("cpu")
    default = prediction_settings(True, None, "auto", cpu, "torch", None)
    assert "cpu_optimise" not in default  # folders predicted before the option existed still continue
    assert prediction_settings(True, None, "auto", cpu, "torch", None, "none") == default
    frozen = prediction_settings(True, None, "auto", cpu, "torch", None, "freeze")
    assert frozen == {**default, "cpu_optimise": "freeze"}


@pytest.mark.slow  # the shared tiny trained model
def test_predict_2d_with_a_frozen_network_writes_eager_segmentations(tiny_trained_model, tmp_path, capsys):
    """Our batched sliding window."""
    _predict_frozen_and_eager(tiny_trained_model, tmp_path, capsys)


@pytest.mark.slow  # the shared tiny trained model
def test_predict_3d_with_a_frozen_network_writes_eager_segmentations(tiny_trained_model_3d, tmp_path, capsys):
    """nnU-Net's own 3d sliding window, which loads each fold's weights into the network it holds."""
    _predict_frozen_and_eager(tiny_trained_model_3d, tmp_path, capsys)


def _predict_frozen_and_eager(trained: dict, tmp_path, capsys) -> None:
    """The same segmentation voxel for voxel; the option in the model record; --continue without it refused."""
    import json

    import numpy as np
    import SimpleITK as sitk

    from pu_nnunet.cli import main
    from pu_nnunet.provenance import MODEL_RECORD_FILE

    model = trained["fold"].parent
    image = sorted((trained["dataset"] / "imagesTs").glob("*_0000.nii.gz"))[0]
    common = ["predict", "-i", str(image), "-m", str(model), "--device", "cpu"]
    assert main([*common, "-o", str(tmp_path / "eager")]) == 0
    assert main([*common, "-o", str(tmp_path / "frozen"), "--cpu-optimise", "freeze"]) == 0
    capsys.readouterr()
    name = image.name.replace("_0000.nii.gz", ".nii.gz")
    eager, frozen = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / run / name))) for run in ("eager", "frozen"))
    assert np.array_equal(frozen, eager) and len(np.unique(eager)) > 1
    record = json.loads((tmp_path / "frozen" / MODEL_RECORD_FILE).read_text())
    assert record["prediction"]["cpu_optimise"] == "freeze"
    # continuing the folder without the option would mix two kinds of segmentation
    code = main([*common, "-o", str(tmp_path / "frozen"), "--continue"])
    assert code == 1
    assert "cpu_optimise freeze there, None now" in capsys.readouterr().err


def test_an_optimised_form_that_disagrees_with_eager_is_dropped(small_plans, monkeypatch, caplog):
    """Stale weights (another fold's constants) or a miscompile: caught on the first batch of each
    fold and shape, the eager network's logits used."""
    eager = small_pure_network(small_plans, "2d")
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: lambda x: model(x) + 0.5)
    optimised = CpuOptimisedNetwork(copy.deepcopy(eager), "compile")
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger=cpu_optimise.__name__), torch.inference_mode():
        assert torch.equal(optimised(x), eager(x)) and torch.equal(optimised(x), eager(x))
    assert optimised.fallback_reason == "its logits differ from the eager network's by up to 0.5 on a batch of " \
                                        "shape [2, 1, 32, 32]"
    assert caplog.text.count("not applied") == 1


def test_inductor_freezes_the_weights_only_with_one_fold(small_plans):
    network = small_pure_network(small_plans, "2d")
    assert CpuOptimisedNetwork(network, "compile").freezing
    assert not CpuOptimisedNetwork(network, "compile", folds=2).freezing
    assert not CpuOptimisedNetwork(network, "freeze").freezing
