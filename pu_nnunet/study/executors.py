"""Where a study's jobs run.

- ``LocalExecutor``: on this machine, one job at a time per device: ``["cpu"]`` runs them one
  after another; ``["cuda:0", "cuda:1"]`` runs two at a time, each process seeing only its GPU
  (CUDA_VISIBLE_DEVICES). Each job is its own process (``python -m pu_nnunet.study.job``).
- ``SlurmExecutor``: the jobs as one SLURM job array submitted through submitit (partition,
  time limit, GPUs per job, the warning signal, array concurrency and extra sbatch options
  passed through), requeued after a time limit or a preemption; ``backend="local"`` uses
  submitit's LocalExecutor, the same job machinery without a cluster.

Both run the same function, :func:`pu_nnunet.study.steps.run_job`, which records the job's
state; an executor runs a job that failed for real again until it has failed ``max_attempts``
times, and reports which jobs failed.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.jobs import (FAILED, QUEUED, RUNNING, Job, count, in_study, mark_finished, read_state,
                                  run_folder)
from pu_nnunet.study.nnunet_commands import STOP_GRACE_S
from pu_nnunet.study.spec import Study

log = logging.getLogger("pu_nnunet.study")

# a job that failed for real (an error, not a stop by a signal) this many times is not run again
DEFAULT_MAX_ATTEMPTS = 3
# pu_nnunet.study.job's exit status of an interrupted job (not a failure)
EXIT_INTERRUPTED = 143


def check_max_attempts(value: int) -> None:
    if value < 1:
        raise StudyError(f"--max-attempts must be at least 1, got {value}")

# how long an interrupted job process gets to stop its nnU-Net command (which saves its
# checkpoint within nnunet_commands.STOP_GRACE_S) and record its state
JOB_STOP_GRACE_S = STOP_GRACE_S + 30


def parse_devices(values: Optional[list[str]]) -> list[str]:
    """``--devices``: "cpu" or "cuda:N" entries ("cuda" = "cuda:0"); default one GPU when torch
    sees one, else the CPU. (Kept in this one function so a shared device resolver can replace it.)"""
    if not values:
        import torch

        return ["cuda:0"] if torch.cuda.is_available() else ["cpu"]
    devices = []
    for value in values:
        value = value.strip().lower()
        if value == "cuda":
            value = "cuda:0"
        if value != "cpu" and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise StudyError(f"--devices: {value!r} is neither 'cpu' nor 'cuda:N'")
        if value in devices:
            raise StudyError(f"--devices: {value} is listed twice")
        devices.append(value)
    if "cpu" in devices and len(devices) > 1:
        raise StudyError(f"--devices: 'cpu' runs jobs one at a time and cannot be mixed with GPUs: {devices}")
    return devices


class LocalExecutor:
    def __init__(self, devices: list[str], echo: Optional[bool] = None, cpu_threads: Optional[int] = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS):
        if cpu_threads is not None and cpu_threads < 1:
            raise StudyError(f"--cpu-threads must be at least 1, got {cpu_threads}")
        check_max_attempts(max_attempts)
        self.max_attempts = max_attempts
        self.devices = devices
        self.cpu_threads = cpu_threads
        # echo: each job's own output (nnU-Net's epochs) goes to this terminal; default with one
        # device only (several jobs at once would interleave); otherwise to runs/<job>/job.log
        self.echo = len(devices) == 1 if echo is None else echo
        self.running: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping = False

    def _start(self, study: Study, job: Job, device: str) -> subprocess.Popen:
        env = dict(os.environ)
        if self.cpu_threads is not None:
            from pu_nnunet.trainers.pure_trainers import CPU_THREADS_VARIABLE

            env[CPU_THREADS_VARIABLE] = str(self.cpu_threads)
            # torch's default for the job's other steps (pu-nnunet predict, evaluate)
            env["OMP_NUM_THREADS"] = str(self.cpu_threads)
        nnunet_device = "cpu"
        if device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
            nnunet_device = "cuda"
        folder = run_folder(study.study_dir, job)
        folder.mkdir(parents=True, exist_ok=True)
        output = None if self.echo else open(folder / "job.log", "a")
        try:
            return subprocess.Popen([sys.executable, "-m", "pu_nnunet.study.job", str(study.study_dir), job.name,
                                     nnunet_device], env=env, stdout=output, stderr=output, start_new_session=True)
        finally:
            if output is not None:
                output.close()

    def _worker(self, study: Study, device: str, todo: "queue.Queue[Job]", failed: list[str]) -> None:
        while not self.stopping:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            log.info("job %s on %s", job.name, device)
            with self.lock:
                if self.stopping:
                    return
                proc = self._start(study, job, device)
                self.running[job.name] = proc
            code = proc.wait()
            with self.lock:
                self.running.pop(job.name, None)
            if code != 0 and not self.stopping:
                state = read_state(study.study_dir, job)
                log.warning("job %s failed (exit %d): %s; log %s", job.name, code, state.get("error"),
                            in_study(study.study_dir, state.get("log")))
                if state.get("failures", 0) < self.max_attempts and code != EXIT_INTERRUPTED:
                    log.info("job %s: failure %d of at most %d; running it again", job.name,
                             state.get("failures", 0), self.max_attempts)
                    todo.put(job)
                else:
                    failed.append(job.name)

    def run(self, study: Study, jobs: list[Job]) -> list[str]:
        """Runs the jobs; returns the names of those that failed. Interrupted (SIGTERM/SIGINT in
        this process), it stops the running jobs, which record themselves as interrupted."""
        todo: "queue.Queue[Job]" = queue.Queue()
        for job in jobs:
            todo.put(job)
        failed: list[str] = []
        threads = [threading.Thread(target=self._worker, args=(study, device, todo, failed), daemon=True)
                   for device in self.devices]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.5)  # short waits: signal handlers run in this thread
        except BaseException:
            self.stop()
            raise
        return failed

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            procs = list(self.running.values())
        for proc in procs:
            # the job process only: it forwards SIGTERM to nnU-Net's main process, which saves;
            # the whole group would also stop nnU-Net's data-augmentation workers under it
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in procs:
            try:
                proc.wait(timeout=JOB_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # anything the job left behind in its group
            except (ProcessLookupError, PermissionError):
                pass


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

    Each job runs :class:`pu_nnunet.study.job.StudyJob`, which submitit requeues on the warning
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
        from pu_nnunet.study.job import StudyJob

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
