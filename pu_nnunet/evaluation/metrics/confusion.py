"""Per-case label confusion matrices from two label maps, with numpy or torch (CPU or CUDA).

Every metric of a case (TP/FP/FN of each label, of the foreground union, volumes) follows from
one matrix ``C[i, j]`` = number of voxels with prediction ``values[i]`` and reference
``values[j]``. The matrix comes from a single bincount over ``pred * n + ref``: one pass over an
AMOS-sized volume, where nnU-Net's evaluator builds and combines boolean masks once per label.
Integer counts are exact on every backend, so numpy, torch-on-CPU and CUDA agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from pu_nnunet.devices import CPU, check_device_name, resolve_device
from pu_nnunet.evaluation.errors import EvaluationError

# Label values up to this bound index the bincount directly: (255 + 1)^2 = 65 536 bins, small
# next to a volume. Larger values (uint16 masks) are first mapped to 0..k-1 with np.unique.
MAX_DIRECT_LABEL_VALUE = 255

# Voxels processed per block on the CPU: the temporaries (a few MiB) stay in cache and are
# reused; volume-sized temporaries cost more in page faults than the counting itself
# (measured 0.10 s vs 0.17-0.78 s for a 512x512x150 volume).
CHUNK_VOXELS = 1 << 20

# Accepted by evaluate_folders beside the package's device names (pu_nnunet.devices): runs the
# GPU code path on the CPU, so that path is tested on machines without a GPU.
TORCH_ON_CPU = "torch-cpu"


@dataclass(frozen=True)
class LabelConfusion:
    """``matrix[i, j]`` voxels with prediction ``values[i]`` and reference ``values[j]``."""

    values: np.ndarray  # sorted label values, int64
    matrix: np.ndarray  # (len(values), len(values)) int64

    def _index(self, labels: Iterable[int]) -> np.ndarray:
        wanted = np.asarray(list(labels), dtype=np.int64)
        return np.flatnonzero(np.isin(self.values, wanted))

    def without_reference(self, ignore_label: int | None) -> "LabelConfusion":
        """Drops voxels whose reference is ``ignore_label`` (nnU-Net's ignore mask)."""
        if ignore_label is None:
            return self
        matrix = self.matrix.copy()
        matrix[:, self._index([ignore_label])] = 0
        return LabelConfusion(self.values, matrix)

    def counts(self, labels: Iterable[int]) -> dict[str, int]:
        """TP/FP/FN/n_pred/n_ref of the union of ``labels`` treated as one label."""
        inside = self._index(labels)
        pred_in = self.matrix[inside, :].sum()
        ref_in = self.matrix[:, inside].sum()
        tp = self.matrix[np.ix_(inside, inside)].sum()
        return {
            "tp": int(tp),
            "fp": int(pred_in - tp),
            "fn": int(ref_in - tp),
            "n_pred": int(pred_in),
            "n_ref": int(ref_in),
        }

    def prediction_labels(self) -> set[int]:
        """Label values that occur in the prediction."""
        return {int(v) for v in self.values[self.matrix.sum(axis=1) > 0]}

    def reference_labels(self) -> set[int]:
        """Label values that occur in the reference."""
        return {int(v) for v in self.values[self.matrix.sum(axis=0) > 0]}

    def present_labels(self) -> set[int]:
        """Label values that occur in the prediction or the reference."""
        used = (self.matrix.sum(axis=0) + self.matrix.sum(axis=1)) > 0
        return {int(v) for v in self.values[used]}


def counting_device(device: str) -> str:
    """Where label counts run: 'cpu' (numpy), 'torch-cpu', or a CUDA device ('cuda', 'cuda:1').

    Every name but 'torch-cpu' follows the package's one device rule (auto, cpu, cuda, cuda:N).
    """
    if device == TORCH_ON_CPU or check_device_name(device) == CPU:
        return device  # numpy or torch on the CPU: nothing to check, and no torch import for numpy
    return str(resolve_device(device))


def as_label_map(array: np.ndarray, source: str) -> np.ndarray:
    """Reader output (float) -> the smallest unsigned integer array; non-labels are an error.

    nnU-Net's readers return float32/float64 arrays; counting on uint8 is 4-8x less memory
    traffic, and a value like 0.5 or -1 means the file is not a label map. Converted block by
    block so that no volume-sized temporary is allocated.
    """
    if array.dtype == np.uint8:
        return array
    low, high = (array.min(), array.max()) if array.size else (0, 0)
    if low < 0:
        raise EvaluationError(f"{source}: negative label value {low}")
    dtype = np.uint8 if high <= np.iinfo(np.uint8).max else np.uint16 if high <= np.iinfo(np.uint16).max else np.int64
    labels = np.empty(array.shape, dtype)
    source_flat, labels_flat = array.reshape(-1), labels.reshape(-1)
    exact = np.issubdtype(array.dtype, np.integer)
    for start in range(0, source_flat.size, CHUNK_VOXELS):
        block = slice(start, start + CHUNK_VOXELS)
        labels_flat[block] = source_flat[block]
        if not exact and not np.array_equal(labels_flat[block], source_flat[block]):
            raise EvaluationError(f"{source}: non-integer label values (not a segmentation?)")
    return labels


def _compact(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maps label values to 0..k-1 so the bincount stays small; returns (values, pred, ref)."""
    top = max(int(pred.max(initial=0)), int(ref.max(initial=0)))
    if top <= MAX_DIRECT_LABEL_VALUE:
        return np.arange(top + 1, dtype=np.int64), pred, ref
    values = np.union1d(np.unique(pred), np.unique(ref)).astype(np.int64)
    return values, np.searchsorted(values, pred), np.searchsorted(values, ref)


def _bincount_numpy(pred: np.ndarray, ref: np.ndarray, n: int) -> np.ndarray:
    pred_flat, ref_flat = pred.reshape(-1), ref.reshape(-1)
    # uint16 holds pred * n + ref for n <= 256 (a quarter of int64's memory traffic)
    index_dtype = np.uint16 if n <= MAX_DIRECT_LABEL_VALUE + 1 else np.int64
    index = np.empty(min(CHUNK_VOXELS, pred_flat.size), index_dtype)
    counts = np.zeros(n * n, np.int64)
    for start in range(0, pred_flat.size, CHUNK_VOXELS):
        block = slice(start, start + CHUNK_VOXELS)
        part = index[: len(pred_flat[block])]
        np.multiply(pred_flat[block], n, out=part, dtype=index_dtype, casting="unsafe")
        # unsafe casting is exact: every value is below n * n, which fits index_dtype
        np.add(part, ref_flat[block], out=part, casting="unsafe")
        counts += np.bincount(part, minlength=n * n)
    return counts


def _bincount_torch(pred: np.ndarray, ref: np.ndarray, n: int, device: str) -> np.ndarray:
    import torch

    target = torch.device("cpu" if device == TORCH_ON_CPU else device)
    def to_device(array: np.ndarray):
        # uint8 crosses to the GPU as is (8x less transfer than int64); int64 arithmetic there
        kept = array if array.dtype == np.uint8 else array.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(kept)).to(target).reshape(-1)

    flat = to_device(pred).long() * n + to_device(ref)
    return torch.bincount(flat, minlength=n * n).cpu().numpy()


def label_confusion(pred: np.ndarray, ref: np.ndarray, device: str = "cpu") -> LabelConfusion:
    """Confusion matrix of two integer label maps of equal shape.

    ``device``: 'cpu' (numpy), 'torch-cpu', 'cuda' or 'cuda:N' (torch). Resolve 'auto' first
    with :func:`counting_device`.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref must have the same shape: pred {pred.shape}, ref {ref.shape}")
    values, pred_idx, ref_idx = _compact(pred, ref)
    n = len(values)
    if device == "cpu":
        flat_counts = _bincount_numpy(pred_idx, ref_idx, n)
    else:
        flat_counts = _bincount_torch(pred_idx, ref_idx, n, device)
    return LabelConfusion(values, flat_counts.reshape(n, n).astype(np.int64))
