"""Errors a user causes and can fix (a missing folder, an unreadable file, existing results), and
how every ``pu-nnunet`` subcommand reports them.

Each part raises its own subclass (``DatasetError``, ``EvaluationError``, ``PredictionError``)
whose message names the file, folder or case at fault. :func:`run_command`, which the dispatcher
(:mod:`pu_nnunet.cli`) wraps around every subcommand, turns these, every ``OSError`` (file is
a folder, read-only file system, disk full, name too long, permission denied), Ctrl-C and
SIGTERM into one line on stderr:

    pu-nnunet COMMAND: error: PATH: what is wrong        exit code 1
    pu-nnunet COMMAND: interrupted (SIGTERM) ...         exit code 130 (Ctrl-C) / 143 (SIGTERM)

Anything else escaping the library is a bug and keeps its traceback. ``--debug`` shows the
traceback of user errors too.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# shell convention: a process ended by signal N exits with 128 + N
EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class PuNnunetError(Exception):
    """The one root of every error a pu-nnunet command reports to its user: the message is meant
    for the user as it stands (it names the file at fault, or the log of the step that failed),
    and ``pu-nnunet CMD`` prints it as one ``error:`` line, without a traceback."""


class UserInputError(PuNnunetError):
    """Bad input; the message is meant for the user as it stands (it names the file at fault)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit, a container stop) turned into an exception.

    A subclass of KeyboardInterrupt so that every clean-up written for Ctrl-C (``finally``
    blocks, context managers removing temporary folders, worker pools) runs for it too.
    """


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises :class:`Terminated` instead of killing the
    process on the spot, so temporary folders are removed as after Ctrl-C."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_interrupts_in_worker() -> None:
    """Initializer of worker pools: only the parent handles Ctrl-C (and ends the pool), so one
    line is printed instead of one traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def worker_pool(num_processes: int):
    """A spawn-context process pool whose workers leave Ctrl-C to the parent (use it as a context
    manager: leaving the block, also by an interrupt, terminates the workers)."""
    import multiprocessing

    # spawn, not fork: forking a process that runs threads (tqdm's monitor, BLAS) can hang
    return multiprocessing.get_context("spawn").Pool(num_processes, initializer=ignore_interrupts_in_worker)


# errno -> what the user should read (strerror is often cryptic: "[Errno 36] File name too long")
_OS_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENAMETOOLONG: "file name too long",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "a part of this path is a file, expected a folder",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or folder",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file size limit reached)",
}


def describe_os_error(error: OSError) -> str:
    """``PATH: what is wrong`` for an OSError (the path as the OS reported it)."""
    problem = _OS_PROBLEMS.get(error.errno, error.strerror or str(error) or type(error).__name__)
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {problem}" if paths else problem


@contextmanager
def naming_the_path(path) -> Iterator[None]:
    """An OSError that names no file (a write() on a full disk) gets ``path``, the file or folder
    being written, so the one-line error says where it happened."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error


def error_reason(error: Exception) -> str:
    """The last non-empty line of an exception's message: SimpleITK's and ITK's messages start with
    the C++ source location and end with the reason."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def run_command(command: str, function: Callable[[], int | None], debug: bool = False) -> int:
    """Runs one subcommand: warnings become one line each on stderr, user errors and OS errors
    one error line (exit 1), Ctrl-C / SIGTERM one line (exit 130 / 143). Returns the exit code."""
    prefix = f"pu-nnunet {command}"

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        # libraries' notes to developers (torch, nnU-Net) are not for the user of a command
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.showwarning = show_warning
        try:
            with sigterm_as_exception():
                return int(function() or 0)
        except KeyboardInterrupt as interrupt:
            terminated = isinstance(interrupt, Terminated)
            print(f"{prefix}: interrupted ({'SIGTERM' if terminated else 'Ctrl-C'}); partial output was removed",
                  file=sys.stderr)
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        except (PuNnunetError, OSError) as error:
            if debug:
                traceback.print_exc()
            message = describe_os_error(error) if isinstance(error, OSError) else str(error).rstrip()
            print(f"{prefix}: error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR


def debug_requested() -> bool:
    """``PU_NNUNET_DEBUG=1`` in the environment acts as ``--debug``."""
    return os.environ.get("PU_NNUNET_DEBUG", "") not in ("", "0")
