"""The jobs of a study (one nnU-Net training per trainer x fold x repeat, with its prediction and
evaluation) and their state on disk, ``STUDY_DIR/jobs/<job>.json``, written atomically.

States: ``pending`` (no state file), ``running``, ``done``, ``failed`` (with the error; an
interrupted job is failed with "interrupted"). Only one ``study run`` works on a study at a time
(``STUDY_DIR/.run.lock``), so a job left ``running`` while no run holds the lock was cut off
(the machine or the run was killed): ``status`` says so and the next ``study run`` resumes it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.spec import Study, write_atomic_json

JOBS_DIR = "jobs"
RUNS_DIR = "runs"
LOCK_FILE = ".run.lock"
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


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
        return json.loads(path.read_text())
    except ValueError as error:
        raise StudyError(f"{path} is not valid JSON ({error}); delete it to run the job again") from None


def write_state(study_dir: Path, job: Job, **changes: Any) -> dict[str, Any]:
    state = read_state(study_dir, job)
    state.update(changes, job=job.name, trainer=job.trainer, fold=job.fold, repeat=job.repeat)
    write_atomic_json(state_path(study_dir, job), state)
    return state


def mark_started(study_dir: Path, job: Job, device: str, log: Path, **extra: Any) -> dict[str, Any]:
    previous = read_state(study_dir, job)
    return write_state(study_dir, job, state=RUNNING, attempts=previous.get("attempts", 0) + 1, device=device,
                       host=socket.gethostname(), pid=os.getpid(), started=time.time(), finished=None,
                       duration_s=None, error=None, log=str(log), **extra)


def mark_finished(study_dir: Path, job: Job, error: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    state = read_state(study_dir, job)
    finished = time.time()
    started = state.get("started") or finished
    return write_state(study_dir, job, state=FAILED if error else DONE, error=error, finished=finished,
                       duration_s=round(finished - started, 1), **extra)


class RunLock:
    """Holds ``STUDY_DIR/.run.lock`` while a ``study run`` works on the study (flock: released
    by the kernel when the process dies, so a killed run never leaves a stale lock)."""

    def __init__(self, study_dir: Path):
        self.path = Path(study_dir) / LOCK_FILE
        self.handle = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise StudyError(f"another `pu-nnunet study run` is working on {self.path.parent} "
                             f"(it holds {self.path}); wait for it or stop it first") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def run_in_progress(study_dir: Path) -> bool:
    path = Path(study_dir) / LOCK_FILE
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def job_states(study: Study) -> Iterator[tuple[Job, dict[str, Any]]]:
    for job in study_jobs(study):
        yield job, read_state(study.study_dir, job)
