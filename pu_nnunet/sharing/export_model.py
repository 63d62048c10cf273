"""``pu-nnunet export-model``: nnU-Net's own model zip plus a model card.

The zip is written by nnU-Net's exporter (nnunetv2.model_sharing, the code behind
``nnUNetv2_export_model_to_zip``), so ``nnUNetv2_install_pretrained_model_from_zip`` installs it
as any nnU-Net model; the card (:mod:`pu_nnunet.sharing.model_card`) is added as README.md in the
zip's model folder. nnU-Net's exporter reads the results root from ``nnUNet_results`` when it is
imported, so it runs in a child process whose variable points at the model folder's results root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pu_nnunet.sharing.errors import ExportError

# nnU-Net's exporter adds these from every fold folder and fails half-way when one is missing
FOLD_FILES_NNUNET_EXPORTS = ("progress.png", "validation/summary.json")
# results root/DatasetXXX_Name/Trainer__Plans__Configuration: the layout the zip reproduces
DATASET_FOLDER_PREFIX = "Dataset"
ZIP_SUFFIX = ".zip"
_EXPORT_SCRIPT = ("import sys; from nnunetv2.model_sharing.entry_points import export_pretrained_model_entry as e; "
                  "sys.argv[0] = 'nnUNetv2_export_model_to_zip'; e()")


@dataclass(frozen=True)
class ExportRequest:
    model_dir: Path
    output: Path
    folds: list[str] | None = None
    checkpoint: str = "checkpoint_final.pth"
    data_license: str | None = None
    overwrite: bool = False


def _check_output(output: Path, overwrite: bool) -> None:
    if output.suffix.lower() != ZIP_SUFFIX:
        # nnUNetv2_install_pretrained_model_from_zip opens any name, but a .tar or .gz name over zip
        # bytes misleads every other tool (and person) that meets the file
        raise ExportError(f"{output}: the model is a zip file; give a name ending in {ZIP_SUFFIX}")
    if output.exists() and not overwrite:
        raise ExportError(f"{output}: already exists; pass --overwrite to replace it")
    if output.exists() and not output.is_file():
        raise ExportError(f"{output}: is a folder, expected a .zip file name")
    if not output.parent.is_dir():
        raise ExportError(f"{output.parent}: folder not found")


def checked_model(request: ExportRequest):
    """The model folder, checked as ``pu-nnunet predict`` checks it (each fold's checkpoint, and
    that the checkpoint is the model the folder names), plus what nnU-Net's exporter needs."""
    from pu_nnunet.inference.model_folder import check_checkpoint_identity, inspect_model_folder
    from pu_nnunet.nnunet_validation import validation_problem
    from pu_nnunet.provenance import split_model_folder_name

    model = inspect_model_folder(request.model_dir, request.folds, request.checkpoint)
    if split_model_folder_name(model.path.name) is None:
        raise ExportError(f"{model.path}: not named TRAINER__PLANS__CONFIGURATION, as nnU-Net names its model "
                          "folders; the zip reproduces nnUNet_results/DatasetX/<trainer>__<plans>__<configuration>")
    if not model.path.resolve().parent.name.startswith(DATASET_FOLDER_PREFIX):
        raise ExportError(f"{model.path}: its parent folder must be the dataset's (DatasetXXX_Name), as in "
                          "nnUNet_results; nnU-Net installs the zip under that name")
    check_checkpoint_identity(model)
    for fold in model.folds:
        for name in FOLD_FILES_NNUNET_EXPORTS:
            if not (model.path / f"fold_{fold}" / name).is_file():
                raise ExportError(f"{model.path / f'fold_{fold}' / name}: missing; nnU-Net's export needs it (written "
                                  "when a training ends, or by nnUNetv2_train ... --val)")
        problem = validation_problem(model.path / f"fold_{fold}" / "validation")
        if problem:  # its summary.json (the card's validation table) would be an earlier one, or none
            raise ExportError(problem)
    if not (model.path / "dataset_fingerprint.json").is_file():
        raise ExportError(f"{model.path / 'dataset_fingerprint.json'}: missing; nnU-Net's export needs it "
                          "(nnUNetv2_train copies it into the model folder)")
    return model


def run_nnunet_export(model, output: Path) -> None:
    """nnU-Net's exporter for this one model (configuration, trainer, plans, folds, checkpoint)."""
    from pu_nnunet.provenance import split_model_folder_name

    trainer, plans_name, configuration = split_model_folder_name(model.path.name)
    dataset_folder = model.path.resolve().parent
    command = [sys.executable, "-c", _EXPORT_SCRIPT, "-d", dataset_folder.name, "-o", str(output),
               "-c", configuration, "-tr", trainer, "-p", plans_name, "-f", *map(str, model.folds),
               "-chk", model.checkpoint]
    env = dict(os.environ, nnUNet_results=str(dataset_folder.parent))
    result = subprocess.run(command, env=env, capture_output=True, text=True, encoding="utf-8")
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise ExportError(f"{model.path}: nnU-Net's export failed: {lines[-1] if lines else 'no message'}")


def export_model(request: ExportRequest) -> tuple[Path, str]:
    """Writes the zip (whole or not at all); returns the card's path inside the zip and its text."""
    from pu_nnunet.provenance import model_record, run_record, split_model_folder_name
    from pu_nnunet.sharing.model_card import CARD_FILE, read_summary, render_card
    from pu_nnunet.trainers.pure_trainers import __all__ as pu_trainers
    from pu_nnunet.user_errors import naming_the_path
    from pu_nnunet.user_files import atomic_write_path

    _check_output(request.output, request.overwrite)
    model = checked_model(request)
    trainer, plans_name, configuration = split_model_folder_name(model.path.name)
    dataset = model.path.resolve().parent.name
    folds = [str(fold) for fold in model.folds]
    record = model_record(model.path, model.folds, model.checkpoint)
    provenance = run_record(files={name: model.path / name for name in
                                   ("dataset.json", "plans.json", "dataset_fingerprint.json")}, model=record)
    card = render_card(dataset=dataset, trainer=trainer, plans_name=plans_name, configuration=configuration,
                       folds=folds, checkpoint=model.checkpoint, plans=model.plans, dataset_json=model.dataset_json,
                       summaries={fold: read_summary(model.path / f"fold_{fold}" / "validation" / "summary.json")
                                  for fold in folds},
                       provenance=provenance, is_pu_trainer=trainer in pu_trainers,
                       data_license=request.data_license, zip_name=request.output.name)
    card_name = f"{dataset}/{model.path.name}/{CARD_FILE}"
    with atomic_write_path(request.output) as temporary, naming_the_path(request.output):
        run_nnunet_export(model, temporary)
        with zipfile.ZipFile(temporary, "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(card_name, card)
    return Path(card_name), card
