"""The robustness sweep: corrupt the held-out images, predict them with every model, evaluate.

Layout of OUT_DIR (corrupted images live here, never in nnUNet_raw):

    settings.json                       what the sweep is; a rerun with the same settings resumes
    inputs/<condition>/                 corrupted copies of IMAGES (removed at the end unless kept)
    runs/<name>_<k>/<condition>/        pu-nnunet predict's output and pu-nnunet evaluate's
    comparisons/...                     pu-nnunet compare: each condition vs clean, each trainer vs the baseline
    robustness.json, report.md, plots/dice_vs_strength.png, provenance.json

A condition is ``clean`` or ``<corruption>_<strength>``. A prediction or evaluation already
complete (its metrics.json written) is reused, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

from pu_nnunet.json_files import json_text
from pu_nnunet.robustness.corruptions import corrupt, intensity_model
from pu_nnunet.robustness.errors import RobustnessError
from pu_nnunet.user_files import damaged_file_problem, read_user_json

CLEAN = "clean"
SETTINGS_FILE = "settings.json"
# each model's record (pu_nnunet.provenance.model_record: checkpoint hashes) when the sweep began:
# a resumed sweep reuses results only of the same weights
MODELS_FILE = "models.json"
RESULT_FILE = "robustness.json"
INPUTS_DIR, RUNS_DIR, COMPARISONS_DIR = "inputs", "runs", "comparisons"
NIFTI = ".nii.gz"
# nnU-Net's channel suffix of an image file name: CASE_0000.nii.gz is channel 0 of CASE
CHANNEL_SUFFIX = "_0000"
# a condition's corrupted images are complete when this file is there
COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class ModelRun:
    """One trained model: its trainer name (shared by repeats) and its folder."""

    name: str
    index: int
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.name}_{self.index}"


@dataclass(frozen=True)
class Condition:
    corruption: str | None
    strength: float | None

    @property
    def name(self) -> str:
        return CLEAN if self.corruption is None else f"{self.corruption}_{self.strength:g}"


def conditions_of(strengths: dict[str, Sequence[float]]) -> list[Condition]:
    return [Condition(None, None)] + [Condition(c, float(s)) for c, values in strengths.items() for s in values]


def _image_files(images: Path, cases: Collection[str] | None = None) -> list[Path]:
    """The NIfTI channel files (CASE_XXXX.nii.gz) of ``images``, of the listed cases only when given."""
    if not images.is_dir():
        raise RobustnessError(f"{images}: images folder not found")
    files = sorted(p for p in images.iterdir() if p.name.endswith(NIFTI)
                   and (cases is None or _case_of(p)[: -len(CHANNEL_SUFFIX)] in cases))
    if not files:
        raise RobustnessError(f"{images}: no NIfTI images (CASE_0000{NIFTI})"
                              + ("" if cases is None else f" of the cases {sorted(cases)}")
                              + "; robustness reads NIfTI, as pu-nnunet predict does (a PNG dataset: "
                                "benchmarks/png_dataset_to_nifti.py)")
    return files


def _case_of(path: Path) -> str:
    return path.name[: -len(NIFTI)]


def write_corrupted_inputs(images: Path, target: Path, condition: Condition, seed: int, channel_name: str,
                           cases: Collection[str] | None = None) -> Path:
    """Corrupted copies of the images (every case, or ``cases``) with the original geometry,
    written to ``target`` (float32); the clean condition gives plain copies."""
    import SimpleITK as sitk

    if (target / COMPLETE_MARKER).is_file():
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    model = intensity_model(channel_name)
    for path in _image_files(images, cases):
        problem = damaged_file_problem(path)
        if problem is not None:
            raise RobustnessError(f"{path}: {problem}")
        if condition.corruption is None:
            shutil.copyfile(path, target / path.name)
            continue
        image = sitk.ReadImage(str(path))
        # the random stream is keyed by the file's name (case and channel), not by the model or
        # the order of work: every model sees the same corrupted image
        array = corrupt(sitk.GetArrayFromImage(image), condition.corruption, condition.strength, seed,
                        _case_of(path), model)
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
        sitk.WriteImage(out, str(target / path.name), True)
    (target / COMPLETE_MARKER).write_text("")
    return target


def condition_inputs(images: Path, scratch: Path, condition: Condition, seed: int, channel_name: str,
                     cases: Collection[str] | None = None) -> Path:
    """The folder a model predicts under ``condition``: ``images`` itself when clean and every
    case is wanted, else ``scratch/<condition>`` (written once, then reused)."""
    if condition.corruption is None and cases is None:
        return images
    return write_corrupted_inputs(images, scratch / condition.name, condition, seed, channel_name, cases)


def predict_condition(inputs: Path, folder: Path, model_folder: Path, folds, device: str, use_mirroring: bool,
                      evaluate: Callable[[Path, Path], Any], log: Callable[[str], None], label: str) -> dict:
    """One model under one condition: ``folder/predictions`` by pu-nnunet predict, then
    ``evaluate(predictions, folder/evaluation)``; reused when its metrics.json is there."""
    from pu_nnunet.inference.predict import predict

    metrics_file = folder / "evaluation" / "metrics.json"
    if not metrics_file.is_file():
        run = predict(inputs, folder / "predictions", model_folder, folds=folds, device=device,
                      use_mirroring=use_mirroring, overwrite=True, log=lambda _: None)
        evaluate(folder / "predictions", folder / "evaluation")
        log(f"{label}: {len(run.outputs)} cases in {sum(run.case_seconds):.0f} s")
    from pu_nnunet.evaluation.compare import load_evaluation

    return load_evaluation(metrics_file)[0]


def check_output_folder(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuses a finished sweep's folder (without ``overwrite``) and a folder holding another
    sweep or other files; a folder with the same settings is resumed."""
    if out.exists() and not out.is_dir():
        raise RobustnessError(f"{out}: the output path is a file, expected a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    saved_path = out / SETTINGS_FILE
    if not saved_path.is_file():
        raise RobustnessError(f"{out}: the output folder holds other files; choose an empty or new folder")
    if overwrite:
        for name in (INPUTS_DIR, RUNS_DIR, COMPARISONS_DIR, "plots"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (RESULT_FILE, "report.md", "provenance.json", SETTINGS_FILE, MODELS_FILE):
            (out / name).unlink(missing_ok=True)
        return
    saved = read_user_json(saved_path, "sweep settings", dict, RobustnessError)
    if saved != json.loads(json_text(settings)):
        raise RobustnessError(f"{saved_path}: the folder holds a sweep with other settings; pass --overwrite "
                              "to replace it or choose another folder")
    if (out / RESULT_FILE).is_file():
        raise RobustnessError(f"{out / RESULT_FILE}: the sweep is finished; pass --overwrite to run it again")


def check_resumed_models(out: Path, records: dict[str, dict]) -> None:
    """A sweep resumed in ``out`` must run the models it began with (``records``: label -> model
    record): results made with other weights are refused, naming the model, never mixed in."""
    from pu_nnunet.provenance import same_model

    path = out / MODELS_FILE
    if not (out / SETTINGS_FILE).is_file():
        return  # a new sweep
    if not path.is_file():
        raise RobustnessError(f"{out}: the sweep there recorded no model checkpoints ({MODELS_FILE}; begun by an "
                              "earlier pu-nnunet), so its results cannot be checked against the models; pass "
                              "--overwrite to run it again")
    earlier = read_user_json(path, "record of the sweep's models", dict, RobustnessError)
    for label, record in records.items():
        differing = same_model(earlier.get(label) or {}, record)
        if differing:
            raise RobustnessError(f"{path}: the sweep in {out} began with other weights of {label} ({', '.join(differing)} "
                                  "differ: was the checkpoint replaced?); its results so far are of those weights: "
                                  "pass --overwrite to run it again with these")


def run_predictions(models: Sequence[ModelRun], images: Path, labels: Path, out: Path,
                    conditions: Sequence[Condition], seed: int, folds, device: str, use_mirroring: bool,
                    meta: Path | None, channel_name: str, log: Callable[[str], None]) -> dict[str, dict[str, dict]]:
    """Predicts and evaluates every model under every condition; returns metrics by run label and condition."""
    from pu_nnunet.evaluation import evaluate_folders

    def evaluate(predictions: Path, evaluation: Path) -> None:
        evaluate_folders(predictions, labels, evaluation, device="cpu", meta=meta, plots=False, overwrite=True)

    metrics: dict[str, dict[str, dict]] = {m.label: {} for m in models}
    for condition in conditions:
        inputs = condition_inputs(images, out / INPUTS_DIR, condition, seed, channel_name)
        for model in models:
            metrics[model.label][condition.name] = predict_condition(
                inputs, out / RUNS_DIR / model.label / condition.name, model.folder, folds, device, use_mirroring,
                evaluate, log, f"{model.label} {condition.name}")
    return metrics
