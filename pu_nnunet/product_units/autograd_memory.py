"""What autograd keeps for backward, in bytes: the activation memory a layer costs in training.

A device-independent measure (CPU has no max_memory_allocated): every tensor saved for
backward passes through ``saved_tensors_hooks``; the meter records the storage behind it once,
however many ops save it, and leaves out given tensors (the parameters, which exist anyway).
"""

from __future__ import annotations

from typing import Iterable

import torch


def _storage_key(t: torch.Tensor) -> tuple:
    return t.device.type, t.device.index, t.untyped_storage().data_ptr()


class SavedTensorMeter:
    """Context manager counting the distinct storages saved for backward inside it.

    Example::

        with SavedTensorMeter(exclude=model.parameters()) as meter:
            y = model(x)
        activation_bytes = meter.saved_bytes + meter.extra_bytes(y)  # + the output, if not saved
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._excluded = {_storage_key(t) for t in exclude}
        self._bytes_by_storage: dict = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in self._excluded:
            self._bytes_by_storage[key] = t.untyped_storage().nbytes()
        return t

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    @property
    def saved_bytes(self) -> int:
        return sum(self._bytes_by_storage.values())

    @property
    def saved_tensors(self) -> int:
        return len(self._bytes_by_storage)

    def extra_bytes(self, *tensors: torch.Tensor) -> int:
        """Bytes of ``tensors`` not already counted as saved (e.g. an output that backward keeps too)."""
        seen, total = set(self._bytes_by_storage), 0
        for t in tensors:
            key = _storage_key(t)
            if key not in seen and key not in self._excluded:
                seen.add(key)
                total += t.untyped_storage().nbytes()
        return total
