"""The SLURM executor: a study's jobs as one SLURM job array through submitit, requeued after a
time limit or a preemption, re-attached by a ``study run`` started again.

``backend="local"`` runs the same submitit machinery on this machine (submitit's LocalExecutor).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.jobs import FAILED, QUEUED, RUNNING, Job, count, mark_finished, read_state
from pu_nnunet.study.spec import Study

log = logging.getLogger("pu_nnunet.study")

# a job that failed for real (an error, not a stop by a signal) this many times is not run again
DEFAULT_MAX_ATTEMPTS = 3


def check_max_attempts(value: int) -> None:
    if value < 1:
        raise StudyError(f"--max-attempts must be at least 1, got {value}")


# submitit requeues a job that hit its time limit at most this many times (its default, 3, would
# end nnU-Net's 1000 epochs after four time-limit slices); preemptions are not counted by it
MAX_TIME_LIMIT_REQUEUES = 100
# SLURM sends the warning signal this long before the time limit (sbatch --signal=USR2@S): one
# training iteration plus writing the checkpoint (seconds), with room for a slow file system
DEFAULT_SIGNAL_DELAY_S = 120
# how often `study run` asks submitit/SLURM about its jobs (submitit caches sacct for a minute)
POLL_S = 5
# submitit's job id of a local-backend job is the pid of its controller process
SUBMITIT_LOCAL_CONTROLLER = "submitit.local._local"


class SlurmExecutor:
    """Jobs as one SLURM job array (submitit), at most ``max_concurrent`` running at a time.

    Each job runs :class:`pu_nnunet.study.execution.worker.StudyJob`, which submitit requeues on the warning
    signal (time limit or preemption) after the training saved its checkpoint. A job that failed
    for real is submitted again until it has failed ``max_attempts`` times. Job ids go into each
    job's state, so a ``study run`` started again while jobs are queued or running waits for
    them instead of submitting them twice; stopping ``study run`` leaves them running."""

    def __init__(self, partition: Optional[str] = None, time_limit_min: int = 24 * 60, gpus_per_job: int = 1,
                 cpus_per_job: Optional[int] = None, sbatch: Optional[dict] = None, backend: str = "slurm",
                 max_concurrent: Optional[int] = None, signal_delay_s: int = DEFAULT_SIGNAL_DELAY_S,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        if backend not in ("slurm", "local"):
            raise StudyError(f"SLURM backend must be 'slurm' or 'local', got {backend!r}")
        if time_limit_min < 1:
            raise StudyError(f"--time-limit must be at least 1 minute, got {time_limit_min}")
        if gpus_per_job < 0:
            raise StudyError(f"--gpus-per-job must be 0 or more, got {gpus_per_job}")
        if max_concurrent is not None and max_concurrent < 1:
            raise StudyError(f"--max-concurrent must be at least 1, got {max_concurrent}")
        if not 0 < signal_delay_s < time_limit_min * 60:
            raise StudyError(f"--signal-delay must be more than 0 and less than the time limit "
                             f"({time_limit_min * 60} s), got {signal_delay_s}")
        self.partition, self.time_limit_min, self.gpus_per_job = partition, time_limit_min, gpus_per_job
        self.cpus_per_job, self.sbatch, self.backend = cpus_per_job, dict(sbatch or {}), backend
        check_max_attempts(max_attempts)
        self.max_concurrent, self.signal_delay_s, self.max_attempts = max_concurrent, signal_delay_s, max_attempts

    def _executor(self, study: Study):
        submitit = _submitit()
        folder = study.study_dir / "slurm" / "%j"
        if self.backend == "local":
            executor = submitit.LocalExecutor(folder, max_num_timeout=MAX_TIME_LIMIT_REQUEUES)
            executor.update_parameters(timeout_min=self.time_limit_min, gpus_per_node=self.gpus_per_job,
                                       tasks_per_node=1, signal_delay_s=self.signal_delay_s)
            return executor
        executor = submitit.SlurmExecutor(folder, max_num_timeout=MAX_TIME_LIMIT_REQUEUES)
        parameters = dict(job_name="pu-nnunet-study", time=self.time_limit_min, gpus_per_node=self.gpus_per_job,
                          ntasks_per_node=1, nodes=1, signal_delay_s=self.signal_delay_s)
        if self.cpus_per_job:
            parameters["cpus_per_task"] = self.cpus_per_job
        if self.partition:
            parameters["partition"] = self.partition
        if self.max_concurrent:
            parameters["array_parallelism"] = self.max_concurrent
        if self.sbatch:
            parameters["additional_parameters"] = self.sbatch
        executor.update_parameters(**parameters)
        return executor

    # --- jobs submitted before (by this run or an earlier one) -------------------------------
    def _attach(self, study: Study, job: Job):
        """The submitit handle of the job's earlier submission when it is still queued or
        running, else None."""
        state = read_state(study.study_dir, job)
        job_id = state.get("submitted_job_id")
        if not job_id or state.get("state") not in (QUEUED, RUNNING):
            return None
        submitit = _submitit()
        folder = study.study_dir / "slurm" / "%j"
        if self.backend == "local":
            handle = _AttachedLocalJob(submitit.local.local.LocalJob(folder, job_id))
            return None if handle.done() else handle
        handle = submitit.SlurmJob(folder, job_id)
        return None if handle.done(force_check=True) else handle

    def _submit(self, study: Study, executor, jobs: list[Job]) -> dict[str, object]:
        from pu_nnunet.study.execution.worker import StudyJob

        device = "cuda" if self.gpus_per_job > 0 else "cpu"
        with executor.batch():  # one job array
            handles = {job.name: executor.submit(StudyJob(), str(study.study_dir), job.name, device) for job in jobs}
        for job in jobs:
            job_id = str(handles[job.name].job_id)
            count(study.study_dir, job, "submissions", state=QUEUED, submitted_job_id=job_id, executor="slurm",
                  error=None)
            log.info("job %s submitted as %s job %s", job.name, self.backend, job_id)
        return handles

    def _finished(self, study: Study, job: Job, handle) -> Optional[str]:
        """None when the job is done, else its error (recorded in its state)."""
        try:
            handle.result()
            return None
        except Exception as error:  # the job's own failure is in its state already
            state = read_state(study.study_dir, job)
            if state.get("state") != FAILED:  # killed by the scheduler (node failure, out of requeues)
                mark_finished(study.study_dir, job, error=f"{type(error).__name__}: {error}"[-2000:])
            log.warning("job %s failed: %s; logs %s", job.name, read_state(study.study_dir, job).get("error"),
                        Path(handle.paths.stdout).parent)
            return read_state(study.study_dir, job).get("error") or str(error)

    def run(self, study: Study, jobs: list[Job]) -> list[str]:
        executor = self._executor(study)
        active: dict[str, object] = {}
        for job in jobs:
            handle = self._attach(study, job)
            if handle is not None:
                log.info("job %s: %s job %s is still queued or running; waiting for it", job.name, self.backend,
                         handle.job_id)
                active[job.name] = handle
        by_name = {job.name: job for job in jobs}
        waiting = [job for job in jobs if job.name not in active]
        # SLURM runs the array at most max_concurrent at a time; the local backend would start
        # every job at once on this machine, so it is given max_concurrent (default 1) at a time
        limit = (self.max_concurrent or 1) if self.backend == "local" else len(waiting)
        failed = []
        try:
            while active or waiting:
                if waiting and len(active) < limit:
                    batch, waiting = waiting[:limit - len(active)], waiting[limit - len(active):]
                    active.update(self._submit(study, executor, batch))
                for name, handle in list(active.items()):
                    if not handle.done():
                        continue
                    del active[name]
                    job = by_name[name]
                    if self._finished(study, job, handle) is None:
                        continue
                    failures = read_state(study.study_dir, job).get("failures", 0)
                    if failures < self.max_attempts:
                        log.info("job %s: failure %d of at most %d; submitting it again", name, failures,
                                 self.max_attempts)
                        waiting.append(job)
                    else:
                        failed.append(name)
                if active and (len(active) >= limit or not waiting):
                    time.sleep(POLL_S)
        except BaseException:
            # stopping `study run` leaves the jobs to the scheduler; the next run re-attaches
            log.warning("study run stopped; its %s jobs keep running (%s); `study run` again waits for them",
                        self.backend, ", ".join(str(h.job_id) for h in active.values()) or "none")
            raise
        return failed


def _submitit():
    try:
        import submitit
        import submitit.local.local  # noqa: F401  (LocalJob, for re-attaching)
    except ModuleNotFoundError:
        raise StudyError("the slurm executor needs submitit: pip install 'pu-nnunet[slurm]'") from None
    return submitit


class _AttachedLocalJob:
    """A local-backend job submitted by an earlier ``study run``: submitit's LocalJob without
    its process handle, which would call it finished at once; finished here once its
    controller process has exited."""

    def __init__(self, handle):
        self.handle, self.job_id, self.paths = handle, handle.job_id, handle.paths

    def done(self) -> bool:
        return not _local_controller_alive(self.job_id)

    def result(self):
        return self.handle.result()


def _local_controller_alive(job_id: str) -> bool:
    """Whether a submitit local-backend job (its controller process) still runs."""
    try:
        command = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    return SUBMITIT_LOCAL_CONTROLLER.encode() in command
