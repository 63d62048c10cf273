"""Reading the next case and writing the previous one while the current one is predicted.

``nnUNetv2_predict`` overlaps the three with worker processes (``-npp``, ``-nps``), which cost
seconds to start. Here two threads do it: one reads and preprocesses one case ahead, one exports
the last prediction. Both spend their time in NumPy, SciPy, SimpleITK and torch kernels, which
release the GIL, so the network keeps the main thread. At most one case is read ahead and one
export is in flight, so memory holds three cases at most.

Errors keep the single-threaded behaviour: cases fail in order, a case's segmentation is
complete or absent (the export renames it into place), and on any error, Ctrl-C included, the
read ahead is dropped and an export under way is finished before the error is raised.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

# the steps of a case; busy seconds of each are summed over the cases (reading and exporting
# run beside the sliding window, so the sum is more than the run's wall time)
STEPS = ("read + preprocess", "sliding window", "export")


@dataclass
class PipelineSeconds:
    busy: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    # the main thread's wait for a case still being read or a segmentation still being written:
    # the part of reading and exporting that the overlap did not hide
    waiting: float = 0.0
    per_case: list[float] = field(default_factory=list)  # busy seconds of each case's three steps
    wall: float = 0.0


def run_pipelined(cases: Sequence, read: Callable[[Any], tuple], predict_logits: Callable[[Any], Any],
                  export: Callable[[Any, Any, Any], Any], before_first_export: Callable[[], None],
                  on_written: Callable[[int, Any, float], None]) -> PipelineSeconds:
    """For each case: ``read(case) -> (volume, properties)``, ``predict_logits(volume) -> logits``,
    ``export(case, logits, properties)``; ``on_written(index, case, seconds)`` after each export
    (index from 1), ``before_first_export()`` once, before the first."""
    seconds = PipelineSeconds()
    seconds.per_case = [0.0] * len(cases)
    started = time.perf_counter()

    def timed(step: str, index: int, function: Callable, *args):
        began = time.perf_counter()
        try:
            return function(*args)
        finally:
            spent = time.perf_counter() - began
            seconds.busy[step] += spent
            seconds.per_case[index - 1] += spent

    def wait_for(future: Future):
        began = time.perf_counter()
        try:
            return future.result()
        finally:
            seconds.waiting += time.perf_counter() - began

    def finish_export(index: int, case, future: Future) -> None:
        wait_for(future)
        on_written(index, case, seconds.per_case[index - 1])

    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pu_nnunet_read")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pu_nnunet_export")
    pending = None  # (index, case, future) of the export in flight
    try:
        next_read = reader.submit(timed, STEPS[0], 1, read, cases[0]) if cases else None
        for index, case in enumerate(cases, start=1):
            volume, properties = wait_for(next_read)
            next_read = (reader.submit(timed, STEPS[0], index + 1, read, cases[index]) if index < len(cases)
                         else None)
            logits = timed(STEPS[1], index, predict_logits, volume)
            del volume
            if pending is not None:
                finished, pending = pending, None
                finish_export(*finished)
            else:
                before_first_export()
            pending = (index, case, writer.submit(timed, STEPS[2], index, export, case, logits, properties))
            del logits  # the writer holds it until written
        if pending is not None:
            finished, pending = pending, None
            finish_export(*finished)
    except BaseException:
        # the export under way still completes and its case is reported, as it would have been
        # before the failing step in a single-threaded loop; the first error is the one raised
        reader.shutdown(wait=False, cancel_futures=True)
        if pending is not None:
            try:
                finish_export(*pending)
            except Exception:  # noqa: BLE001 - a second error after the first; the first is raised
                pass
        raise
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)
        seconds.wall = time.perf_counter() - started
    return seconds
