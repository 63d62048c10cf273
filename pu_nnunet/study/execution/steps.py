"""The steps of a study, each through nnU-Net's own commands where nnU-Net has one.

Before the jobs (once, by ``study run``): the synthetic dataset of a preset, then
``nnUNetv2_plan_and_preprocess`` when the plans or the preprocessed data are missing, then the
split (the converter's ``splits_final.json`` installed, else nnU-Net's own 5-fold split written
before any training so that concurrent jobs never race to create it).

One job (anywhere: this machine, a GPU, a SLURM node): ``nnUNetv2_train`` (always with ``--c``:
nnU-Net resumes from ``checkpoint_latest.pth`` when there is one and starts fresh otherwise),
then the held-out cases (``imagesTs``/``labelsTs`` when the dataset has them, predicted with
``pu-nnunet predict``; else nnU-Net's own ``fold_F/validation`` predictions of the fold's
validation cases), then ``evaluate``; with ``--robustness``, then the job's robustness sweep
(:mod:`pu_nnunet.robustness.study_sweep`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

from pu_nnunet.datasets.shared.splits import SPLITS_FILE_NAME
from pu_nnunet.nnunet_validation import validation_problem
from pu_nnunet.provenance import MODEL_RECORD_FILE, model_record
from pu_nnunet.study.cpu_plans import CPU_PLANS, SOURCE_PLANS, write_cpu_plans
from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.execution.nnunet_commands import StoppedOnSignal, nnunet_environment, run_logged
from pu_nnunet.study.jobs import (EVALUATION_DIR, INTERRUPTED_ERROR, PREDICT_LOG, PREDICTIONS_DIR, QUEUED, TRAIN_LOG,
                                  Job, count, epoch_reached, finished_metrics, mark_finished, mark_started,
                                  read_state, relative_to_study, run_folder)
from pu_nnunet.study.spec import HELD_OUT_TEST, HELD_OUT_VALIDATION, LOGS_DIR, Study, load_study
from pu_nnunet.user_files import read_splits, read_user_json

log = logging.getLogger("pu_nnunet.study")

# planners of nnU-Net's plans presets (nnUNetv2_plan_and_preprocess -pl)
PLANNERS = {"nnUNetPlans": "ExperimentPlanner", "nnUNetResEncUNetMPlans": "nnUNetPlannerResEncM",
            "nnUNetResEncUNetLPlans": "nnUNetPlannerResEncL", "nnUNetResEncUNetXLPlans": "nnUNetPlannerResEncXL"}


class Interrupted(Exception):
    """SIGTERM (or SIGINT) arrived: the job records itself as interrupted and stops."""


# set in a job process once the scheduler's warning signal has stopped its training and the job
# is being requeued (submitit): the job's state is then "queued", not failed
REQUEUE = threading.Event()
# set in a job process that submitit runs: a training stopped by a signal is then requeued
SUBMITIT_JOB = threading.Event()


def study_environment(study: Study, repeat: Optional[int] = None) -> dict:
    """The environment of nnU-Net's commands for this study (and repeat's results root)."""
    env = nnunet_environment(study.study_dir)
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[variable] = study.paths[variable]
    if repeat is not None:
        env["nnUNet_results"] = str(study.results_root(repeat))
    return env


def trainer_class(name: str):
    """The trainer class ``nnUNetv2_train -tr name`` uses (nnU-Net's own lookup, this package's
    trainer folder and the user's nnUNet_extTrainer included); None when there is none."""
    from pu_nnunet.trainers.registry import find_trainer_class

    return find_trainer_class(name)


# how many near names an unknown trainer's message offers (difflib's default cutoff, 0.6)
NEAR_NAMES = 3


def check_trainers(study: Study) -> None:
    """Every trainer of the study is one nnUNetv2_train would find, before anything runs; an
    unknown one is named with the nearest of this package's trainer names."""
    import difflib

    from pu_nnunet.trainers.registry import pu_trainer_classes

    for name in study.trainers:
        if trainer_class(name) is not None:
            continue
        near = difflib.get_close_matches(name, sorted(pu_trainer_classes()), n=NEAR_NAMES)
        raise StudyError(f"trainer {name!r}: nnU-Net's trainer lookup finds no such nnUNetTrainer (neither "
                         "pu-nnunet's nor nnU-Net's nor one in nnUNet_extTrainer)"
                         + (f"; did you mean {', '.join(near)}?" if near else ""))


# --- before the jobs ----------------------------------------------------------------------

def prepare_dataset(study: Study) -> str:
    """Dataset, plans, preprocessed data and split; returns how held-out cases are chosen."""
    env = study_environment(study)
    logs = study.study_dir / LOGS_DIR
    raw = study.raw_dataset()
    if study.synthetic is not None and not (raw / "dataset.json").is_file():
        from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct

        settings = dict(study.synthetic)
        log.info("generating the synthetic CT dataset (%d volumes of %s)", settings["num_cases"],
                 tuple(settings["shape"]))
        generate_synthetic_ct(raw.parent, study.dataset_id, **{**settings, "shape": tuple(settings["shape"]),
                                                                 "spacing": tuple(settings["spacing"])})
    elif study.synthetic is not None:
        log.info("synthetic CT dataset: reusing %s", raw)
    if not (raw / "dataset.json").is_file():
        raise StudyError(f"{raw / 'dataset.json'} not found: convert the dataset first (pu-nnunet convert)")
    for split in (study.preprocessed_dataset() / SPLITS_FILE_NAME, raw / SPLITS_FILE_NAME):
        if split.is_file():  # the folds against the split already there, before preprocessing
            check_folds(study, split)
            break
    plan_and_preprocess(study, env, logs)
    install_split(study)
    return held_out_mode(study)


def _plans_file(study: Study, plans: str) -> Path:
    return study.preprocessed_dataset() / f"{plans}.json"


def _has_preprocessed_data(study: Study, plans: str) -> bool:
    path = _plans_file(study, plans)
    if not path.is_file():
        return False
    configurations = read_user_json(path, "plans", dict, StudyError, allow_nan=True).get("configurations", {})
    if study.configuration not in configurations:
        raise StudyError(f"{path} has no configuration {study.configuration!r} "
                         f"(it has {sorted(configurations)})")
    identifier = configurations[study.configuration].get("data_identifier")
    return identifier is not None and (study.preprocessed_dataset() / identifier).is_dir()


def plan_and_preprocess(study: Study, env: dict, logs: Path) -> None:
    # nnUNetPlansCPU is derived from nnUNetPlans (narrower network, same preprocessed data)
    source = SOURCE_PLANS if study.plans == CPU_PLANS else study.plans
    if _has_preprocessed_data(study, study.plans):
        log.info("nnU-Net plans and preprocessed data: reusing %s", study.preprocessed_dataset())
        return
    if not _has_preprocessed_data(study, source):
        if _plans_file(study, source).is_file():
            command = ["nnUNetv2_preprocess", "-d", str(study.dataset_id), "-plans_name", source,
                       "-c", study.configuration, "-np", env["nnUNet_def_n_proc"]]
        elif source in PLANNERS:
            # -npfp: the integrity check and the fingerprint otherwise start 8 processes each (nnU-Net's
            # default), every one importing torch: on a 2-core machine about a minute of CPU for nothing
            command = ["nnUNetv2_plan_and_preprocess", "-d", str(study.dataset_id), "-c", study.configuration,
                       "-pl", PLANNERS[source], "-np", env["nnUNet_def_n_proc"], "-npfp", env["nnUNet_def_n_proc"],
                       "--verify_dataset_integrity"]
        else:
            raise StudyError(f"plans {source!r} not found ({_plans_file(study, source)}); plan them with "
                             "nnUNetv2_plan_and_preprocess first, or use one of "
                             f"{sorted(PLANNERS) + [CPU_PLANS]}")
        log.info("%s (%s configuration)", command[0], study.configuration)
        # the planner refuses nnUNet_n_proc_DA=0, which a CPU user may have set for training
        plan_env = {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"}
        run_logged(command, plan_env, logs / "plan_and_preprocess.log", "plan and preprocess")
    if study.plans == CPU_PLANS:
        write_cpu_plans(study.preprocessed_dataset(), study.configuration)


def install_split(study: Study) -> None:
    """The converter's split when the raw dataset has one, else nnU-Net's own 5-fold split,
    written now; then every fold of the study must exist in it."""
    target = study.preprocessed_dataset() / SPLITS_FILE_NAME
    if not target.is_file():
        if (study.raw_dataset() / SPLITS_FILE_NAME).is_file():
            from pu_nnunet.datasets.shared.splits import install_splits

            install_splits(study.dataset_id, study.paths["nnUNet_raw"], study.paths["nnUNet_preprocessed"])
            log.info("installed the dataset's %s", SPLITS_FILE_NAME)
        else:
            _write_nnunet_split(study, target)
    check_folds(study, target)


def check_folds(study: Study, split: Path) -> None:
    splits = read_splits(split, StudyError)
    missing = [fold for fold in study.folds if fold >= len(splits)]
    if missing:
        raise StudyError(f"{split} has {len(splits)} folds; the study asks for fold(s) {missing}")


def _write_nnunet_split(study: Study, target: Path) -> None:
    # what nnUNetTrainer.do_split does on first use (5 folds, its seed), by the package's one split writer
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

    from pu_nnunet.datasets.shared.splits import cross_validation_splits, write_splits

    dataset_json = study.dataset_json()
    identifiers = get_identifiers_from_splitted_dataset_folder(str(study.raw_dataset() / "imagesTr"),
                                                               dataset_json["file_ending"])
    write_splits(target.parent, cross_validation_splits(identifiers))
    log.info("wrote nnU-Net's 5-fold split to %s", target)


def held_out_mode(study: Study) -> str:
    """"test" (imagesTs/labelsTs) or "validation" (each fold's validation cases): as the study
    says, or with "auto", test when the dataset has labelled test images."""
    raw = study.raw_dataset()
    ending = study.dataset_json()["file_ending"]
    has_test = any((raw / "imagesTs").glob(f"*_0000{ending}")) and any((raw / "labelsTs").glob(f"*{ending}"))
    if study.held_out == HELD_OUT_TEST and not has_test:
        raise StudyError(f"--held-out test: {raw} has no labelled test images (imagesTs/*_0000{ending} and labelsTs)")
    if study.held_out == "auto":
        return HELD_OUT_TEST if has_test else HELD_OUT_VALIDATION
    return study.held_out


# --- one job ------------------------------------------------------------------------------

def find_job(study: Study, job_name: str) -> Job:
    from pu_nnunet.study.jobs import study_jobs

    for job in study_jobs(study):
        if job.name == job_name:
            return job
    raise StudyError(f"the study in {study.study_dir} has no job {job_name!r}")


def train(study: Study, job: Job, device: str, env: dict, log_path: Path) -> Optional[float]:
    """nnUNetv2_train with --c; returns its seconds, None when the training had finished before."""
    fold_folder = study.model_folder(job.trainer, job.repeat) / f"fold_{job.fold}"
    finished = (fold_folder / "checkpoint_final.pth").is_file()
    unvalidated = validation_problem(fold_folder / "validation") if finished else None
    if finished and not unvalidated:
        log.info("%s: training finished before, reusing %s", job.name, fold_folder)
        return None
    if unvalidated:
        # trained, but its final validation was stopped: nnU-Net's --val does only the validation
        # (the held-out validation mode scores it; a missing case would score Dice 0)
        log.info("%s: %s; running nnUNetv2_train --val", job.name, unvalidated.split(": ", 1)[1].split(";")[0])
    else:
        resume = (fold_folder / "checkpoint_latest.pth").is_file()
        log.info("%s: nnUNetv2_train %s on %s", job.name,
                 "resuming from checkpoint_latest" if resume else "starting", device)
    env = dict(env)
    if device == "cpu":
        # augmentation in the training process: worker processes only compete for the cores
        env["nnUNet_n_proc_DA"] = "0"
    command = ["nnUNetv2_train", str(study.dataset_id), study.configuration, str(job.fold), "-tr", job.trainer,
               "-p", study.plans, "-device", device, "--val" if unvalidated else "--c"]
    trainer = trainer_class(job.trainer)
    epochs = getattr(trainer, "schedule_num_epochs", None) if trainer is not None else None
    start = time.perf_counter()
    run_logged(command, env, log_path, f"train {job.trainer} fold {job.fold} repeat {job.repeat} (epochs)",
               progress_pattern=r"Epoch time", progress_total=epochs)
    return time.perf_counter() - start


def predict_test_cases(study: Study, job: Job, device: str, env: dict, out: Path,
                       log_path: Path) -> Optional[float]:
    images = study.raw_dataset() / "imagesTs"
    ending = study.dataset_json()["file_ending"]
    n_cases = len(list(images.glob(f"*_0000{ending}")))
    if out.is_dir() and len(list(out.glob(f"*{ending}"))) == n_cases:
        log.info("%s: predictions reused from %s", job.name, out)
        return None
    # pu-nnunet predict: nnU-Net's preprocessing, sliding window, mirroring and export, with many
    # slices per forward pass (agrees with nnUNetv2_predict, see tests/inference)
    log.info("%s: pu-nnunet predict on the %d held-out cases", job.name, n_cases)
    start = time.perf_counter()
    run_logged(["pu-nnunet", "predict", "-i", str(images), "-o", str(out), "-m",
                str(study.model_folder(job.trainer, job.repeat)), "-f", str(job.fold), "--device", device,
                # the probabilities give the report's operating points over softmax thresholds
                "--overwrite", "--save_probabilities"], env, log_path, f"predict {job.trainer} fold {job.fold} repeat {job.repeat} (cases)",
               progress_pattern=r"^\[\d+/\d+\]", progress_total=n_cases)
    return time.perf_counter() - start


def evaluate_job(study: Study, job: Job, device: str, held_out: str, predictions: Path, out: Path,
                 plots: bool = True) -> dict:
    from pu_nnunet.evaluation import evaluate_folders

    raw = study.raw_dataset()
    images, reference, cases = study.held_out_cases(job.fold, held_out)
    meta = raw / "cases.json"  # per-class results (BUSI's normal images) where the converter wrote it
    return evaluate_folders(predictions, reference, out, device="cuda" if device.startswith("cuda") else "cpu",
                            images=images, dataset_json=raw / "dataset.json", overwrite=True, cases=cases,
                            meta=meta if meta.is_file() else None, plots=plots)


def run_job(study_dir: str | Path, job_name: str, device: str) -> dict[str, Any]:
    """Trains, predicts and evaluates one job, then runs its robustness sweep when the study has
    one, recording its state; returns the final state. A job done before (a sweep added to a
    finished study) runs its sweep only.

    ``device`` is nnU-Net's ``-device``: "cpu" or "cuda" (which GPU: CUDA_VISIBLE_DEVICES).
    This is the function a SLURM job runs (through submitit) and ``python -m
    pu_nnunet.study.execution.worker`` runs locally."""
    from pu_nnunet.robustness.study_sweep import run_sweep, sweep_pending

    study = load_study(study_dir)
    job = find_job(study, job_name)
    held_out = held_out_mode(study)
    state = read_state(study.study_dir, job)
    if finished_metrics(study.study_dir, job, state) is None:
        state = _train_predict_evaluate(study, job, device, held_out)
    else:
        log.info("%s: trained and evaluated before", job.name)
    if sweep_pending(study, job):
        images, _, cases = study.held_out_cases(job.fold, held_out)
        state = run_sweep(study, job, device, images, cases, lambda predictions, out: evaluate_job(
            study, job, device, held_out, predictions, out, plots=False))
    return state


def _train_predict_evaluate(study: Study, job: Job, device: str, held_out: str) -> dict[str, Any]:
    folder = run_folder(study.study_dir, job)
    train_log, predict_log = folder / TRAIN_LOG, folder / PREDICT_LOG
    mark_started(study.study_dir, job, device, relative_to_study(study.study_dir, train_log),
                 slurm_job_id=os.environ.get("SLURM_JOB_ID"))
    env = study_environment(study, job.repeat)
    try:
        timings = {}
        seconds = train(study, job, device, env, train_log)
        if seconds is not None:
            timings["train_s"] = round(seconds, 1)
        if held_out == HELD_OUT_TEST:
            predictions = folder / PREDICTIONS_DIR
            seconds = predict_test_cases(study, job, device, env, predictions, predict_log)
            if seconds is not None:
                timings["predict_s"] = round(seconds, 1)
        else:
            predictions = study.model_folder(job.trainer, job.repeat) / f"fold_{job.fold}" / "validation"
            # nnU-Net's validation predictions carry the model record pu-nnunet predict writes (evaluate copies it)
            from pu_nnunet.evaluation.jsonio import write_json
            write_json(predictions / MODEL_RECORD_FILE, model_record(predictions.parent.parent, [job.fold],
                                                                     "checkpoint_final.pth"))
        evaluation = evaluate_job(study, job, device, held_out, predictions, folder / EVALUATION_DIR)
    except BaseException as error:
        if REQUEUE.is_set() or (isinstance(error, StoppedOnSignal) and SUBMITIT_JOB.is_set()):
            # stopped by the scheduler's signal: submitit requeues the job (job.StudyJob)
            state = count(study.study_dir, job, "preemptions", state=QUEUED, epoch=epoch_reached(train_log))
            log.info("%s: stopped by the scheduler's signal in epoch %s; requeued (preemption %d)", job.name,
                     state.get("epoch"), state["preemptions"])
            raise
        if isinstance(error, StoppedOnSignal):  # the trainer got a stop signal directly and saved
            count(study.study_dir, job, "preemptions")
        interrupted = isinstance(error, (Interrupted, KeyboardInterrupt, StoppedOnSignal))
        reason = INTERRUPTED_ERROR if interrupted else f"{type(error).__name__}: {error}"
        mark_finished(study.study_dir, job, error=reason.strip()[-2000:], epoch=epoch_reached(train_log))
        raise
    foreground = evaluation["aggregates"]["foreground"]
    state = mark_finished(study.study_dir, job, held_out=held_out,
                          evaluation=relative_to_study(study.study_dir, folder / EVALUATION_DIR),
                          foreground_dice=foreground["dice_mean"], epoch=epoch_reached(train_log), **timings)
    log.info("%s: done, foreground Dice %.3f", job.name, foreground["dice_mean"] or 0.0)
    return state
