"""A study job's robustness sweep (``study run --robustness``): after the job's clean evaluation,
its model predicts the job's held-out cases again under each corruption and strength of the
study's settings (:mod:`pu_nnunet.robustness.settings`), through pu_nnunet.robustness's own
steps (corrupted inputs, then :func:`pu_nnunet.robustness.sweep.predict_condition`, which predicts
with :func:`pu_nnunet.inference.predict.predict`), and evaluates them as the clean run was, by the
``evaluate`` callable the study's job step hands in: the study calls this module, never the
other way round.

Layout of ``STUDY_DIR/runs/<job>/robustness/``:

    settings.json                        what the sweep is; a folder holding another sweep is cleared
    inputs/<condition>/                  the held-out images under the condition (scratch: removed at
                                         the end unless keep_inputs; never in nnUNet_raw)
    <condition>/predictions, evaluation/ pu-nnunet predict's and evaluate's output, reused on resume
    robustness.json                      written last and atomically: the finished sweep

The conditions are ``clean`` (the same prediction settings without corruption: the reference for
the change under corruption) and ``<corruption>_<strength>``. The noise of a condition is fixed by
the seed, the corruption, the strength and the image file's name, so every trainer and repeat sees
the same corrupted images. The sweep's state is ``robustness`` in the job's state: the job stays
done (its clean results count) while its sweep runs, fails or is interrupted, and the next ``study
run`` resumes the sweep only.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

from pu_nnunet.provenance import model_record, same_model
from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.jobs import DONE, FAILED, RUNNING, Job, relative_to_study, run_folder, update_state
from pu_nnunet.robustness.settings import measured
from pu_nnunet.json_files import write_json
from pu_nnunet.study.spec import Study
from pu_nnunet.user_errors import UserInputError
from pu_nnunet.user_files import read_user_json

log = logging.getLogger("pu_nnunet.study")

SWEEP_DIR, SWEEP_FILE, SWEEP_SETTINGS_FILE = "robustness", "robustness.json", "settings.json"
SWEEP_FORMAT = "pu-nnunet-study-robustness/1"
INTERRUPTED = "interrupted"
NIFTI = ".nii.gz"
CHECKPOINT = "checkpoint_final.pth"  # the checkpoint a study's jobs predict with (the job step's)


def sweep_folder(study_dir: Path, job: Job) -> Path:
    return run_folder(study_dir, job) / SWEEP_DIR


def finished_sweep(study: Study, job: Job) -> Optional[dict[str, Any]]:
    """The job's sweep result when it finished with the study's current settings, else None."""
    path = sweep_folder(study.study_dir, job) / SWEEP_FILE
    if study.robustness is None or not path.is_file():
        return None
    try:
        result = read_user_json(path, SWEEP_FILE, expected_type=dict)
    except UserInputError:  # damaged: the sweep runs again
        return None
    return result if result.get("settings") == measured(study.robustness) else None


def sweep_pending(study: Study, job: Job) -> bool:
    return study.robustness is not None and finished_sweep(study, job) is None


def dataset_channel(study: Study) -> str:
    """Channel 0's name in dataset.json (its intensity model: "CT" or any other); the sweep reads
    NIfTI, as pu-nnunet predict and pu-nnunet robustness do."""
    path = study.raw_dataset() / "dataset.json"
    dataset = study.dataset_json()
    if dataset.get("file_ending") != NIFTI:
        raise StudyError(f"--robustness: {path} has file_ending {dataset.get('file_ending')!r}; the sweep reads "
                         f"NIfTI ({NIFTI}); convert a PNG dataset with benchmarks/png_dataset_to_nifti.py")
    return str(dataset.get("channel_names", {}).get("0", ""))


def conditions(study: Study):
    from pu_nnunet.robustness.sweep import conditions_of

    return conditions_of(study.robustness["strengths"])


def _record(study: Study, job: Job, **changes: Any) -> dict[str, Any]:
    def change(state):
        sweep = state.setdefault("robustness", {})
        if changes.get("state") == RUNNING:
            sweep["attempts"] = sweep.get("attempts", 0) + 1
        if changes.get("state") == FAILED:
            sweep["failures"] = sweep.get("failures", 0) + 1
        sweep.update(changes)

    return update_state(study.study_dir, job, change)


def _prepare_folder(folder: Path, settings: dict[str, Any]) -> None:
    saved = folder / SWEEP_SETTINGS_FILE
    try:
        same = saved.is_file() and read_user_json(saved, SWEEP_SETTINGS_FILE) == settings
    except UserInputError:
        same = False
    if not same:  # another sweep's (or a damaged) folder: its conditions are not this sweep's
        shutil.rmtree(folder, ignore_errors=True)
    write_json(saved, settings)


def run_sweep(study: Study, job: Job, device: str, images: Path, cases: Optional[list[str]],
              evaluate: Callable[[Path, Path], Any]) -> dict[str, Any]:
    """Predicts and evaluates ``images`` (``cases`` of them, or all) under every condition with
    the job's model; returns the job's state. A failure is recorded in the state (the job stays
    done and the runner reports it); an interruption is recorded and raised."""
    from pu_nnunet.robustness.corruptions import intensity_model
    from pu_nnunet.robustness.sweep import condition_inputs, predict_condition

    settings = study.robustness
    folder = sweep_folder(study.study_dir, job)
    channel = dataset_channel(study)
    description = {**measured(settings), "intensity_model": intensity_model(channel).name,
                   "images": relative_to_study(study.study_dir, images), "cases": cases}
    model_folder = study.model_folder(job.trainer, job.repeat)
    model = model_record(model_folder, [job.fold], CHECKPOINT)
    # the folder's conditions are reused only when made with these weights
    _prepare_folder(folder, {**description, "model": model})
    _record(study, job, state=RUNNING, error=None, started=time.time())
    start = time.perf_counter()
    try:
        check_evaluated_model(study, job, model)
        evaluations = {}
        for condition in conditions(study):
            inputs = condition_inputs(images, folder / "inputs", condition, settings["seed"], channel, cases)
            predict_condition(inputs, folder / condition.name, model_folder, [job.fold], device,
                              settings["mirroring"], evaluate, log.info, f"{job.name} {condition.name}")
            evaluations[condition.name] = relative_to_study(study.study_dir, folder / condition.name / "evaluation")
        write_sweep_result(study, job, description, evaluations)
    except Exception as error:
        log.warning("%s: robustness sweep failed: %s", job.name, error)
        return _record(study, job, state=FAILED, error=f"{type(error).__name__}: {error}"[-2000:])
    except BaseException:
        _record(study, job, state=INTERRUPTED)
        raise
    finally:
        if not settings["keep_inputs"]:
            shutil.rmtree(folder / "inputs", ignore_errors=True)
    log.info("%s: robustness sweep done (%d conditions)", job.name, len(evaluations))
    return _record(study, job, state=DONE, duration_s=round(time.perf_counter() - start, 1),
                   result=relative_to_study(study.study_dir, folder / SWEEP_FILE))


def check_evaluated_model(study: Study, job: Job, model: dict[str, Any]) -> None:
    """The sweep is reported beside the job's clean evaluation: both must be of the same weights
    (a checkpoint replaced after the job finished would pair old clean results with new
    corrupted ones)."""
    metrics = run_folder(study.study_dir, job) / "evaluation" / "metrics.json"
    try:
        evaluated = (read_user_json(metrics, "evaluation metrics", dict).get("provenance") or {}).get("model")
    except UserInputError:
        evaluated = None
    differing = same_model(evaluated, model) if evaluated else []
    if differing:
        raise StudyError(f"{metrics}: {job.name} was evaluated with other weights than "
                         f"{study.model_folder(job.trainer, job.repeat)} holds now ({', '.join(differing)} differ: was "
                         "the checkpoint replaced?); its sweep would be reported beside results of other weights. "
                         f"Restore the checkpoint, or run the job again (remove {run_folder(study.study_dir, job)} "
                         "and its state in jobs/)")


def write_sweep_result(study: Study, job: Job, description: dict[str, Any], evaluations: dict[str, str]) -> Path:
    """robustness.json, atomically: its presence (with the study's settings) marks the finished sweep."""
    path = sweep_folder(study.study_dir, job) / SWEEP_FILE
    write_json(path, {"format": SWEEP_FORMAT, "job": job.name, "settings": measured(study.robustness),
                             "description": description,
                             "conditions": [{"name": c.name, "corruption": c.corruption, "strength": c.strength,
                                             "evaluation": evaluations[c.name]} for c in conditions(study)]})
    return path


def sweep_state(state: dict[str, Any]) -> str:
    """What ``status`` shows of a job's sweep: pending, running, done, failed, interrupted."""
    return (state.get("robustness") or {}).get("state") or "pending"
