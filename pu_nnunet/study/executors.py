"""Where a study's jobs run.

- ``LocalExecutor``: on this machine, one job at a time per device: ``["cpu"]`` runs them one
  after another; ``["cuda:0", "cuda:1"]`` runs two at a time, each process seeing only its GPU
  (CUDA_VISIBLE_DEVICES). Each job is its own process (``python -m pu_nnunet.study.job``).
- ``SlurmExecutor``: each job is a SLURM job submitted through submitit (partition, time
  limit, GPUs per job and extra sbatch options passed through); ``backend="local"`` uses
  submitit's LocalExecutor, the same job machinery without a cluster.

Both run the same function, :func:`pu_nnunet.study.steps.run_job`, which records the job's
state; an executor only reports which jobs failed.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.jobs import FAILED, Job, mark_finished, read_state, run_folder, write_state
from pu_nnunet.study.spec import Study

log = logging.getLogger("pu_nnunet.study")

# how long an interrupted job process gets to stop its nnU-Net command and record its state
STOP_GRACE_S = 60


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
    def __init__(self, devices: list[str], echo: Optional[bool] = None, cpu_threads: Optional[int] = None):
        if cpu_threads is not None and cpu_threads < 1:
            raise StudyError(f"--cpu-threads must be at least 1, got {cpu_threads}")
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
                failed.append(job.name)
                state = read_state(study.study_dir, job)
                log.warning("job %s failed (exit %d): %s; log %s", job.name, code, state.get("error"),
                            state.get("log"))

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
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in procs:
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


class SlurmExecutor:
    def __init__(self, partition: Optional[str] = None, time_limit_min: int = 24 * 60, gpus_per_job: int = 1,
                 cpus_per_job: Optional[int] = None, sbatch: Optional[dict] = None, backend: str = "slurm"):
        if backend not in ("slurm", "local"):
            raise StudyError(f"SLURM backend must be 'slurm' or 'local', got {backend!r}")
        if time_limit_min < 1:
            raise StudyError(f"--time-limit must be at least 1 minute, got {time_limit_min}")
        if gpus_per_job < 0:
            raise StudyError(f"--gpus-per-job must be 0 or more, got {gpus_per_job}")
        self.partition, self.time_limit_min, self.gpus_per_job = partition, time_limit_min, gpus_per_job
        self.cpus_per_job, self.sbatch, self.backend = cpus_per_job, dict(sbatch or {}), backend

    def _executor(self, study: Study):
        try:
            import submitit
        except ModuleNotFoundError:
            raise StudyError("the slurm executor needs submitit: pip install 'pu-nnunet[slurm]'") from None
        executor = submitit.AutoExecutor(folder=study.study_dir / "slurm" / "%j",
                                         cluster=None if self.backend == "slurm" else "local")
        parameters = dict(name="pu-nnunet-study", timeout_min=self.time_limit_min, gpus_per_node=self.gpus_per_job,
                          tasks_per_node=1, nodes=1)
        if self.cpus_per_job:
            parameters["cpus_per_task"] = self.cpus_per_job
        if self.backend == "slurm":
            if self.partition:
                parameters["slurm_partition"] = self.partition
            if self.sbatch:
                parameters["slurm_additional_parameters"] = self.sbatch
        executor.update_parameters(**parameters)
        return executor

    def run(self, study: Study, jobs: list[Job]) -> list[str]:
        from pu_nnunet.study.job import run_job_with_progress

        executor = self._executor(study)
        device = "cuda" if self.gpus_per_job > 0 else "cpu"
        submitted = []
        for job in jobs:
            handle = executor.submit(run_job_with_progress, str(study.study_dir), job.name, device)
            write_state(study.study_dir, job, submitted_job_id=str(handle.job_id), executor="slurm")
            log.info("job %s submitted as %s job %s", job.name, self.backend, handle.job_id)
            submitted.append((job, handle))
        failed = []
        try:
            for job, handle in submitted:
                try:
                    handle.result()
                except Exception as error:  # the job's own failure is in its state already
                    failed.append(job.name)
                    state = read_state(study.study_dir, job)
                    if state.get("state") != FAILED:  # killed by the scheduler (time limit, node failure)
                        mark_finished(study.study_dir, job, error=f"{type(error).__name__}: {error}"[-2000:])
                    log.warning("job %s failed: %s; logs %s", job.name, read_state(study.study_dir, job).get("error"),
                                Path(handle.paths.stdout).parent)
        except BaseException:
            # stopping `study run` cancels its jobs; their checkpoints stay for the next run
            for job, handle in submitted:
                if not handle.done():
                    handle.cancel(check=False)
            raise
        return failed
