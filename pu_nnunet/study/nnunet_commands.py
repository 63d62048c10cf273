"""Runs nnU-Net's console scripts as a user would, with a log file and a progress bar.

Used by every step of a study (and so of the demo): planning, training and prediction are
nnU-Net's own commands, so their logs and checkpoints are nnU-Net's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from pu_nnunet.trainers import EXT_TRAINER_VARIABLE, with_trainer_folder

NNUNET_FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class StepFailed(RuntimeError):
    """An nnU-Net command of a study exited with an error; the message names its log file."""


def nnunet_environment(workdir: Path) -> dict:
    """The environment for nnU-Net's commands: the user's nnUNet_* folders where set, else under workdir.

    nnUNet_extTrainer gets this package's trainer folder added (kept, not replaced, if the user
    has one), and nnU-Net's worker pools are sized for the machine.
    """
    env = dict(os.environ)
    for variable in NNUNET_FOLDER_VARIABLES:
        if not env.get(variable):
            env[variable] = str(workdir / variable)
    env[EXT_TRAINER_VARIABLE] = with_trainer_folder(env.get(EXT_TRAINER_VARIABLE))
    # nnU-Net's export/metric pools default to 8 spawned processes: too many for a small machine
    env.setdefault("nnUNet_def_n_proc", str(min(8, os.cpu_count() or 1)))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def console_script(name: str) -> str:
    """nnU-Net's console script next to this interpreter (a venv need not be on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def run_logged(command: list[str], env: dict, log_path: Path, description: str,
               progress_pattern: Optional[str] = None, progress_total: Optional[int] = None) -> str:
    """Runs a command, writing everything it prints to log_path; a tqdm bar advances on each
    output line matching progress_pattern. Returns the output; raises StepFailed on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(progress_pattern) if progress_pattern else None
    lines = []
    bar = tqdm(total=progress_total, desc=description, unit="step" if pattern else "line", leave=True,
               disable=None)
    # appended, line-buffered: the log keeps every attempt of a step and is readable while it runs
    with open(log_path, "a", buffering=1) as log:
        log.write("$ " + " ".join(command) + "\n")
        proc = subprocess.Popen([console_script(command[0]), *command[1:]], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if pattern is None or pattern.search(line):
                    bar.update(1)
            returncode = proc.wait()
        except BaseException:
            # interrupted (SIGTERM, Ctrl-C): stop the command too, so nothing keeps writing
            # into the folders a resumed run will use
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.write("\n[interrupted: the command was stopped]\n")
            raise
        finally:
            proc.stdout.close()  # else a ResourceWarning reaches the user as "unclosed file"
            bar.close()
    if returncode != 0:
        tail = "".join(lines[-15:])
        raise StepFailed(f"{description} failed (exit code {returncode}); full log: {log_path}\n{tail}")
    return "".join(lines)
