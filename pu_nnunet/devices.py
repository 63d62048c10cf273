"""The one rule for ``--device``, shared by every command that computes with torch.

``auto``: CUDA when torch sees a GPU, else the CPU; ``cpu``; ``cuda``: torch's current GPU;
``cuda:N``: GPU N of those torch sees (numbered from 0 after ``CUDA_VISIBLE_DEVICES``).
A name outside the rule, or a GPU this machine does not have, is a :class:`DeviceError` that
names the option and the value.

``--devices`` (``study run``: one job per device at a time) is a list of names of the same rule,
each checked by it; there ``auto`` means every GPU torch sees (``cuda:0 ... cuda:N-1``), else the
CPU, and ``cuda`` means ``cuda:0`` (:func:`resolve_device_list`).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pu_nnunet.user_errors import UserInputError

if TYPE_CHECKING:
    import torch

AUTO, CPU, CUDA = "auto", "cpu", "cuda"
# what --help shows; cuda:N stands for cuda:0, cuda:1, ...
DEVICE_METAVAR = "{auto,cpu,cuda,cuda:N}"
_CUDA_INDEX = re.compile(r"cuda:(\d+)")
_RULE = "is not a device: use auto, cpu, cuda or cuda:N (N = 0, 1, ...)"


class DeviceError(UserInputError, ValueError):
    """A device name outside the rule, or a GPU that torch does not see."""


def _follows_rule(value: str) -> bool:
    return value in (AUTO, CPU, CUDA) or _CUDA_INDEX.fullmatch(value) is not None


def check_device_name(value: object, option: str = "--device") -> str:
    """``value`` when it follows the rule; checks the spelling only (no torch import, no GPU query)."""
    if not isinstance(value, str):
        raise TypeError(f"{option} must be a str (auto, cpu, cuda or cuda:N), got {type(value).__name__} {value!r}")
    if _follows_rule(value):
        return value
    raise DeviceError(f"{option} {value!r} {_RULE}")


def resolve_device(value: object, option: str = "--device", allow_index: bool = True) -> "torch.device":
    """The torch.device for a name of the rule; a GPU torch does not see is a DeviceError.

    ``allow_index=False`` is for commands that hand the device to nnU-Net's own console scripts
    (``nnUNetv2_train -device`` takes cpu or cuda and picks the GPU from CUDA_VISIBLE_DEVICES):
    ``cuda:N`` is then refused with the command that does the same.
    """
    import torch

    if isinstance(value, torch.device):
        value = str(value)
    name = check_device_name(value, option)
    match = _CUDA_INDEX.fullmatch(name)
    if match is not None and not allow_index:
        raise DeviceError(f"{option} {name!r}: this command runs nnU-Net's own commands, which take the GPU "
                          f"from CUDA_VISIBLE_DEVICES; run it as CUDA_VISIBLE_DEVICES={match.group(1)} ... "
                          f"{option} cuda")
    if name == CPU:
        return torch.device(CPU)
    has_gpu = torch.cuda.is_available()
    if name == AUTO:
        return torch.device(CUDA if has_gpu else CPU)
    if not has_gpu:
        raise DeviceError(f"{option} {name!r}: torch sees no CUDA GPU (torch.cuda.is_available() is False: "
                          f"a CPU-only torch build, or no driver); use {option} cpu or auto")
    if match is None:
        return torch.device(CUDA)
    index, count = int(match.group(1)), torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"{option} {name!r}: torch sees {count} CUDA GPU(s), numbered 0 to {count - 1}")
    return torch.device(CUDA, index)


def resolve_device_list(values: Sequence[str] | str | None, option: str = "--devices") -> list[str]:
    """Several devices, each a name of the rule, as explicit names (``cpu``, ``cuda:N``).

    ``auto`` (also when ``values`` is empty or None) is every GPU torch sees, else ``cpu``; ``cuda``
    is ``cuda:0``; a GPU torch does not see is a :class:`DeviceError`, as for :func:`resolve_device`.
    The order is kept; what a list may combine is the caller's rule."""
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values or [AUTO]:
        device = resolve_device(check_device_name(value, option), option)
        if value == AUTO:
            import torch

            count = torch.cuda.device_count() if device.type == CUDA else 0
            names.extend([f"{CUDA}:{index}" for index in range(count)] or [CPU])
        else:
            names.append(CPU if device.type == CPU else f"{CUDA}:{device.index or 0}")
    return names


def visible_devices_for(index: int, environment: Mapping[str, str]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` value that shows a child process GPU ``index`` as this process
    numbers it: the index-th entry of this process's own CUDA_VISIBLE_DEVICES when it sets one
    (torch numbers the GPUs it lists from 0), else the index itself."""
    listed = [entry.strip() for entry in environment.get("CUDA_VISIBLE_DEVICES", "").split(",") if entry.strip()]
    if not listed:
        return str(index)
    if index >= len(listed):
        raise DeviceError(f"cuda:{index}: CUDA_VISIBLE_DEVICES={environment['CUDA_VISIBLE_DEVICES']} shows "
                          f"{len(listed)} GPU(s), numbered 0 to {len(listed) - 1}")
    return listed[index]


def _argument_name(value: str) -> str:
    """argparse ``type`` of ``--device`` and ``--devices``: the spelling only (argparse prefixes
    "argument --device:")."""
    if _follows_rule(value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} {_RULE}")


def _gpu_help(allow_index: bool) -> str:
    return "cuda:N = GPU N" if allow_index else "pick the GPU with CUDA_VISIBLE_DEVICES=N and --device cuda"


def add_device_argument(parser: argparse.ArgumentParser, purpose: str, allow_index: bool = True) -> None:
    """``--device``, its spelling checked when the arguments are parsed (availability later, by
    :func:`resolve_device`); ``allow_index`` as there."""
    parser.add_argument("--device", type=_argument_name, default=AUTO, metavar=DEVICE_METAVAR,
                        help=f"{purpose}: auto = CUDA when torch sees a GPU, else the CPU (default); "
                             f"{_gpu_help(allow_index)}")
    # nnU-Net's spelling (nnUNetv2_train/predict -device), accepted; kept out of the help and messages
    parser.add_argument("-device", dest="device", type=_argument_name, default=AUTO, help=argparse.SUPPRESS)


def add_devices_argument(parser, purpose: str) -> None:
    """``--devices``: names of the same rule (spelling checked when parsed, availability and the
    list's meaning by :func:`resolve_device_list`); default None, which is auto. ``parser`` may be
    an argument group."""
    parser.add_argument("--devices", nargs="+", type=_argument_name, metavar=DEVICE_METAVAR,
                        help=f"{purpose}: auto = every GPU torch sees, else the CPU (default); "
                             f"{_gpu_help(True)}, cuda = cuda:0")
