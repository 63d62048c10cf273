"""The PURe classification networks and their matched ResNets: the paper's structure and counts."""

import math

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pu_nnunet.architectures import CLASSIFIER_NAMES, PURE_NAMES, create_classifier, matched_resnet
from pu_nnunet.architectures.classification import PadShortcut
from pu_nnunet.product_units import ProductUnitConv

# the paper's counts: exact at 1000 classes (ResNet18/34 as torchvision counts them, plus one
# threshold per PU layer), and its rounded millions at 10 classes for the CIFAR family
EXACT_PARAMETERS = {"resnet18": 11_689_512, "pure18": 11_689_520, "resnet34": 21_797_672, "pure34": 21_797_688}
PAPER_CIFAR_MILLIONS = {"pure20": 0.27, "pure32": 0.46, "pure44": 0.66, "pure56": 0.85, "pure110": 1.73,
                        "pure272": 4.36}
PU_BLOCKS = {"pure18": 8, "pure34": 16, "pure20": 9, "pure32": 15, "pure44": 21, "pure56": 27, "pure110": 54,
             "pure272": 135}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tensors this small gain nothing from a second thread, and on a shared machine every
    # multithreaded op waits for it (PURe272's forward+backward: 1 s with 1 thread, 25 s with 2 busy)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class FunctionRecorder(TorchFunctionMode):
    """Records the name of every torch function called (F.relu, torch.relu, Tensor.relu_, ...)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", repr(func)))
        return func(*args, **(kwargs or {}))


def small_input(name: str, in_channels: int = 3) -> torch.Tensor:
    # 64 px -> 2x2 in the ImageNet layout's last stage (BN sees several values per channel),
    # 16 px -> 4x4 in the CIFAR layout's
    size = 64 if name in ("pure18", "pure34", "resnet18", "resnet34") else 16
    return torch.randn(2, in_channels, size, size)


@pytest.mark.parametrize("name", list(EXACT_PARAMETERS))
def test_imagenet_parameter_counts_are_the_papers(name):
    assert n_params(create_classifier(name, num_classes=1000)) == EXACT_PARAMETERS[name]


@pytest.mark.parametrize("name", list(PAPER_CIFAR_MILLIONS))
def test_cifar_parameter_counts_within_one_percent_of_the_papers(name):
    pure, resnet = create_classifier(name, num_classes=10), create_classifier(matched_resnet(name), num_classes=10)
    paper = PAPER_CIFAR_MILLIONS[name] * 1e6
    assert abs(n_params(pure) - paper) / paper < 0.01
    # one trainable threshold per PU layer is all PURe adds
    assert n_params(pure) - n_params(resnet) == PU_BLOCKS[name]


def test_projection_shortcuts_would_miss_the_papers_cifar_counts():
    # why the CIFAR layout uses He et al.'s zero-pad shortcut: 1x1-conv shortcuts add 2,752
    # parameters, 1.5 % over the paper's 0.46 M for PURe32
    padded = n_params(create_classifier("pure32"))
    projected = n_params(create_classifier("pure32", shortcut="projection"))
    assert projected - padded == 16 * 32 + 32 * 64 + 2 * (32 + 64)
    assert abs(projected - 0.46e6) / 0.46e6 > 0.01


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
def test_imagenet_resnets_load_torchvisions_state_dict_and_compute_the_same(name):
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    reference = getattr(models, name)(weights=None).eval()
    ours = create_classifier(name).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("name", CLASSIFIER_NAMES)
def test_forward_backward_and_relus(name):
    torch.manual_seed(0)
    model = create_classifier(name, num_classes=7).train()
    x = small_input(name)
    with FunctionRecorder() as recorder:
        logits = model(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 6])).backward()
    for parameter_name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), parameter_name
    relu_calls = [n for n in recorder.names if "relu" in n.lower()]
    modules = list(model.modules())
    if name in PURE_NAMES:
        assert not relu_calls
        assert not any(isinstance(m, nn.ReLU) or "relu" in type(m).__name__.lower() for m in modules)
        assert sum(isinstance(m, ProductUnitConv) for m in modules) == PU_BLOCKS[name]
    else:
        # the stem's, and two per block: the check above would see a ReLU if there were one
        assert len(relu_calls) == 1 + 2 * sum(model.blocks_per_stage)
        assert not any(isinstance(m, ProductUnitConv) for m in modules)


@pytest.mark.parametrize("name", PURE_NAMES)
def test_pure_and_its_resnet_differ_only_in_second_layers_and_relus(name):
    pure, resnet = create_classifier(name), create_classifier(matched_resnet(name))
    pure_modules, resnet_modules = dict(pure.named_modules()), dict(resnet.named_modules())
    assert pure_modules.keys() == resnet_modules.keys()
    second_layers = [n for n in pure_modules if n.endswith(".conv2")]
    assert len(second_layers) == PU_BLOCKS[name]
    for module_name, module in pure_modules.items():
        twin = resnet_modules[module_name]
        if module_name in second_layers:
            assert isinstance(module, ProductUnitConv) and type(twin) is nn.Conv2d
            assert (module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding) == \
                   (twin.in_channels, twin.out_channels, twin.kernel_size, twin.stride, twin.padding)
        elif isinstance(twin, nn.ReLU):
            assert type(module) is nn.Identity, module_name
        else:
            assert type(module) is type(twin), module_name
            assert module.extra_repr() == twin.extra_repr(), module_name
    pure_state, resnet_state = pure.state_dict(), resnet.state_dict()
    assert set(pure_state) == set(resnet_state) | {f"{n}.theta" for n in second_layers}
    for key, value in resnet_state.items():
        assert pure_state[key].shape == value.shape, key


def test_pure_forms_and_initialisation():
    paper, stable = create_classifier("pure18"), create_classifier("pure18", pu_form="stable")
    paper_pu = [m for m in paper.modules() if isinstance(m, ProductUnitConv)]
    assert all(m.positivity == "threshold" and m.log_input_clip is None and m.log_output_clip is None
               for m in paper_pu)
    assert all(float(m.theta.detach()) == 0.0 for m in paper_pu)
    stable_pu = [m for m in stable.modules() if isinstance(m, ProductUnitConv)]
    assert all(m.positivity == "softplus" and m.log_input_clip == 6.0 and m.log_output_clip == 10.0
               for m in stable_pu)
    assert n_params(stable) == n_params(create_classifier("resnet18"))  # no threshold to learn
    # exponents: Kaiming uniform with a = 5, bound sqrt(6 / ((1 + 25) fan_in))
    pu = paper.layer4[1].conv2
    bound = math.sqrt(6 / (26 * 512 * 9))
    assert pu.weight.abs().max() <= bound and pu.weight.abs().max() > 0.99 * bound
    # other convs: Kaiming normal, fan_out, std sqrt(2 / fan_out); BN weight 1, bias 0
    conv = paper.layer4[1].conv1.weight
    assert abs(conv.std().item() / math.sqrt(2 / (512 * 9)) - 1) < 0.02
    for m in paper.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()


@pytest.mark.parametrize("name", ["pure18", "pure20"])
def test_in_channels_and_num_classes(name):
    model = create_classifier(name, num_classes=3, in_channels=1)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 3
    assert model(small_input(name, in_channels=1)).shape == (2, 3)
    assert create_classifier(name).fc.out_features == (1000 if name == "pure18" else 10)


def test_pad_shortcut_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 4, 6, 6)
    y = PadShortcut(4, 8, 2)(x)
    assert y.shape == (2, 8, 3, 3)
    torch.testing.assert_close(y[:, 2:6], x[:, :, ::2, ::2])
    assert (y[:, :2] == 0).all() and (y[:, 6:] == 0).all()


@pytest.mark.parametrize("call, message", [
    (lambda: create_classifier("pure19"), "name must be one of"),
    (lambda: create_classifier("pure18", pu_form="soft"), "pu_form"),
    (lambda: create_classifier("pure20", shortcut="conv"), "shortcut"),
    (lambda: create_classifier("pure20", num_classes=0), "num_classes"),
    (lambda: create_classifier("pure20", in_channels="3"), "in_channels"),
    (lambda: create_classifier("pure20", channels_per_stage=(16, 32)), "blocks_per_stage"),
    (lambda: matched_resnet("resnet20"), "name must be one of"),
    (lambda: PadShortcut(8, 4, 2), "cannot drop channels"),
])
def test_invalid_arguments_raise_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("a", [5.0, math.sqrt(5.0)])
def test_exponent_init_a_reaches_every_pu_of_the_classifier(a):
    torch.manual_seed(0)
    pus = [m for m in create_classifier("pure20", num_classes=10, in_channels=1, exponent_init_a=a).modules()
           if isinstance(m, ProductUnitConv)]
    assert len(pus) == 9
    for pu in pus:
        bound = math.sqrt(6.0 / ((1 + a * a) * pu.weight[0].numel()))
        assert pu.exponent_init_a == a and 0.95 * bound < pu.weight.abs().max().item() <= bound
