"""Where a study's jobs run.

- ``LocalExecutor``: on this machine, one job at a time per device: ``["cpu"]`` runs them one
  after another (``cpu_jobs`` at a time with ``cpu_jobs``); ``["cuda:0", "cuda:1"]`` runs two at a time, each process seeing only its GPU
  (CUDA_VISIBLE_DEVICES). The names follow the one device rule (:mod:`pu_nnunet.devices`). Each job is its own
  process (``python -m pu_nnunet.study.execution.worker``).
- ``SlurmExecutor``: the jobs as one SLURM job array submitted through submitit (partition,
  time limit, GPUs per job, the warning signal, array concurrency and extra sbatch options
  passed through), requeued after a time limit or a preemption; ``backend="local"`` uses
  submitit's LocalExecutor, the same job machinery without a cluster.

Both run the same function, :func:`pu_nnunet.study.execution.steps.run_job`, which records the job's
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
from typing import Optional

from pu_nnunet.study.errors import StudyError
from pu_nnunet.study.jobs import Job, in_study, read_state, run_folder
from pu_nnunet.study.execution.nnunet_commands import STOP_GRACE_S
from pu_nnunet.study.execution.slurm import DEFAULT_MAX_ATTEMPTS, check_max_attempts
# the worker's exit status of an interrupted job (not a failure)
from pu_nnunet.study.execution.worker import EXIT_INTERRUPTED
from pu_nnunet.study.spec import Study

log = logging.getLogger("pu_nnunet.study")

# how long an interrupted job process gets to stop its nnU-Net command (which saves its
# checkpoint within nnunet_commands.STOP_GRACE_S) and record its state
JOB_STOP_GRACE_S = STOP_GRACE_S + 30


def parse_devices(values: Optional[list[str] | str], option: str = "--devices") -> list[str]:
    """``--devices``: names of the one device rule (:func:`pu_nnunet.devices.resolve_device_list`:
    auto, the default, = every GPU torch sees, else cpu; cuda = cuda:0); then the study's own rules:
    each device once, and cpu alone (its jobs run ``cpu_jobs`` at a time, not one per device)."""
    from pu_nnunet.devices import resolve_device_list

    entries = [values] if isinstance(values, str) else values
    if entries is not None and not (isinstance(entries, (list, tuple)) and all(isinstance(v, str) for v in entries)):
        # a TOML [executor] devices = 0, or a list holding a number
        raise StudyError(f"{option} must be a device name or a list of them (auto, cpu, cuda or cuda:N), "
                         f"got {values!r}")
    devices = resolve_device_list(values, option)
    repeated = sorted({device for device in devices if devices.count(device) > 1})
    if repeated:
        raise StudyError(f"{option}: {', '.join(repeated)} listed twice (auto stands for every GPU torch sees)")
    if "cpu" in devices and len(devices) > 1:
        raise StudyError(f"{option}: 'cpu' runs jobs one at a time and cannot be mixed with GPUs: {devices}")
    return devices


class LocalExecutor:
    def __init__(self, devices: list[str], echo: Optional[bool] = None, cpu_threads: Optional[int] = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, cpu_jobs: int = 1):
        if cpu_threads is not None and cpu_threads < 1:
            raise StudyError(f"--cpu-threads must be at least 1, got {cpu_threads}")
        if isinstance(cpu_jobs, bool) or not isinstance(cpu_jobs, int) or cpu_jobs < 1:
            raise StudyError(f"--cpu-jobs must be a whole number of at least 1, got {cpu_jobs!r}")
        if cpu_jobs > 1 and devices != ["cpu"]:
            raise StudyError(f"--cpu-jobs {cpu_jobs}: only with --devices cpu (GPUs run one job each), got {devices}")
        # one worker per device; "cpu" gets cpu_jobs workers, each starting one job at a time
        devices = devices * cpu_jobs if devices == ["cpu"] else devices
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
        from pu_nnunet.cpu_threads import passive_wait_environment

        env = passive_wait_environment(dict(os.environ))
        if self.cpu_threads is not None:
            from pu_nnunet.trainers.pure_trainers import CPU_THREADS_VARIABLE

            env[CPU_THREADS_VARIABLE] = str(self.cpu_threads)
            # torch's default for the job's other steps (pu-nnunet predict, evaluate)
            env["OMP_NUM_THREADS"] = str(self.cpu_threads)
        nnunet_device = "cpu"
        if device.startswith("cuda:"):
            from pu_nnunet.devices import visible_devices_for

            # cuda:N is GPU N of those this process sees: under CUDA_VISIBLE_DEVICES=2,3, cuda:0 is GPU 2
            env["CUDA_VISIBLE_DEVICES"] = visible_devices_for(int(device.split(":", 1)[1]), os.environ)
            nnunet_device = "cuda"
        folder = run_folder(study.study_dir, job)
        folder.mkdir(parents=True, exist_ok=True)
        output = None if self.echo else open(folder / "job.log", "a")
        try:
            return subprocess.Popen([sys.executable, "-m", "pu_nnunet.study.execution.worker", str(study.study_dir),
                                     job.name, nnunet_device], env=env, stdout=output, stderr=output,
                                    start_new_session=True)
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
