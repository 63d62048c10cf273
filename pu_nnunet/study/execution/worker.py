"""One job in its own process: ``python -m pu_nnunet.study.execution.worker STUDY_DIR JOB DEVICE`` (local
executor) or :class:`StudyJob` (what a SLURM job runs, through submitit).

Locally, the job runs in its own process group. SIGTERM and SIGINT become :class:`Interrupted`:
the running nnU-Net command gets SIGTERM, this package's trainers save ``checkpoint_latest.pth``
at the next iteration and stop, and the job is recorded as interrupted, to be resumed by the next
``study run``. Exit status: 0 done, 1 failed, 143 interrupted.

On SLURM, submitit catches the warning signal (``--signal=USR2@S``: S seconds before the time
limit, or on preemption) and calls :meth:`StudyJob.checkpoint`: the running nnU-Net command gets
SIGTERM and saves, submitit requeues it, and the job is recorded as queued (one preemption more);
the requeued job resumes the training with ``--c``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time

from pu_nnunet.study.logs import LOG_PREFIX_VARIABLE, configure_logging
from pu_nnunet.study.execution.nnunet_commands import STOP_GRACE_S, StoppedOnSignal, stop_running_command
from pu_nnunet.study.execution.steps import REQUEUE, SUBMITIT_JOB, Interrupted, run_job

EXIT_INTERRUPTED = 143

log = logging.getLogger("pu_nnunet.study")


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_job_with_progress(study_dir: str, job_name: str, device: str) -> dict:
    """run_job with its progress lines on stdout (a SLURM job's output file)."""
    configure_logging(os.environ.get(LOG_PREFIX_VARIABLE, "pu-nnunet study"))
    return run_job(study_dir, job_name, device)


class StudyJob:
    """The function a SLURM job runs: submitit's Checkpointable protocol (``__call__`` and
    ``checkpoint``, which submitit calls on the warning signal before it requeues the job)."""

    def __call__(self, study_dir: str, job_name: str, device: str) -> dict:
        SUBMITIT_JOB.set()
        try:
            return run_job_with_progress(study_dir, job_name, device)
        except StoppedOnSignal:
            # the scheduler's signal reached nnU-Net before (or instead of) this process: hand
            # the stop to submitit's own handler, which calls checkpoint() and requeues the job
            from submitit import JobEnvironment

            os.kill(os.getpid(), JobEnvironment._usr_sig())
            time.sleep(STOP_GRACE_S)  # the handler ends this process
            raise

    def checkpoint(self, study_dir: str, job_name: str, device: str):
        """Called by submitit's signal handler: stops the training (which saves) and hands
        submitit the same call to requeue. The job's state is recorded by run_job on its way
        out (not here: the interrupted code may hold the state's lock)."""
        from submitit.helpers import DelayedSubmission

        REQUEUE.set()
        code = stop_running_command(signal.SIGTERM)
        log.info("%s: the scheduler's warning signal; the running command stopped (exit %s)", job_name, code)
        return DelayedSubmission(self, study_dir, job_name, device)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m pu_nnunet.study.execution.worker STUDY_DIR JOB DEVICE", file=sys.stderr)
        return 2
    study_dir, job_name, device = argv
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        run_job_with_progress(study_dir, job_name, device)
    except Interrupted:
        return EXIT_INTERRUPTED
    except StoppedOnSignal:  # someone signalled nnU-Net itself: it saved; resumed by the next run
        return EXIT_INTERRUPTED
    except Exception as error:  # recorded in the job's state; the run reports it
        print(f"[pu-nnunet study] {job_name} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
