"""Patches per forward pass on a CPU, chosen by timing the prediction's own batches.

On a GPU a large batch keeps the device busy; on a CPU the best batch is small and depends on
the processor, the network and the patch size (measured on a 2-core EPYC with the benchmark's
2d network: 83 ms per patch at batch 1, 73 ms at 2, 87 ms at 16; a batch of 43 was slower than
nnU-Net's one patch at a time). So on a CPU the sliding window tries each candidate size on the
tiles it has to predict anyway and keeps the fastest per patch: no work is thrown away, batch 1
is always a candidate, so the choice is never slower than one patch at a time beyond the noise
of the measurement, and the few tiles predicted at the losing sizes are the whole cost.
"""

from __future__ import annotations

from typing import Sequence

# batch sizes tried on a CPU, capped by the memory budget of the sliding window
CPU_CANDIDATES = (1, 2, 4, 8)
# each size is first called once untimed: the first call with a new input shape makes oneDNN
# (or onnxruntime) choose and prepare its kernels, which costs more than the call itself
UNTIMED_CALLS = 1
# then timed this many times; the fastest call counts (noise on a shared machine only slows)
TIMED_CALLS = 2


class BatchSizeTuner:
    """Hands out batch sizes to try until each candidate has been timed, then the fastest.

    ``record`` is told how long each forward call took; a call with fewer patches than its
    batch size (the last chunk of a volume) is not counted, since its time per patch is not the
    batch's."""

    def __init__(self, candidates: Sequence[int]):
        if not candidates or any(int(size) < 1 for size in candidates):
            raise ValueError(f"batch size candidates must be positive integers, got {list(candidates)}")
        self.candidates = sorted({int(size) for size in candidates})
        self._calls = dict.fromkeys(self.candidates, 0)
        self._seconds_per_patch: dict[int, list[float]] = {size: [] for size in self.candidates}
        self.chosen: int | None = self.candidates[0] if len(self.candidates) == 1 else None

    def next_size(self) -> int:
        if self.chosen is not None:
            return self.chosen
        return next(size for size in self.candidates if self._calls[size] < UNTIMED_CALLS + TIMED_CALLS)

    def record(self, size: int, patches: int, seconds: float) -> None:
        if self.chosen is not None or size not in self._calls or patches < size:
            return
        self._calls[size] += 1
        if self._calls[size] > UNTIMED_CALLS:
            self._seconds_per_patch[size].append(seconds / patches)
        if all(calls >= UNTIMED_CALLS + TIMED_CALLS for calls in self._calls.values()):
            self.chosen = min(self.candidates, key=lambda candidate: min(self._seconds_per_patch[candidate]))

    def cap(self, patches: int) -> None:
        """A volume of fewer patches than a candidate can never time it (a partial batch does not
        count): such candidates are dropped while tuning."""
        if self.chosen is None and patches < self.candidates[-1]:
            kept = [size for size in self.candidates if size <= patches] or [1]
            timed = self._seconds_per_patch
            self.__init__(kept)
            for size in kept:
                self._seconds_per_patch[size] = timed[size]
                self._calls[size] = len(timed[size]) + (UNTIMED_CALLS if timed[size] else 0)

    def measurements(self) -> dict[int, float]:
        """Fastest seconds per patch of each size timed so far (for logs and the benchmark)."""
        return {size: min(times) for size, times in self._seconds_per_patch.items() if times}
