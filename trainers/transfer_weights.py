"""Trained weights from one trainer's network to another's, for ``nnUNetv2_train -pretrained_weights``.

nnU-Net's loader (nnunetv2/run/load_pretrained_weights.py) is strict: every key of the network
except the segmentation heads (``.seg_layers.``) must be in the file with the same shape, so a
ResEnc or baseline checkpoint cannot start PURe (its PU layers are missing) nor the reverse. The
residual-encoder U-Nets that this package's trainers and nnU-Net's ResEnc presets build from the
same plans share every tensor outside the blocks where a PU replaces the second convolution; this
module copies those and gives the target's own initialisation to the rest:

- copied: a target tensor whose name and shape are in the source;
- initialised: a target tensor the source lacks (PU layers, or the plain convolutions a PU block
  replaced) and the segmentation heads, which nnU-Net's loader never transfers;
- dropped: a source tensor the target has no place for.

A source of other plans or another architecture (a different shape under the same name, or a
missing tensor that every variant of the architecture has) is refused: copying part of it would
start training from a network that is neither pretrained nor freshly initialised.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pu_nnunet.user_errors import UserInputError
from pu_nnunet.user_files import read_user_json

# nnU-Net's load_pretrained_weights skips keys containing this (the 1x1 layers producing the
# segmentation, whose number of outputs depends on the dataset's labels)
SEGMENTATION_HEAD_MARK = ".seg_layers."
# the checkpoint entry nnU-Net's loader reads; nnUNetTrainer.save_checkpoint writes it
NETWORK_WEIGHTS_KEY = "network_weights"
# where the written file records what was done (nnU-Net ignores every other entry)
TRANSFER_RECORD_KEY = "pu_nnunet_transfer"


class TransferError(UserInputError):
    """A checkpoint, plans file or trainer that ``pu-nnunet transfer-weights`` cannot use."""


@dataclass
class Transfer:
    """The target network's weights with what came from the source, by key."""

    weights: dict[str, torch.Tensor]
    copied: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def record(self) -> dict:
        return {"copied": self.copied, "initialised": self.initialised, "dropped": self.dropped}


def read_checkpoint(path: str | Path) -> dict:
    """An nnU-Net checkpoint (or a file this module wrote): a dict with ``network_weights``."""
    path = Path(path)
    if not path.is_file():
        raise TransferError(f"{path}: checkpoint not found" if not path.exists() else f"{path}: is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, ValueError, AttributeError,
            ModuleNotFoundError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TransferError(f"{path}: not a readable PyTorch checkpoint (truncated or another format): {reason}") \
            from None
    weights = checkpoint.get(NETWORK_WEIGHTS_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict) or not weights or \
            not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise TransferError(f"{path}: not an nnU-Net checkpoint (no '{NETWORK_WEIGHTS_KEY}' tensors); pass a "
                            "fold's checkpoint_final.pth or checkpoint_best.pth")
    broken = [key for key, value in weights.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        # a diverged training's weights: copied, they would start the new training from NaN
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise TransferError(f"{path}: tensor {broken[0]}{more} holds NaN or infinite values (a diverged training?); "
                            "transfer from a checkpoint of a training that converged")
    return checkpoint


def find_trainer(name: str) -> type:
    """The trainer ``nnUNetv2_train -tr name`` would use (trainers/registry.py)."""
    from pu_nnunet.trainers.registry import find_trainer_class

    trainer = find_trainer_class(name)
    if trainer is None:
        raise TransferError(f"--to {name}: no such nnU-Net trainer (neither nnU-Net's nor pu-nnunet's; set "
                            "nnUNet_extTrainer for trainers of your own)")
    return trainer


@dataclass
class TargetSpec:
    """What builds the target network: nnU-Net's managers for the plans and channel counts."""

    plans_manager: object
    configuration_manager: object
    num_input_channels: int
    num_output_channels: int


def target_spec(plans_path: str | Path, configuration: str, dataset_json_path: str | Path) -> TargetSpec:
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = read_user_json(plans_path, "plans", dict, TransferError, allow_nan=True)
    configurations = plans.get("configurations")
    if not isinstance(configurations, dict) or not configurations:
        raise TransferError(f"{plans_path}: no configurations; is it an nnU-Net plans file?")
    if configuration not in configurations:
        raise TransferError(f"{plans_path}: no configuration {configuration!r} (the plans have "
                            f"{', '.join(sorted(configurations))})")
    dataset_json = read_user_json(dataset_json_path, "dataset.json", dict, TransferError)
    if not isinstance(dataset_json.get("labels"), dict) or not isinstance(dataset_json.get("channel_names"), dict):
        raise TransferError(f"{dataset_json_path}: not an nnU-Net dataset.json (needs 'labels' and "
                            "'channel_names'); pass --dataset-json")
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    return TargetSpec(plans_manager, configuration_manager,
                      determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
                      plans_manager.get_label_manager(dataset_json).num_segmentation_heads)


def build_network(trainer: type, spec: TargetSpec) -> nn.Module:
    """The network exactly as the trainer builds it for training (deep supervision on)."""
    from pu_nnunet.trainers.plans_to_network import UnsupportedPlansError

    try:
        return trainer.build_network_architecture(spec.plans_manager, spec.configuration_manager,
                                                  spec.num_input_channels, spec.num_output_channels, True)
    except UnsupportedPlansError:
        raise
    except (ValueError, TypeError, KeyError, AssertionError) as error:
        raise TransferError(f"{trainer.__name__} cannot build a network from these plans: "
                            f"{type(error).__name__}: {error}") from None


def variant_keys(spec: TargetSpec) -> set[str]:
    """Keys that exist in some variants of the residual-encoder U-Net of these plans but not in
    others (PU layers, and the plain convolutions they replace): a source may lack them. Empty
    when this package's networks cannot mirror the plans (then every key is required)."""
    from pu_nnunet.trainers.plans_to_network import UnsupportedPlansError
    from pu_nnunet.trainers.pure_trainers import nnUNetTrainerPURe_AllStages, nnUNetTrainerPUReBaseline

    key_sets = []
    # the two extremes: plain residual blocks everywhere, PU blocks in every stage
    for trainer in (nnUNetTrainerPUReBaseline, nnUNetTrainerPURe_AllStages):
        try:
            # on the meta device: only names and shapes are needed, no memory for the weights
            with torch.device("meta"):
                key_sets.append(set(build_network(trainer, spec).state_dict()))
        except UnsupportedPlansError:
            return set()
    return key_sets[0] ^ key_sets[1]


def transfer(source: dict[str, torch.Tensor], target: nn.Module, optional_keys: set[str],
             source_name: str) -> Transfer:
    """Copies every source tensor whose name and shape the target has (segmentation heads aside);
    refuses a source that lacks, or has another shape for, a tensor the target requires."""
    target_weights = target.state_dict()
    problems = []
    for key, value in target_weights.items():
        if SEGMENTATION_HEAD_MARK in key:
            continue
        if key not in source:
            if key not in optional_keys:
                problems.append(f"{key} is missing")
        elif source[key].shape != value.shape:
            problems.append(f"{key} is {list(source[key].shape)} in the source, {list(value.shape)} in the target")
    if problems:
        raise TransferError(
            f"{source_name}: another architecture or other plans than the target's: {len(problems)} of the "
            f"target's {len(target_weights)} tensors are missing or differ in shape (first: {problems[0]}); "
            "transfer works between trainers of the same plans and configuration")
    result = Transfer(weights={})
    for key, value in target_weights.items():
        if SEGMENTATION_HEAD_MARK not in key and key in source:
            result.weights[key] = source[key].detach().clone().to(value.dtype)
            result.copied.append(key)
        else:
            result.weights[key] = value.detach().clone()
            result.initialised.append(key)
    result.dropped = [key for key in source if key not in result.copied]
    return result


def transfer_checkpoint(source_path: str | Path, plans_path: str | Path, configuration: str, trainer_name: str,
                        dataset_json_path: str | Path) -> tuple[Transfer, dict]:
    """Reads the source, builds the target trainer's network and transfers; returns the transfer
    and the record the written file keeps."""
    checkpoint = read_checkpoint(source_path)
    spec = target_spec(plans_path, configuration, dataset_json_path)
    trainer = find_trainer(trainer_name)
    from pu_nnunet.trainers.plans_to_network import UnsupportedPlansError

    try:
        network = build_network(trainer, spec)
    except UnsupportedPlansError as error:  # e.g. ResidualUNet plans for a PU trainer
        raise TransferError(f"{plans_path}: {error}") from None
    result = transfer(checkpoint[NETWORK_WEIGHTS_KEY], network, variant_keys(spec), str(source_path))
    from pu_nnunet.provenance import file_record

    record = {"source": file_record(source_path), "source_trainer": checkpoint.get("trainer_name"),
              "target_trainer": trainer_name, "plans": file_record(plans_path),
              "plans_name": spec.plans_manager.plans_name, "configuration": configuration, **result.record()}
    return result, record


def save_pretrained_weights(result: Transfer, record: dict, path: Path) -> None:
    """The file ``nnUNetv2_train -pretrained_weights`` reads (written whole or not at all)."""
    from pu_nnunet.user_errors import naming_the_path
    from pu_nnunet.user_files import atomic_write_path

    # serialised in memory, written with Python's file I/O: a full or read-only disk is then an
    # OSError naming the file (torch.save's own writer raises a bare RuntimeError)
    buffer = io.BytesIO()
    torch.save({NETWORK_WEIGHTS_KEY: result.weights, TRANSFER_RECORD_KEY: record}, buffer)
    with atomic_write_path(path) as temporary, naming_the_path(path):
        temporary.write_bytes(buffer.getbuffer())
