"""Runs nnU-Net's console scripts as a user would, with a log file and a progress bar.

Used by every step of a study (and so of the demo): planning, training and prediction are
nnU-Net's own commands, so their logs and checkpoints are nnU-Net's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from pu_nnunet.cpu_threads import passive_wait_environment
from pu_nnunet.trainers import EXT_TRAINER_VARIABLE, with_trainer_folder
from pu_nnunet.user_errors import PuNnunetError

NNUNET_FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class StepFailed(PuNnunetError, RuntimeError):
    """An nnU-Net command of a study exited with an error; the message names its log file."""


class StoppedOnSignal(Exception):
    """nnUNetv2_train saved checkpoint_latest.pth on a signal and stopped (not a failure: the
    job resumes from it)."""


def nnunet_environment(workdir: Path) -> dict:
    """The environment for nnU-Net's commands: the user's nnUNet_* folders where set, else under workdir.

    nnUNet_extTrainer gets this package's trainer folder added (kept, not replaced, if the user
    has one), nnU-Net's worker pools are sized for the machine, and torch's waiting threads sleep
    (OMP_WAIT_POLICY=PASSIVE unless set: :mod:`pu_nnunet.cpu_threads`).
    """
    env = dict(os.environ)
    for variable in NNUNET_FOLDER_VARIABLES:
        if not env.get(variable):
            env[variable] = str(workdir / variable)
    env[EXT_TRAINER_VARIABLE] = with_trainer_folder(env.get(EXT_TRAINER_VARIABLE))
    # nnU-Net's export/metric pools default to 8 spawned processes: too many for a small machine
    env.setdefault("nnUNet_def_n_proc", str(min(8, os.cpu_count() or 1)))
    env["PYTHONUNBUFFERED"] = "1"
    return passive_wait_environment(env)


def console_script(name: str) -> str:
    """nnU-Net's console script next to this interpreter (a venv need not be on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


# the main thread's wait for a command, in slices (signal handlers run between them)
WAIT_TICK_S = 1.0
# the command running now (one per job process) and the event set once it has exited: a
# scheduler's warning signal is forwarded to it
_running: Optional[tuple[subprocess.Popen, threading.Event]] = None
# how long a stopped command gets to write its checkpoint and exit (a large 3D network's
# checkpoint takes seconds; SLURM's KillWait after the time limit is 30 s by default)
STOP_GRACE_S = 90


def stop_running_command(signum: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> Optional[int]:
    """Sends ``signum`` to the running nnU-Net command and waits for it to exit (this package's
    trainers save ``checkpoint_latest.pth`` and exit with EXIT_SAVED_ON_SIGNAL); killed after
    ``grace_s``. Returns its exit code, None when no command was running. Safe in a signal
    handler: it waits on an event, never in Popen.wait (whose lock the interrupted code may hold)."""
    running = _running
    if running is None:
        return None
    proc, exited = running
    if not exited.is_set():
        proc.send_signal(signum)
        if not exited.wait(grace_s):
            proc.kill()
            exited.wait()
    return proc.returncode


def run_logged(command: list[str], env: dict, log_path: Path, description: str,
               progress_pattern: Optional[str] = None, progress_total: Optional[int] = None) -> str:
    """Runs a command, writing everything it prints to log_path; a tqdm bar advances on each
    output line matching progress_pattern. Returns the output; raises StepFailed on failure and
    StoppedOnSignal when a trainer saved its checkpoint on a signal and stopped."""
    global _running
    from pu_nnunet.trainers.preemption import EXIT_SAVED_ON_SIGNAL

    log_path.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(progress_pattern) if progress_pattern else None
    lines: list[str] = []
    bar = tqdm(total=progress_total, desc=description, unit="step" if pattern else "line", leave=True,
               disable=None)
    exited = threading.Event()
    # appended, line-buffered: the log keeps every attempt of a step and is readable while it runs
    with open(log_path, "a", buffering=1) as log:
        log.write("$ " + " ".join(command) + "\n")
        proc = subprocess.Popen([console_script(command[0]), *command[1:]], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

        def follow() -> None:
            # a thread reads the output and reaps the command, so the main thread only waits
            # on an event and stays free for signal handlers (which may wait for the command)
            try:
                for line in proc.stdout:
                    log.write(line)
                    lines.append(line)
                    if pattern is None or pattern.search(line):
                        bar.update(1)
            finally:
                proc.wait()
                exited.set()

        _running = (proc, exited)
        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            while not exited.wait(WAIT_TICK_S):
                pass
        except BaseException:
            # interrupted (SIGTERM, Ctrl-C): stop the command too, so nothing keeps writing into
            # the folders a resumed run will use (a trainer of this package saves first)
            stop_running_command()
            log.write("\n[interrupted: the command was stopped]\n")
            raise
        finally:
            _running = None
            follower.join(timeout=5)
            proc.stdout.close()  # else a ResourceWarning reaches the user as "unclosed file"
            bar.close()
    returncode = proc.returncode
    if returncode == EXIT_SAVED_ON_SIGNAL:
        raise StoppedOnSignal(f"{description}: stopped by a signal after saving its checkpoint; log: {log_path}")
    if returncode != 0:
        tail = "".join(lines[-15:])
        raise StepFailed(f"{description} failed (exit code {returncode}); full log: {log_path}\n{tail}")
    return "".join(lines)
