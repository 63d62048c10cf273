"""The study's progress lines: the ``pu_nnunet.study`` logger on stdout with a prefix.

Its own module so that the job process (pu_nnunet.study.execution.worker) and the command line
(cli_study) share it without importing each other.
"""

from __future__ import annotations

import logging
import sys

# the prefix of a job process's progress lines ("pu-nnunet demo" when the demo runs it)
LOG_PREFIX_VARIABLE = "PU_NNUNET_LOG_PREFIX"


def configure_logging(prefix: str) -> None:
    """The command line shows the study's progress; a library user configures logging instead."""
    logger = logging.getLogger("pu_nnunet.study")
    if not any(getattr(h, "_pu_nnunet", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(f"[{prefix}] %(message)s"))
        handler._pu_nnunet = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
