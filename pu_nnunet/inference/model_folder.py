"""A trained nnU-Net model folder (``nnUNet_results/DatasetX/<trainer>__<plans>__<config>``):
checked before anything heavy runs, then loaded into nnU-Net's own ``nnUNetPredictor``.

Loading goes through ``nnUNetPredictor.initialize_from_trained_model_folder``, so the network is
built exactly as ``nnUNetv2_predict`` builds it: nnU-Net reads the trainer's name from the
checkpoint and looks the class up again, which finds this package's trainers through
``nnUNet_extTrainer``.
"""

from __future__ import annotations

import contextlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.provenance import split_model_folder_name
from pu_nnunet.user_files import read_user_json

DEFAULT_CHECKPOINT = "checkpoint_final.pth"
# nnUNetv2_predict's default -step_size: tiles overlap by half a patch
TILE_STEP_SIZE = 0.5
# nnU-Net's folder for a model trained on all training cases (auto-detection skips it, as nnU-Net does)
FOLD_ALL = "all"


@dataclass(frozen=True)
class ModelFolder:
    """What ``pu-nnunet predict`` needs to know about a model before loading its weights."""

    path: Path
    dataset_json: dict
    plans: dict
    folds: tuple[int | str, ...]
    checkpoint: str

    @property
    def channel_names(self) -> dict[str, str]:
        return self.dataset_json["channel_names"]

    def checkpoint_path(self, fold: int | str) -> Path:
        return self.path / f"fold_{fold}" / self.checkpoint


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise PredictionError(f"{path} is missing: MODEL_DIR must be a trained nnU-Net model folder "
                              "(nnUNet_results/DatasetX/<trainer>__<plans>__<configuration>)")
    # nnU-Net writes bare NaN into its own JSON files: accepted here
    return read_user_json(path, path.name, dict, PredictionError, allow_nan=True)


def _parse_fold(fold: int | str) -> int | str:
    if str(fold) == FOLD_ALL:
        return FOLD_ALL
    try:
        number = int(fold)
    except ValueError:
        raise PredictionError(f"fold {fold!r} is neither a number nor '{FOLD_ALL}'") from None
    if number < 0:
        raise PredictionError(f"fold {fold} is negative; nnU-Net's folds are 0, 1, ... or '{FOLD_ALL}'")
    return number


def _detect_folds(model_dir: Path, checkpoint: str) -> tuple[int, ...]:
    """Numbered fold folders holding the checkpoint, as nnUNetPredictor.auto_detect_available_folds."""
    folds = []
    for child in model_dir.glob("fold_*"):
        suffix = child.name[len("fold_"):]
        if suffix.isdigit() and (child / checkpoint).is_file():
            folds.append(int(suffix))
    return tuple(sorted(folds))


def inspect_model_folder(model_dir: str | Path, folds: list[int | str] | None = None,
                         checkpoint: str = DEFAULT_CHECKPOINT) -> ModelFolder:
    """Checks MODEL_DIR holds dataset.json, plans.json and the checkpoint of every fold used.

    ``folds=None`` uses every ``fold_N`` folder that holds the checkpoint (nnU-Net's
    auto-detection); several folds are ensembled.
    """
    path = Path(model_dir)
    if not path.is_dir():
        raise PredictionError(f"{path}: model folder not found")
    dataset_json = _load_json(path / "dataset.json")
    plans = _load_json(path / "plans.json")
    if folds is None:
        chosen = _detect_folds(path, checkpoint)
        if not chosen:
            raise PredictionError(f"no checkpoint in {path}: expected {path / 'fold_0' / checkpoint} (or another "
                                  f"fold_N/{checkpoint}); has training finished?")
    else:
        chosen = tuple(_parse_fold(fold) for fold in folds)
        if len(set(chosen)) < len(chosen):
            # an ensemble (or an export) would hold that fold twice, weighting it double
            twice = sorted({str(f) for f in chosen if chosen.count(f) > 1})
            raise PredictionError(f"-f {' '.join(map(str, folds))}: fold {', '.join(twice)} is given twice")
    model = ModelFolder(path, dataset_json, plans, chosen, checkpoint)
    for fold in chosen:
        if not model.checkpoint_path(fold).is_file():
            raise PredictionError(f"{model.checkpoint_path(fold)}: checkpoint not found")
    if not isinstance(dataset_json.get("channel_names"), dict) or not dataset_json["channel_names"]:
        raise PredictionError(f"{path / 'dataset.json'}: no channel_names object (e.g. {{\"0\": \"CT\"}})")
    if not isinstance(plans.get("configurations"), dict) or not plans["configurations"]:
        raise PredictionError(f"{path / 'plans.json'}: no configurations; is it an nnU-Net plans file?")
    return model


@contextlib.contextmanager
def this_packages_trainers_first() -> Iterator[None]:
    """nnU-Net's predictor finds the checkpoint's trainer with nnU-Net's lookup; here it is the
    one lookup of every command (trainers/registry.py), which answers this package's trainers
    without importing every module under nnunetv2/training/nnUNetTrainer (about 2 s per
    prediction on a 2-core CPU) and lists this package's trainer folder for the rest."""
    import nnunetv2.inference.predict_from_raw_data as predictor_module

    from pu_nnunet.trainers.registry import nnunet_lookup, pu_trainer_classes

    nnunets_lookup = predictor_module.recursive_find_trainer_class_by_name

    def find(name: str):
        return pu_trainer_classes().get(name) or nnunet_lookup(name)

    predictor_module.recursive_find_trainer_class_by_name = find
    try:
        yield
    finally:
        predictor_module.recursive_find_trainer_class_by_name = nnunets_lookup


def _check_configuration(configuration, plans_path: Path) -> None:
    """patch_size, spacing and the network's convolutions must agree on 2 or 3 dimensions; nnU-Net
    itself would only fail half-way through the first case, in an assert of its sliding window."""
    patch, spacing = list(configuration.patch_size), list(configuration.spacing)
    conv_op = str(configuration.network_arch_init_kwargs.get("conv_op", ""))
    conv_dims = 2 if conv_op.endswith("2d") else 3 if conv_op.endswith("3d") else None
    if len(patch) not in (2, 3) or len(spacing) != len(patch) or conv_dims not in (None, len(patch)):
        raise PredictionError(f"{plans_path}: the trained configuration is inconsistent: patch_size {patch}, "
                              f"spacing {spacing} and conv_op {conv_op or 'unknown'} must all be 2d or all 3d")


def _load_checkpoint_lazily(path: Path):
    """The checkpoint's dict with its tensors memory-mapped, not read (checkpoints are hundreds of
    MB; only the names are needed here); None when torch cannot read it at all (nnU-Net's own
    loading then reports it)."""
    import torch

    for lazily in (True, False):  # mmap needs torch's zip format; older files are read whole
        try:
            return torch.load(path, map_location="cpu", weights_only=False, mmap=lazily)
        except Exception:  # noqa: BLE001 - unpickling a damaged file raises anything
            continue
    return None


def checkpoint_claims(path: Path) -> dict | None:
    """What an nnU-Net checkpoint says it is: trainer, plans name, configuration and fold, as
    nnUNetTrainer.save_checkpoint stores them (``trainer_name``, ``init_args``); None for an
    unreadable file, a value None where the checkpoint does not store it."""
    checkpoint = _load_checkpoint_lazily(path)
    if not isinstance(checkpoint, dict):
        return None
    init_args = checkpoint.get("init_args") if isinstance(checkpoint.get("init_args"), dict) else {}
    plans = init_args.get("plans") if isinstance(init_args.get("plans"), dict) else {}
    fold = init_args.get("fold")
    return {"trainer": checkpoint.get("trainer_name"), "plans": plans.get("plans_name"),
            "configuration": init_args.get("configuration"), "fold": None if fold is None else str(fold)}


def check_checkpoint_identity(model: ModelFolder) -> None:
    """Each fold's checkpoint must be the model its folder's name says: nnU-Net builds the network
    of the trainer named *in the checkpoint*, so a checkpoint copied in from another model would
    predict as that other model while every log and record names the folder's."""
    named = split_model_folder_name(model.path.name)
    for fold in model.folds:
        path = model.checkpoint_path(fold)
        claims = checkpoint_claims(path)
        if claims is None:
            continue  # unreadable: nnU-Net's loading below names the problem
        expected = {"fold": str(fold)}
        if named is not None:
            expected.update(trainer=named[0], plans=named[1], configuration=named[2])
        differing = [field for field, value in expected.items() if claims[field] not in (None, value)]
        if differing:
            raise PredictionError(
                f"{path}: the checkpoint was written by {', '.join(f'{f} {claims[f]}' for f in differing)} but its "
                f"folder {model.path.name}/fold_{fold} names {', '.join(f'{f} {expected[f]}' for f in differing)}; "
                "nnU-Net would build the checkpoint's network: put the checkpoint into a folder named after its own "
                "trainer__plans__configuration and fold")


def load_predictor(model: ModelFolder, device, use_mirroring: bool = True):
    """nnU-Net's predictor with the model's network and every chosen fold's weights loaded."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    check_checkpoint_identity(model)

    # nnU-Net narrates the CPU fallback and the trainer lookup on stdout: not for our users
    with contextlib.redirect_stdout(io.StringIO()):
        predictor = nnUNetPredictor(tile_step_size=TILE_STEP_SIZE, use_gaussian=True, use_mirroring=use_mirroring,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    try:
        with contextlib.redirect_stdout(io.StringIO()), this_packages_trainers_first():
            predictor.initialize_from_trained_model_folder(str(model.path), list(model.folds), model.checkpoint)
    except (RuntimeError, KeyError, OSError, EOFError, pickle.UnpicklingError, TypeError, ValueError, IndexError,
            AttributeError, AssertionError) as error:
        # a trainer nnU-Net cannot find, a checkpoint that is truncated or from another model, or a
        # plans.json that does not match the checkpoint (missing configuration, wrong network
        # arguments: dynamic-network-architectures checks those with assert)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PredictionError(f"{model.path}: cannot load the model (folds {', '.join(map(str, model.folds))}, "
                              f"{model.checkpoint}; plans.json and checkpoint must match): "
                              f"{type(error).__name__}: {reason}") from None
    _check_configuration(predictor.configuration_manager, model.path / "plans.json")
    previous_stage = predictor.configuration_manager.previous_stage_name
    if previous_stage is not None:
        raise PredictionError(f"{model.path} is a cascade stage (needs {previous_stage} predictions first); "
                              "pu-nnunet predict runs single-stage models")
    return predictor
