"""torch.compile of the networks the trainers build: no graph breaks, same values as eager.

On CUDA nnUNetTrainer compiles the network by default; a graph break per PU call would split
it into pieces. Dynamo's tracing (what breaks a graph) is the same on the CPU, so the break
count is tested here with cheap backends; one real inductor compile checks the generated code.
"""

import pytest
import torch
import torch._dynamo
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from pu_nnunet.product_units import ProductUnitConv
from pu_nnunet.trainers.pure_trainers import (nnUNetTrainerPURe, nnUNetTrainerPURe_AllStages,
                                              nnUNetTrainerPURe_Unstabilised)


class _ThresholdClipped(nnUNetTrainerPURe):
    """PURe's threshold positivity with the log-domain clips (a combination no shipped trainer has)."""

    pu_positivity = "threshold"


class _SoftplusUnclipped(nnUNetTrainerPURe):
    pu_log_input_clip = None
    pu_log_output_clip = None


# every positivity x clip combination; AllStages puts PU blocks in every stage (HighResStages' too)
TRAINERS = [nnUNetTrainerPURe, nnUNetTrainerPURe_AllStages, nnUNetTrainerPURe_Unstabilised, _ThresholdClipped,
            _SoftplusUnclipped]
# float32: compiled kernels may sum in another order than eager's
FLOAT32_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def build(trainer, plans: dict, configuration: str, deep_supervision: bool = True) -> nn.Module:
    manager = PlansManager(plans)
    return trainer.build_network_architecture(manager, manager.get_configuration(configuration), 1, 3,
                                              deep_supervision)


def patch_batch(plans: dict, configuration: str, batch: int = 2, seed: int = 0) -> torch.Tensor:
    patch = plans["configurations"][configuration]["patch_size"]
    return torch.randn(batch, 1, *patch, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("configuration", ["2d", "3d_fullres"])
@pytest.mark.parametrize("trainer", TRAINERS, ids=lambda t: t.__name__.replace("nnUNetTrainer", ""))
def test_trainer_networks_have_no_graph_break(small_plans, one_torch_thread, configuration, trainer):
    plans = small_plans(configuration)
    network = build(trainer, plans, configuration)
    assert any(isinstance(m, ProductUnitConv) for m in network.modules())
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(network)(patch_batch(plans, configuration))
    reasons = [str(r.reason).splitlines()[0] for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1


def _randomise_norms(network: nn.Module, seed: int = 0) -> None:
    """A fresh PU block's last norm is zero, so its PU would get no gradient: give it one."""
    generator = torch.Generator().manual_seed(seed)
    for module in network.modules():
        if isinstance(module, (nn.InstanceNorm2d, nn.InstanceNorm3d)) and module.weight is not None:
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))


def _output_and_gradients(network: nn.Module, forward, x: torch.Tensor):
    """Outputs, input gradient and parameter gradients of ``forward`` (network or its compiled form)."""
    network.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    outputs = forward(x)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    loss = sum((o.float() ** 2).mean() for o in outputs)
    loss.backward()
    return [o.detach() for o in outputs], x.grad, {n: p.grad for n, p in network.named_parameters()}


def assert_same_values(compiled, eager) -> None:
    torch.testing.assert_close(compiled[0], eager[0], **FLOAT32_TOLERANCE)
    torch.testing.assert_close(compiled[1], eager[1], **FLOAT32_TOLERANCE)
    for name, grad in eager[2].items():
        if grad is None:
            assert compiled[2][name] is None, name
        else:
            torch.testing.assert_close(compiled[2][name], grad, **FLOAT32_TOLERANCE, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("trainer", [nnUNetTrainerPURe, _ThresholdClipped, nnUNetTrainerPURe_Unstabilised],
                         ids=["softplus_clipped", "threshold_clipped", "threshold_unclipped"])
def test_compiled_forward_and_gradients_equal_eager(small_plans, one_torch_thread, trainer):
    plans = small_plans("2d")
    torch.manual_seed(0)
    network = build(trainer, plans, "2d")
    _randomise_norms(network)
    # scaled so that both log-domain clips bite on some elements
    x = 30 * patch_batch(plans, "2d", seed=1)
    eager = _output_and_gradients(network, network, x)
    pu_weight_grads = [name for name in eager[2] if name.endswith("pu.weight")]
    assert pu_weight_grads and all(eager[2][name].abs().sum() > 0 for name in pu_weight_grads)
    torch._dynamo.reset()
    # aot_eager: dynamo + AOTAutograd (forward and backward graphs) with eager kernels; fullgraph
    # raises at the first graph break
    compiled = torch.compile(network, backend="aot_eager", fullgraph=True)
    assert_same_values(_output_and_gradients(network, compiled, x), eager)


@pytest.mark.slow  # over 8 s on 2 cores: the full suite runs it, the quick lane does not
def test_inductor_compiles_a_pu_layer_to_the_eager_values(tmp_path, monkeypatch, one_torch_thread):
    """A real inductor compile (generated C++ built with gcc) of a PU layer, forward and backward."""
    # a fresh kernel cache: the test compiles whatever an earlier run left on the machine
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.manual_seed(0)
    layer = ProductUnitConv(nn.Conv2d, 4, 4, 3)
    x = 30 * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    eager = _output_and_gradients(layer, layer, x)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="inductor", fullgraph=True)
    assert_same_values(_output_and_gradients(layer, compiled, x), eager)
