"""The study's public API: define a study, run it on this machine and read what it wrote, without
the package's internal modules or the study folder's layout.

    from pu_nnunet.study import api

    study = api.create_study("studies/mine", dataset_id=302, trainers=["nnUNetTrainerPURe",
                             "nnUNetTrainerPUReBaseline"], folds=[0, 1])
    api.save_study(study)
    outcome = api.run_study(study, devices=["cuda:0"])
    folder = api.StudyFolder(study.study_dir)
    print(folder.report, outcome.failed)

``pu-nnunet demo`` (pu_nnunet/demo) uses this module only; ``pu-nnunet study`` (cli_study) is the
command line over the same parts, SLURM included. The names below are the modules' own (re-exported
here, not copied), so the layout is still stated once, by the module that writes each part.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.execution.local import LocalExecutor, parse_devices
from pu_nnunet.study.execution.nnunet_commands import StepFailed
from pu_nnunet.study.execution.runner import StudyOutcome, run_study as _run_study
from pu_nnunet.study.execution.steps import Interrupted
from pu_nnunet.study.jobs import (DONE, EVALUATION_DIR, FAILED, JOBS_DIR, LOCK_FILE, PENDING, PREDICTIONS_DIR,
                                  QUEUED, RUNNING, RUNS_DIR, TRAIN_LOG, Job, read_state, run_folder, study_jobs)
from pu_nnunet.study.logs import LOG_PREFIX_VARIABLE, configure_logging
from pu_nnunet.study.presets import PRESETS
from pu_nnunet.study.report.study_report import COMPARISONS_DIR, PLOTS_DIR, REPORT_FILE, SUMMARY_FILE
from pu_nnunet.study.spec import LOGS_DIR, RESULTS_DIR, STUDY_FILE, Study, load_study, save_study, study_paths

__all__ = ["DONE", "FAILED", "PENDING", "QUEUED", "RUNNING", "Interrupted", "Job", "StepFailed", "Study",
           "StudyError", "StudyFolder", "StudyOutcome", "create_study", "job_state", "load_study", "preset",
           "run_study", "save_study", "show_progress", "study_jobs"]


def create_study(study_dir: str | Path, dataset_id: int, **settings: Any) -> Study:
    """A study in ``study_dir`` (not yet saved): ``settings`` are :class:`Study`'s fields
    (configuration, plans, trainers, baseline, folds, repeats, held_out, synthetic, preset, ...).
    nnU-Net's three folders are the environment's ``nnUNet_*`` where set, else folders inside
    ``study_dir``. Raises :class:`StudyError` on contradicting settings."""
    return Study(dataset_id=dataset_id, paths=study_paths(Path(study_dir)), **settings)


def preset(name: str) -> dict[str, Any]:
    """A named preset's settings (a copy): dataset_id, configuration, plans, trainers, folds,
    repeats and, for a built-in synthetic dataset, its generator settings (``synthetic``)."""
    if name not in PRESETS:
        raise StudyError(f"unknown study preset {name!r}; known: {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def run_study(study: Study, devices: Optional[list[str]] = None, echo: Optional[bool] = None,
              report: bool = True) -> StudyOutcome:
    """Runs the saved study's unfinished jobs on this machine and writes its report.

    ``devices`` as ``study run --devices`` takes them (the one device rule of
    :mod:`pu_nnunet.devices`; default ``auto``: every GPU torch sees, else the CPU); ``echo``
    shows each job's own output (nnU-Net's epochs) in this terminal (default: with one device).
    Finished jobs are reused, interrupted ones resumed. A job that fails is recorded, not raised:
    see ``outcome.failed`` and :func:`job_state`. Raises :class:`StepFailed` when preparing the
    dataset fails, :class:`StudyError` or :class:`~pu_nnunet.devices.DeviceError` (both
    :class:`~pu_nnunet.user_errors.UserInputError`) on bad input and :class:`Interrupted` on
    SIGTERM/SIGINT."""
    return _run_study(study, LocalExecutor(parse_devices(devices), echo=echo), report=report)


def job_state(study: Study, job: Job) -> dict[str, Any]:
    """What the study recorded about ``job``: ``state`` (one of PENDING, QUEUED, RUNNING, DONE,
    FAILED), ``error`` and ``log`` of a failed one, ``train_s``/``predict_s`` timings, counters."""
    return read_state(study.study_dir, job)


def show_progress(prefix: str) -> None:
    """Prints the study's progress lines, and those of its job processes, on stdout with
    ``[prefix]`` (a library user may configure the ``pu_nnunet.study`` logger instead).
    Sets the variable the job processes read from this process's environment."""
    configure_logging(prefix)
    os.environ[LOG_PREFIX_VARIABLE] = prefix


@dataclass(frozen=True)
class StudyFolder:
    """Where a study folder keeps what ``study run`` writes."""

    path: Path

    @property
    def study_file(self) -> Path:
        """The resolved study (study.json), written before anything runs."""
        return self.path / STUDY_FILE

    @property
    def runs(self) -> Path:
        """One folder per job: predictions, evaluation and logs."""
        return self.path / RUNS_DIR

    @property
    def jobs(self) -> Path:
        """One state file per job."""
        return self.path / JOBS_DIR

    @property
    def comparisons(self) -> Path:
        """One folder per trainer against the baseline (paired statistics, plots)."""
        return self.path / COMPARISONS_DIR

    @property
    def plots(self) -> Path:
        return self.path / PLOTS_DIR

    @property
    def report(self) -> Path:
        """The study report (report.md)."""
        return self.path / REPORT_FILE

    @property
    def summary(self) -> Path:
        """The report's numbers (summary.json)."""
        return self.path / SUMMARY_FILE

    @property
    def logs(self) -> Path:
        """nnU-Net's planning and preprocessing logs."""
        return self.path / LOGS_DIR

    @property
    def lock(self) -> Path:
        """Held while a ``study run`` works on the study."""
        return self.path / LOCK_FILE

    def run(self, job: Job) -> Path:
        return run_folder(self.path, job)

    def predictions(self, job: Job) -> Path:
        """The job's predictions of the held-out test cases (validation cases stay in nnU-Net's fold folder)."""
        return self.run(job) / PREDICTIONS_DIR

    def evaluation(self, job: Job) -> Path:
        """The job's evaluation (``pu-nnunet evaluate``'s folder: metrics.json, report.md, ...)."""
        return self.run(job) / EVALUATION_DIR

    def train_log(self, job: Job) -> Path:
        return self.run(job) / TRAIN_LOG

    def written(self) -> list[Path]:
        """Everything a study run writes inside the folder (nnU-Net's folders aside), to start over."""
        return [self.study_file, self.jobs, self.runs, self.comparisons, self.plots, self.report, self.summary,
                self.logs, self.lock, self.path / RESULTS_DIR]
