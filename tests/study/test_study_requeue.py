"""A study job through submitit's LocalExecutor (the SLURM code path without a cluster): the
scheduler's warning signal stops it mid-training, submitit requeues it, it resumes from the
checkpoint it saved and finishes; the `study run` driver killed meanwhile and started again
waits for the running job instead of submitting it a second time.

The signal is SIGUSR2 sent to the job's process, as SLURM does ``--signal=USR2@S`` seconds before
the time limit and as submitit's own ``LocalJob._interrupt()`` does in its tests."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NNUNET_BIN = Path(sys.executable).parent
TINY_DATASET_ID = 990  # tests/conftest.py's tiny_trained_model
JOB = "nnUNetTrainerPURe_tiny__fold_0__repeat_0"


def _wait_for(condition, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"study run exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _process_tree(pid: int) -> list[int]:
    """pid and its descendants (from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def _signal_tree(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _state(study_dir: Path) -> dict:
    path = study_dir / "jobs" / f"{JOB}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def test_a_stopped_job_is_requeued_and_a_restarted_driver_reattaches(tiny_trained_model, tmp_path):
    pytest.importorskip("submitit")
    study_dir = tmp_path / "study"
    env = dict(tiny_trained_model["env"], nnUNet_results=str(study_dir / "nnUNet_results"), OMP_NUM_THREADS="1",
               PU_NNUNET_CPU_THREADS="1")
    run = [str(NNUNET_BIN / "pu-nnunet"), "study", "run", "-o", str(study_dir), "--executor", "slurm",
           "--slurm-backend", "local", "--gpus-per-job", "0", "--time-limit", "60"]
    first_log = tmp_path / "first_driver.log"
    with open(first_log, "w") as output:
        driver = subprocess.Popen(run + ["-d", str(TINY_DATASET_ID), "--trainers", "nnUNetTrainerPURe_tiny",
                                         "--folds", "0", "--held-out", "validation"],
                                  env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            train_log = study_dir / "runs" / JOB / "train.log"
            _wait_for(lambda: train_log.is_file() and re.search(r": Epoch 1\s*$", train_log.read_text(), re.M),
                      900, "epoch 1 of the training", driver, first_log)
            time.sleep(0.5)  # into the epoch's iterations
            job_pid = _state(study_dir)["pid"]
            os.kill(job_pid, signal.SIGUSR2)  # the time-limit warning SLURM sends
            stopped_at = time.monotonic()
            _wait_for(lambda: _state(study_dir).get("preemptions") == 1, 120, "the job to record its stop", driver,
                      first_log)
            requeue_s = time.monotonic() - stopped_at
            # submitit restarts it (same job id, a new process)
            _wait_for(lambda: _state(study_dir).get("attempts") == 2 and _state(study_dir)["state"] == "running",
                      300, "the requeued job to start", driver, first_log)
            # held while the drivers change, so that the tiny job cannot finish before the second
            # driver looks at it (a real one runs for hours)
            job_processes = _process_tree(_state(study_dir)["pid"])
            _signal_tree(job_processes, signal.SIGSTOP)
        finally:
            driver.kill()  # the driver dies (a lost login session); the job is the scheduler's
            driver.wait()
    assert _state(study_dir)["state"] == "running"
    second_log = tmp_path / "second_driver.log"
    with open(second_log, "w") as output:
        driver = subprocess.Popen(run, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: "waiting for it" in second_log.read_text(), 600, "the second driver to attach", driver,
                      second_log)
        finally:
            _signal_tree(job_processes, signal.SIGCONT)
        code = driver.wait(timeout=900)
    second = subprocess.CompletedProcess(run, code, second_log.read_text(), "")
    assert second.returncode == 0, second.stdout[-3000:]

    state = _state(study_dir)
    job_id = state["submitted_job_id"]
    assert f"job {JOB}: local job {job_id} is still queued or running; waiting for it" in second.stdout
    assert "submitted as" not in second.stdout
    # one submission: one submitit job folder, the job state counts one
    job_folders = [p.name for p in (study_dir / "slurm").iterdir() if p.name != "%j"]  # %j: submitit's pickles
    assert state["submissions"] == 1 and job_folders == [job_id]
    assert state["state"] == "done" and state["preemptions"] == 1 and state["attempts"] == 2
    assert state.get("failures", 0) == 0 and state["epoch"] == 1
    # the first attempt saved in epoch 1 and stopped (exit 75); the second resumed at epoch 1
    attempts = train_log.read_text().split("$ nnUNetv2_train")[1:]
    assert len(attempts) == 2 and all(" --c" in a.splitlines()[0] for a in attempts)
    stop = re.search(r"SIGTERM: stopped in epoch 1 \([^)]*\) after (\d+) of 10 training iterations", attempts[0])
    assert stop, attempts[0][-2000:]
    assert not re.search(r": Epoch 0\s*$", attempts[1], re.M) and re.search(r": Epoch 1\s*$", attempts[1], re.M)
    submitit_log = "".join(p.read_text() for p in (study_dir / "slurm" / job_id).glob("*.out"))
    assert "this job is preempted" in submitit_log or "this job is timed-out" in submitit_log
    assert "requeued (preemption 1)" in submitit_log
    status = subprocess.run([str(NNUNET_BIN / "pu-nnunet"), "study", "status", str(study_dir)], env=env,
                            capture_output=True, text=True).stdout
    assert re.search(rf"\|\s*done\s*\|\s*2\s*\|\s*1\s*\|\s*1\s*\|\s*{job_id}\s*\|", status), status
    print(f"\nrequeue: job stopped and recorded {requeue_s:.1f} s after SIGUSR2; {stop.group(1)} of 10 iterations "
          f"of epoch 1 replayed (epochs lost: {int(stop.group(1)) / 10:.1f})")
