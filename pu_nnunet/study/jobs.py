"""The jobs of a study (one nnU-Net training per trainer x fold x repeat, with its prediction and
evaluation) and their state on disk, ``STUDY_DIR/jobs/<job>.json``, written atomically.

States: ``pending`` (no state file), ``queued`` (submitted to SLURM/submitit, waiting to start
or requeued after a time limit or preemption), ``running``, ``done``, ``failed`` (with the error;
an interrupted job is failed with "interrupted"). Counters: ``attempts`` (starts), ``failures``
(real failures: an error, not a stop by a signal; ``--max-attempts`` bounds them),
``preemptions`` (stops by the scheduler's warning signal, then requeued) and ``epoch`` (the last
nnU-Net epoch the training reached). Only one ``study run`` works on a study at a time
(``STUDY_DIR/.run.lock``), so a job left ``running`` while no run holds the lock was cut off
(the machine or the run was killed): ``status`` says so and the next ``study run`` resumes it.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from pu_nnunet.output_lock import OutputLock, is_locked
from pu_nnunet.study.errors import StudyError
from pu_nnunet.json_files import write_json
from pu_nnunet.user_files import read_user_json
from pu_nnunet.study.spec import Study

JOBS_DIR = "jobs"
RUNS_DIR = "runs"
LOCK_FILE = ".run.lock"
# inside a job's run folder (runs/<job>/): what it predicted, its evaluation and its logs
PREDICTIONS_DIR, EVALUATION_DIR, TRAIN_LOG, PREDICT_LOG = "predictions", "evaluation", "train.log", "predict.log"
PENDING, QUEUED, RUNNING, DONE, FAILED = "pending", "queued", "running", "done", "failed"
INTERRUPTED_ERROR = "interrupted"
# nnU-Net's line at the start of each epoch ("2026-01-01 12:00:00.000000: Epoch 12")
EPOCH_LINE = re.compile(r": Epoch (\d+)\s*$", re.M)


@dataclass(frozen=True)
class Job:
    trainer: str
    fold: int
    repeat: int

    @property
    def name(self) -> str:
        return f"{self.trainer}__fold_{self.fold}__repeat_{self.repeat}"


def study_jobs(study: Study) -> list[Job]:
    """Repeat-major order: the first repeat of every trainer and fold finishes first, so an
    interrupted study already holds a comparable set of runs."""
    return [Job(trainer, fold, repeat) for repeat in range(study.repeats) for fold in study.folds
            for trainer in study.trainers]


def run_folder(study_dir: Path, job: Job) -> Path:
    """Predictions, evaluation and logs of one job."""
    return Path(study_dir) / RUNS_DIR / job.name


def state_path(study_dir: Path, job: Job) -> Path:
    return Path(study_dir) / JOBS_DIR / f"{job.name}.json"


def read_state(study_dir: Path, job: Job) -> dict[str, Any]:
    path = state_path(study_dir, job)
    if not path.is_file():
        return {"state": PENDING, "attempts": 0}
    try:
        return read_user_json(path, "job state", expected_type=dict, error=StudyError)
    except StudyError as error:
        raise StudyError(f"{error}; delete it to run the job again") from None


def write_state(study_dir: Path, job: Job, **changes: Any) -> dict[str, Any]:
    return update_state(study_dir, job, lambda state: state.update(changes))


def update_state(study_dir: Path, job: Job, change) -> dict[str, Any]:
    """Read, ``change(state)``, write, under a lock: the driver (``study run``) and the job's own
    process both record into the state, possibly at the same moment."""
    path = state_path(study_dir, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    # (never called from a signal handler: the code it interrupted may hold the lock)
    with open(path.with_name(f".{path.name}.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            state = read_state(study_dir, job)
            change(state)
            state.update(job=job.name, trainer=job.trainer, fold=job.fold, repeat=job.repeat)
            write_json(path, state)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return state


def count(study_dir: Path, job: Job, counter: str, **changes: Any) -> dict[str, Any]:
    """Adds one to ``counter`` (failures, preemptions, submissions) and records ``changes``."""
    def change(state):
        state[counter] = state.get(counter, 0) + 1
        state.update(changes)

    return update_state(study_dir, job, change)


def in_study(study_dir: Path, value: Optional[str]) -> Optional[Path]:
    """A path recorded in a job's state: relative ones are inside the study folder (so a moved
    or copied study keeps working)."""
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else Path(study_dir) / path


def relative_to_study(study_dir: Path, path: Path) -> str:
    """What a job's state records for ``path``: relative to the study folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path(study_dir).resolve()))
    except ValueError:
        return str(path)


def finished_metrics(study_dir: Path, job: Job, state: dict[str, Any]) -> Optional[Path]:
    """The evaluation of a finished job, None when it is not finished. One rule for `study
    status` and `study report`: done, and its metrics.json is there (where the state says, else
    at its place in this study folder, for states written before the folder moved)."""
    if state.get("state") != DONE:
        return None
    for folder in (in_study(study_dir, state.get("evaluation")), run_folder(study_dir, job) / EVALUATION_DIR):
        if folder is not None and (folder / "metrics.json").is_file():
            return folder / "metrics.json"
    return None


def epoch_reached(log_path: Optional[Path]) -> Optional[int]:
    """The last epoch nnU-Net started, from the training log (every attempt appends to it)."""
    if not log_path or not Path(log_path).is_file():
        return None
    epochs = EPOCH_LINE.findall(Path(log_path).read_text(errors="replace"))
    return int(epochs[-1]) if epochs else None


def mark_started(study_dir: Path, job: Job, device: str, log: Path, **extra: Any) -> dict[str, Any]:
    previous = read_state(study_dir, job)
    return write_state(study_dir, job, state=RUNNING, attempts=previous.get("attempts", 0) + 1, device=device,
                       host=socket.gethostname(), pid=os.getpid(), started=time.time(), finished=None,
                       duration_s=None, error=None, log=str(log), **extra)


def mark_finished(study_dir: Path, job: Job, error: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    """Done, or failed with ``error``; a real failure (not an interruption) counts towards
    ``--max-attempts``."""
    def change(state):
        finished = time.time()
        started = state.get("started") or finished
        state.update(state=FAILED if error else DONE, error=error, finished=finished,
                     duration_s=round(finished - started, 1), **extra)
        if error and error != INTERRUPTED_ERROR:
            state["failures"] = state.get("failures", 0) + 1

    return update_state(study_dir, job, change)


def run_lock(study_dir: Path) -> OutputLock:
    """Holds ``STUDY_DIR/.run.lock`` while a ``study run`` works on the study: the one lock of
    every pu-nnunet output (pu_nnunet/output_lock.py), inside the study folder."""
    return OutputLock(Path(study_dir) / LOCK_FILE, study_dir, error=StudyError)


def run_in_progress(study_dir: Path) -> bool:
    return is_locked(Path(study_dir) / LOCK_FILE)


def job_states(study: Study) -> Iterator[tuple[Job, dict[str, Any]]]:
    for job in study_jobs(study):
        yield job, read_state(study.study_dir, job)
