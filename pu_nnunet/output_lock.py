"""One writer per output: an exclusive lock that every command writing a folder or file holds
while it runs, so a second run into the same output is refused, naming the first.

The lock is ``flock`` on a small file (the kernel releases it when the process ends, however it
ends, so a killed run never leaves a stale lock). The file holds the holder's pid, command line,
host and start time, which a refused run prints. Where the file lies:

- a command's output (``predict -o``, ``evaluate -o``, ``export-onnx -o``, a dataset folder):
  beside it, ``.NAME.pu-nnunet.lock``, so the output folder itself holds only what the command
  writes (several commands refuse a folder with unknown files, and a dataset folder is replaced
  by a rename);
- a study folder: inside it, ``.run.lock`` (:data:`pu_nnunet.study.jobs.LOCK_FILE`).

The holder removes the file on release. A process that opened the file just before that would
lock a removed file, so a new holder checks, after locking, that the path still names the file
it locked, and starts over when it does not.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import socket
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable, Optional

from pu_nnunet.user_errors import UserInputError, describe_os_error

LOCK_SUFFIX = ".pu-nnunet.lock"
# the longest file name Linux and macOS file systems take (NAME_MAX), in bytes
MAX_NAME_BYTES = 255
# a holder that has locked but not yet written its line is read as empty; wait this long for it
HOLDER_WRITE_WAIT_S = 0.2


class OutputBusyError(UserInputError):
    """Another run holds the output's lock."""


def lock_file_beside(target: str | Path) -> Path:
    """``.NAME.pu-nnunet.lock`` beside ``target`` (a folder or a file), on the resolved path, so
    ``out``, ``./out/`` and a symlink to it share one lock."""
    target = Path(target).resolve()
    name = f".{target.name or 'root'}{LOCK_SUFFIX}"
    if len(name.encode()) > MAX_NAME_BYTES:
        # a name near the limit leaves no room for the lock's affixes: a digest of it stands in, so
        # the command itself reports the output's own name as too long, as it would without a lock
        name = f".{hashlib.sha256(target.name.encode()).hexdigest()[:32]}{LOCK_SUFFIX}"
    return target.parent / name


def _holder_line(command: str) -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "started_s": time.time()})


def describe_holder(lock_file: Path) -> str:
    """``pid 123 on host, started ..., running `pu-nnunet predict ...``` from the lock file."""
    deadline = time.monotonic() + HOLDER_WRITE_WAIT_S
    while True:
        try:
            holder = json.loads(lock_file.read_text())
            break
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                return "a run that has not recorded itself yet"
            time.sleep(0.02)
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}, "
            f"running `{holder.get('command')}`")


class OutputLock:
    """Context manager holding ``lock_file`` for ``target``; entering it raises ``error`` (an
    :class:`OutputBusyError` by default) naming the holder when another process holds it."""

    def __init__(self, lock_file: str | Path, target: str | Path, command: Optional[str] = None,
                 error: type[UserInputError] = OutputBusyError, create_folders: bool = True):
        self.lock_file, self.target = Path(lock_file), Path(target)
        self.create_folders = create_folders
        self.command = command or shlex.join(["pu-nnunet", *sys.argv[1:]])
        self.error = error
        self.handle = None
        self._created: list[Path] = []

    def __enter__(self) -> "OutputLock":
        if not self.create_folders and not self.lock_file.parent.is_dir():
            return self  # the command refuses a missing folder itself, and writes nothing
        self._make_folders(self.lock_file.parent)
        while True:
            try:
                handle = open(self.lock_file, "a+")
            except OSError as error:  # a read-only or full file system, a folder not writable
                raise self.error(f"{self.target}: cannot write the lock file {self.lock_file} beside it "
                                 f"({describe_os_error(error).rsplit(': ', 1)[-1]}); is the folder writable?") from None
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise self.error(f"{self.target}: another run is writing here ({describe_holder(self.lock_file)}); "
                                 f"wait for it to end or stop it (its lock: {self.lock_file})") from None
            try:
                same_file = os.stat(self.lock_file).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            handle.close()  # locked a file its holder removed meanwhile: lock the new one
        handle.seek(0)
        handle.truncate()
        handle.write(_holder_line(self.command) + "\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is None:
            return
        try:
            self.lock_file.unlink(missing_ok=True)  # while still held: see the module docstring
        finally:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
        for folder in reversed(self._created):  # folders made only for the lock, if left empty
            try:
                folder.rmdir()
            except OSError:
                break

    def _make_folders(self, folder: Path) -> None:
        missing = []
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            self._created.append(path)


def is_locked(lock_file: str | Path) -> bool:
    """Whether a live process holds ``lock_file`` (never creates it)."""
    try:
        handle = open(lock_file, "r")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def locked_outputs(targets: Iterable[str | Path], command: Optional[str] = None, files: bool = False) -> ExitStack:
    """Holds the lock beside each of ``targets`` (a command's output folders, or with ``files``
    its output files) until the returned stack is closed; refuses, naming the holder, when any is
    held. Missing parent folders of output folders are made (and removed again if left empty);
    those of output files are not: the commands writing files refuse a missing folder."""
    stack = ExitStack()
    try:
        for target in dict.fromkeys(Path(t).resolve() for t in targets):
            stack.enter_context(OutputLock(lock_file_beside(target), target, command, create_folders=not files))
    except BaseException:
        stack.close()
        raise
    return stack
