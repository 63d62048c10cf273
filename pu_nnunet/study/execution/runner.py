"""``study run`` as a library call: prepare the dataset, run every unfinished job, write the report.

Re-running skips finished jobs (a finished job whose robustness sweep is missing runs the
sweep only), resumes interrupted ones (nnU-Net's ``--c`` from their
``checkpoint_latest.pth``), waits for SLURM jobs still queued or running, and retries failed ones
until they have failed ``--max-attempts`` times. Progress goes to the ``pu_nnunet.study``
logger (silence it with ``logging.getLogger("pu_nnunet.study").setLevel(logging.WARNING)``).
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

from pu_nnunet.study.execution.slurm import DEFAULT_MAX_ATTEMPTS
from pu_nnunet.study.jobs import DONE, FAILED, QUEUED, RUNNING, job_states, run_lock, read_state
from pu_nnunet.robustness.study_sweep import dataset_channel, sweep_pending, sweep_state
from pu_nnunet.study.spec import Study
from pu_nnunet.study.execution.steps import Interrupted, check_trainers, prepare_dataset

log = logging.getLogger("pu_nnunet.study")


@dataclass
class StudyOutcome:
    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    report: Optional[dict[str, Any]] = None

    @property
    def complete(self) -> bool:
        return not self.failed


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_study(study: Study, executor, report: bool = True) -> StudyOutcome:
    """Runs the study's unfinished jobs with ``executor`` and writes the report (also when some
    jobs failed: it covers the finished runs and lists the missing ones)."""
    from pu_nnunet.study.report.study_report import write_study_report

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {}
    if in_main_thread:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, _raise_interrupted)
    try:
        with run_lock(study.study_dir):
            check_trainers(study)
            prepare_dataset(study)
            todo, exhausted = [], []
            max_attempts = getattr(executor, "max_attempts", DEFAULT_MAX_ATTEMPTS)
            if study.robustness is not None:
                dataset_channel(study)  # a sweep the dataset cannot take is refused before any job
            for job, state in job_states(study):
                if state["state"] == DONE and sweep_pending(study, job):
                    sweep_failures = (state.get("robustness") or {}).get("failures", 0)
                    if sweep_failures >= max_attempts:
                        log.warning("job %s: its robustness sweep failed %d times; not retried", job.name,
                                    sweep_failures)
                        exhausted.append(f"{job.name} (robustness sweep)")
                        continue
                    log.info("job %s: done before; running its robustness sweep (%s)", job.name,
                             sweep_state(state))
                    todo.append(job)
                    continue
                if state["state"] == DONE:
                    log.info("job %s: done before (%s s), skipped", job.name, state.get("duration_s"))
                    continue
                if state["state"] == FAILED and state.get("failures", 0) >= max_attempts:
                    log.warning("job %s: failed %d times (%s); not retried (raise --max-attempts to retry it)",
                                job.name, state["failures"], (state.get("error") or "").splitlines()[0][:200])
                    exhausted.append(job.name)
                    continue
                if state["state"] in (RUNNING, QUEUED):
                    log.info("job %s: was %s when the last run stopped; resuming it", job.name, state["state"])
                elif state["state"] == FAILED:
                    log.info("job %s: failed before (%s); retrying", job.name, state.get("error"))
                todo.append(job)
            failed = (executor.run(study, todo) if todo else []) + exhausted
            # a job whose sweep failed stays done (its clean results count); the run says so
            failed += [f"{job.name} (robustness sweep)" for job in todo
                       if job.name not in failed and read_state(study.study_dir, job)["state"] == DONE
                       and sweep_pending(study, job)]
            outcome = StudyOutcome(failed=failed)
            outcome.done = [job.name for job, state in job_states(study) if state["state"] == DONE]
            if report:
                outcome.report = write_study_report(study)
            return outcome
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
