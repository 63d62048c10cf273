"""CPU threads that do not waste a shared machine's cores.

PyTorch's CPU kernels run on OpenMP (GNU libgomp in the PyPI wheels). By default a libgomp
thread that reaches the end of a parallel region spins while waiting for the others. On a quiet
machine that saves a wake-up; on a machine where other jobs hold some of the cores the spinning
thread burns the time slice its partner needs, so every step costs several times the CPU and the
wall time grows far beyond the share of cores lost (benchmarks/bench_busy_machine.py measures it;
figures in benchmarks/RESULTS.md). ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep.

libgomp reads the variable once, when it starts, so it must be in the environment before torch is
imported: :func:`use_passive_waits` does that for the ``pu-nnunet`` process itself (called before
any subcommand imports torch) and :func:`passive_wait_environment` for the processes it starts
(``nnUNetv2_train`` and the study's jobs). A value the user set is kept.
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"


def passive_wait_environment(env: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """``env`` with OMP_WAIT_POLICY=PASSIVE unless it already names a policy."""
    env.setdefault(WAIT_POLICY_VARIABLE, PASSIVE)
    return env


def use_passive_waits() -> bool:
    """Sets OMP_WAIT_POLICY=PASSIVE for this process if torch is not imported yet and the user
    named no policy; True when this process's OpenMP will use it."""
    if "torch" in sys.modules:
        return os.environ.get(WAIT_POLICY_VARIABLE, "").upper() == PASSIVE
    passive_wait_environment(os.environ)
    return os.environ[WAIT_POLICY_VARIABLE].upper() == PASSIVE
