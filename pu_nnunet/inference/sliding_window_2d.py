"""Sliding-window prediction of a 2d model over a 3D volume, many patches per forward pass.

nnU-Net runs a 2d model over a volume one patch of one slice at a time (batch 1), which leaves
a GPU nearly idle and costs a Python round trip per patch on a CPU. Here the patches of many
slices go through the network together. Everything else is nnU-Net's own, so the logits agree
with ``nnUNetPredictor.predict_logits_from_preprocessed_data``: the padding (``pad_nd_image``),
the tiling (``_internal_get_sliding_window_slicers``), the Gaussian importance map
(``compute_gaussian``), the mirroring TTA (``_internal_maybe_mirror_and_predict``, which takes a
batch as it is), the fp16 accumulation buffers and their order, the fold averaging, the thread
cap on the CPU and fp16 autocast on CUDA.
"""

from __future__ import annotations

import logging
import numbers
import time

import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.configuration import default_num_processes
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.utilities.helpers import empty_cache
from torch._dynamo import OptimizedModule

from pu_nnunet.inference.batch_tuning import CPU_CANDIDATES, BatchSizeTuner
from pu_nnunet.inference.precision import autocast_context

# the batch-halving retry after a CUDA out-of-memory error is reported here (a library user
# silences or redirects it with the logging module)
logger = logging.getLogger(__name__)

# nnU-Net's Gaussian importance map (predict_from_raw_data.py): sigma = patch size / 8, peak 10
GAUSSIAN_SIGMA_SCALE = 1.0 / 8
GAUSSIAN_VALUE_SCALING = 10
# nnU-Net sums the weighted tile predictions in fp16 buffers; doing the same keeps voxels where
# two classes nearly tie on the side nnU-Net puts them
ACCUMULATION_DTYPE = torch.half

# Default batch size: patches whose feature maps fit this budget. The per-patch size is the
# sum of all conv feature maps (``compute_conv_feature_map_size``, what nnU-Net's planner
# counts): an upper bound, since inference frees most of them as it goes.
CPU_MEMORY_BUDGET_BYTES = 1 << 30
# on a GPU, this share of the memory free when prediction starts
GPU_FREE_MEMORY_SHARE = 0.25
# past this many patches a forward pass is no faster per patch, even on a large GPU
MAX_DEFAULT_BATCH = 256
# for networks that cannot report their feature map size
FALLBACK_BATCH = 32
# bytes per activation: fp16 under CUDA autocast, fp32 on the CPU
BYTES_PER_ELEMENT = {"cuda": 2, "cpu": 4}


def default_batch_size(network: torch.nn.Module, patch_size, device: torch.device) -> int:
    """Patches per forward pass that fit the memory budget of ``device``."""
    try:
        elements = int(network.compute_conv_feature_map_size(tuple(patch_size)))
    except (AttributeError, AssertionError, TypeError):
        return FALLBACK_BATCH
    per_patch = max(1, elements * BYTES_PER_ELEMENT.get(device.type, 4))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free * GPU_FREE_MEMORY_SHARE
    else:
        budget = CPU_MEMORY_BUDGET_BYTES
    return int(max(1, min(MAX_DEFAULT_BATCH, budget // per_patch)))


class BatchedSlicePredictor:
    """Predicts a preprocessed volume with a 2d model held by an initialised ``nnUNetPredictor``.

    ``batch_size`` patches (slices x tiles) go through the network per forward pass (each
    mirrored copy is one more pass of the same batch). None: on a GPU as many as fit a memory
    budget; on a CPU the fastest of :data:`~pu_nnunet.inference.batch_tuning.CPU_CANDIDATES`
    (within that budget), timed on the first tiles predicted
    (:class:`~pu_nnunet.inference.batch_tuning.BatchSizeTuner`). On a CUDA out-of-memory error
    the batch is halved and the volume predicted again. ``precision``
    is one of :data:`pu_nnunet.inference.precision.PRECISIONS` (``auto``: nnU-Net's fp16 autocast
    on CUDA, float32 on the CPU).
    """

    def __init__(self, predictor, batch_size: int | None = None, precision: str = "auto"):
        manager = predictor.configuration_manager
        if len(manager.patch_size) != 2:
            raise ValueError(f"predictor must hold a 2d configuration, got patch size {list(manager.patch_size)}")
        self.predictor = predictor
        self.patch_size = tuple(manager.patch_size)
        self.tuner = None
        if batch_size is None:
            batch_size = default_batch_size(self._plain_network(), self.patch_size, predictor.device)
            if predictor.device.type == "cpu":
                self.tuner = BatchSizeTuner([size for size in CPU_CANDIDATES if size <= batch_size] or [1])
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be an int or None, got {type(batch_size).__name__} {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._batch_size = int(batch_size)
        self.precision = precision

    @property
    def batch_size(self) -> int:
        """Patches per forward pass: fixed, or the tuner's choice (its current trial until chosen)."""
        return self._batch_size if self.tuner is None else self.tuner.next_size()

    @batch_size.setter
    def batch_size(self, size: int) -> None:
        self._batch_size, self.tuner = size, None

    def describe_batch_size(self) -> str:
        if self.tuner is None:
            return f"{self._batch_size} patches per forward pass"
        if self.tuner.chosen is not None:
            return f"{self.tuner.chosen} patches per forward pass (fastest of {self.tuner.candidates}, timed)"
        return f"patches per forward pass: the fastest of {self.tuner.candidates}, timed on the first tiles"

    def _plain_network(self) -> torch.nn.Module:
        network = self.predictor.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    @torch.inference_mode()
    def predict_logits(self, data: torch.Tensor) -> torch.Tensor:
        """(C, Z, Y, X) preprocessed volume -> (classes, Z, Y, X) logits on the CPU, averaged over
        the folds; the contract of nnUNetPredictor.predict_logits_from_preprocessed_data."""
        while True:
            try:
                return self._predict_all_folds(data)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                empty_cache(self.predictor.device)
                self.batch_size //= 2
                logger.warning("out of GPU memory: retrying with %d patches per forward pass", self.batch_size)

    def _predict_all_folds(self, data: torch.Tensor) -> torch.Tensor:
        predictor = self.predictor
        threads = torch.get_num_threads()
        # nnU-Net caps torch's threads at nnUNet_def_n_proc while predicting; same here, so that
        # the two are compared on the same threads
        torch.set_num_threads(min(default_num_processes, threads))
        try:
            predictor.network = predictor.network.to(predictor.device)
            predictor.network.eval()
            prediction = None
            for parameters in predictor.list_of_parameters:
                self._plain_network().load_state_dict(parameters)
                fold_logits = self._predict_one_fold(data).to("cpu")
                if prediction is None:
                    prediction = fold_logits
                else:
                    prediction += fold_logits
            if len(predictor.list_of_parameters) > 1:
                prediction /= len(predictor.list_of_parameters)
            return prediction
        finally:
            torch.set_num_threads(threads)

    def _predict_one_fold(self, data: torch.Tensor) -> torch.Tensor:
        device = self.predictor.device
        with autocast_context(self.precision, device):
            padded, revert_padding = pad_nd_image(data, self.patch_size, "constant", {"value": 0}, True, None)
            slicers = self.predictor._internal_get_sliding_window_slicers(padded.shape[1:])
            logits = self._accumulate_tiles(padded, slicers)
            return logits[(slice(None), *revert_padding[1:])]

    def _accumulate_tiles(self, padded: torch.Tensor, slicers: list) -> torch.Tensor:
        predictor = self.predictor
        device = predictor.device
        empty_cache(device)
        volume = padded.to(device)
        num_classes = predictor.label_manager.num_segmentation_heads
        logits = torch.zeros((num_classes, *volume.shape[1:]), dtype=ACCUMULATION_DTYPE, device=device)
        weights = torch.zeros(volume.shape[1:], dtype=ACCUMULATION_DTYPE, device=device)
        if predictor.use_gaussian:
            gaussian = compute_gaussian(self.patch_size, sigma_scale=GAUSSIAN_SIGMA_SCALE,
                                        value_scaling_factor=GAUSSIAN_VALUE_SCALING, device=device)
        else:
            gaussian = 1
        if self.tuner is not None:
            self.tuner.cap(len(slicers))
        start = 0
        while start < len(slicers):
            size = self.batch_size
            chunk = slicers[start:start + size]
            start += len(chunk)
            # each slicer is (all channels, slice index, rows, columns): one 2d patch
            batch = torch.stack([volume[slicer] for slicer in chunk])
            started = time.perf_counter()
            batch_prediction = predictor._internal_maybe_mirror_and_predict(batch)
            if self.tuner is not None:  # CPU only: the time is the computation's, no device to wait for
                self.tuner.record(size, len(chunk), time.perf_counter() - started)
            # added one tile at a time, in nnU-Net's order: fp16 sums depend on the order
            for slicer, tile_prediction in zip(chunk, batch_prediction):
                logits[slicer] += tile_prediction * gaussian
                weights[slicer[1:]] += gaussian
        torch.div(logits, weights, out=logits)
        if torch.any(torch.isinf(logits)):
            raise RuntimeError("inf in the predicted logits (fp16 overflow in the tile accumulation)")
        return logits
