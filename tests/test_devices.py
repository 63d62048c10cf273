"""The one --device rule (pu_nnunet.devices) and the commands that use it.

GPU presence is set with monkeypatch on torch.cuda, so every branch runs on a CPU-only machine;
the resolver itself never touches a GPU (a torch.device is a name until a tensor goes there).
"""

import argparse

import pytest
import torch

from pu_nnunet.cli import main
from pu_nnunet.devices import (DeviceError, add_device_argument, add_devices_argument, check_device_name,
                               resolve_device, resolve_device_list, visible_devices_for)
from pu_nnunet.user_errors import UserInputError


@pytest.fixture
def gpus(monkeypatch):
    """gpus(n): torch reports n CUDA GPUs."""

    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_count


@pytest.mark.parametrize("n_gpus, name, expected", [
    (0, "auto", torch.device("cpu")),
    (2, "auto", torch.device("cuda")),
    (0, "cpu", torch.device("cpu")),
    (2, "cpu", torch.device("cpu")),
    (1, "cuda", torch.device("cuda")),
    (2, "cuda:1", torch.device("cuda", 1)),
    (0, torch.device("cpu"), torch.device("cpu")),
])
def test_resolves_the_rule(gpus, n_gpus, name, expected):
    gpus(n_gpus)
    assert resolve_device(name) == expected


@pytest.mark.parametrize("n_gpus, name, message", [
    (2, "tpu", "--device 'tpu' is not a device: use auto, cpu, cuda or cuda:N"),
    (2, "CUDA", "--device 'CUDA' is not a device"),
    (2, "cuda:", "--device 'cuda:' is not a device"),
    (2, "cuda:-1", "--device 'cuda:-1' is not a device"),
    (2, "", "--device '' is not a device"),
    (0, "cuda", "--device 'cuda': torch sees no CUDA GPU"),
    (0, "cuda:0", "--device 'cuda:0': torch sees no CUDA GPU"),
    (2, "cuda:2", r"--device 'cuda:2': torch sees 2 CUDA GPU\(s\), numbered 0 to 1"),
])
def test_bad_devices_name_the_option_and_value(gpus, n_gpus, name, message):
    gpus(n_gpus)
    with pytest.raises(DeviceError, match=message) as caught:
        resolve_device(name)
    # one class for the command line (UserInputError) and for library callers (ValueError)
    assert isinstance(caught.value, UserInputError) and isinstance(caught.value, ValueError)


def test_option_name_and_type():
    with pytest.raises(DeviceError, match="^device 'gpu' is not a device"):
        resolve_device("gpu", option="device")
    with pytest.raises(TypeError, match="--device must be a str .* got int 0"):
        check_device_name(0)


def test_commands_running_nnunet_refuse_a_gpu_index_even_without_a_gpu(gpus):
    gpus(0)
    with pytest.raises(DeviceError, match="CUDA_VISIBLE_DEVICES=1 .* --device cuda"):
        resolve_device("cuda:1", allow_index=False)
    gpus(1)
    assert resolve_device("cuda", allow_index=False) == torch.device("cuda")


def test_argparse_checks_the_spelling(capsys):
    parser = argparse.ArgumentParser(prog="x")
    add_device_argument(parser, "where it runs")
    assert parser.parse_args([]).device == "auto"
    assert parser.parse_args(["--device", "cuda:3"]).device == "cuda:3"  # availability is checked later
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["--device", "gpu"])
    assert caught.value.code == 2
    assert "argument --device: 'gpu' is not a device" in capsys.readouterr().err


@pytest.mark.parametrize("command", [
    ["evaluate", "pred", "ref", "-o", "out"],
    ["predict", "-i", "in", "-o", "out", "-m", "model"],
    ["demo"],
])
def test_every_command_takes_the_rule(command, capsys):
    with pytest.raises(SystemExit) as caught:
        main([*command, "--device", "mps"])
    assert caught.value.code == 2
    assert "argument --device: 'mps' is not a device: use auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_demo_refuses_a_gpu_index_before_any_work(tmp_path, capsys):
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--device", "cuda:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pu-nnunet demo: error: --device 'cuda:1'") and "CUDA_VISIBLE_DEVICES=1" in err
    assert not workdir.exists()


@pytest.mark.parametrize("n_gpus, names, expected", [
    (0, None, ["cpu"]),
    (0, ["auto"], ["cpu"]),
    (3, None, ["cuda:0", "cuda:1", "cuda:2"]),
    (3, "auto", ["cuda:0", "cuda:1", "cuda:2"]),
    (2, ["cuda"], ["cuda:0"]),
    (2, ["cuda:1", "cpu"], ["cuda:1", "cpu"]),  # what a list may combine is its command's rule
])
def test_device_lists_follow_the_same_rule(gpus, n_gpus, names, expected):
    gpus(n_gpus)
    assert resolve_device_list(names) == expected


@pytest.mark.parametrize("n_gpus, name", [(2, "gpu"), (2, "CUDA"), (2, "cuda:"), (2, ""), (0, "cuda:0"), (2, "cuda:2")])
def test_a_bad_name_gets_the_same_message_in_a_list(gpus, n_gpus, name):
    gpus(n_gpus)
    with pytest.raises(DeviceError) as single:
        resolve_device(name)
    with pytest.raises(DeviceError) as listed:
        resolve_device_list(["cpu" if n_gpus == 0 else "cuda:0", name])
    assert str(single.value).startswith(f"--device {name!r}")
    assert str(listed.value) == str(single.value).replace("--device ", "--devices ")


def test_device_and_devices_share_the_spelling_check_and_help(capsys):
    parser = argparse.ArgumentParser(prog="x")
    add_device_argument(parser, "where it runs")
    add_devices_argument(parser, "where the jobs run")
    assert parser.parse_args(["--devices", "auto", "cuda:3"]).devices == ["auto", "cuda:3"]
    assert parser.parse_args([]).devices is None  # auto
    errors = []
    for option in ("--device", "--devices"):
        with pytest.raises(SystemExit):
            parser.parse_args([option, "mps"])
        errors.append(capsys.readouterr().err.strip().splitlines()[-1])
    assert errors[0] == "x: error: argument --device: 'mps' is not a device: use auto, cpu, cuda or cuda:N (N = 0, 1, ...)"
    assert errors[1] == errors[0].replace("--device:", "--devices:")
    usage = parser.format_help()
    assert "--device {auto,cpu,cuda,cuda:N}" in usage and "--devices {auto,cpu,cuda,cuda:N}" in usage


def test_a_gpu_index_is_passed_on_through_cuda_visible_devices():
    assert visible_devices_for(1, {}) == "1"
    assert visible_devices_for(1, {"CUDA_VISIBLE_DEVICES": "2, 3"}) == "3"
    assert visible_devices_for(0, {"CUDA_VISIBLE_DEVICES": ""}) == "0"
    with pytest.raises(DeviceError, match="cuda:2: CUDA_VISIBLE_DEVICES=2,3 shows 2 GPU"):
        visible_devices_for(2, {"CUDA_VISIBLE_DEVICES": "2,3"})
