"""``python -m pu_nnunet.study.job STUDY_DIR JOB DEVICE``: one job in its own process.

The local executor starts each job this way (in its own process group, so that stopping a job
stops its nnU-Net commands too). SIGTERM and SIGINT become :class:`Interrupted`: the running
nnU-Net command is stopped and the job is recorded as interrupted, to be resumed by the next
``study run``. Exit status: 0 done, 1 failed, 143 interrupted.
"""

from __future__ import annotations

import os
import signal
import sys

from pu_nnunet.study.steps import Interrupted, run_job

EXIT_INTERRUPTED = 143
# the prefix of the job's progress lines ("pu-nnunet demo" when the demo runs it)
LOG_PREFIX_VARIABLE = "PU_NNUNET_LOG_PREFIX"


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def run_job_with_progress(study_dir: str, job_name: str, device: str) -> dict:
    """run_job with its progress lines on stdout (a SLURM job's output file)."""
    from pu_nnunet.study.cli_study import configure_logging

    configure_logging(os.environ.get(LOG_PREFIX_VARIABLE, "pu-nnunet study"))
    return run_job(study_dir, job_name, device)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m pu_nnunet.study.job STUDY_DIR JOB DEVICE", file=sys.stderr)
        return 2
    study_dir, job_name, device = argv
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        run_job_with_progress(study_dir, job_name, device)
    except Interrupted:
        return EXIT_INTERRUPTED
    except Exception as error:  # recorded in the job's state; the run reports it
        print(f"[pu-nnunet study] {job_name} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
