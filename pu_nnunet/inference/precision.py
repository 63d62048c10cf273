"""Opt-in ways to do less work in prediction: lower precision and a subset of the mirroring TTA.

Both change the segmentation slightly; ``benchmarks/bench_predict.py`` reports each mode's
speed and its agreement with the full-precision, full-TTA segmentation.

Precision: ``auto`` is nnU-Net's own choice (fp16 autocast on CUDA, float32 on the CPU).
``bf16`` runs the convolutions under bfloat16 autocast: on the CPU only where oneDNN has bf16
kernels (AVX512-BF16 or AMX; elsewhere bf16 is emulated and slower than float32, so it is
refused), on CUDA where the GPU supports it. ``fp32`` switches autocast off on CUDA. The PU
layer keeps its float32 log/exp math under every autocast (it disables autocast inside).
"""

from __future__ import annotations

import contextlib

import torch

from pu_nnunet.inference.errors import PredictionError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_bf16_kernels() -> bool:
    """oneDNN's own test for native bf16 (AVX512-BF16 / AMX) on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str, device: torch.device, is_2d: bool) -> None:
    """Refuses a precision the device cannot run fast, or the 3d path cannot honour."""
    if precision not in PRECISIONS:
        raise PredictionError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cpu":
        if precision == "fp16":
            raise PredictionError("--precision fp16 is for CUDA; on the CPU use fp32 (default) or bf16")
        if precision == "bf16" and not cpu_has_bf16_kernels():
            raise PredictionError("--precision bf16: this CPU has no native bf16 kernels (AVX512-BF16 or AMX), "
                                  "so bf16 would be emulated and slower than float32; use the default")
    elif device.type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise PredictionError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bf16")
        if not is_2d and precision not in ("auto", "fp16"):
            # nnU-Net's 3d sliding window opens its own fp16 autocast on CUDA, which an outer one cannot undo
            raise PredictionError(f"--precision {precision}: 3d models run nnU-Net's own sliding window, which "
                                  "uses fp16 autocast on CUDA; use auto (fp16)")


def autocast_context(precision: str, device: torch.device):
    """The autocast a forward pass runs under (a no-op context for float32)."""
    if device.type == "cuda" and precision in ("auto", "fp16"):
        return torch.autocast("cuda", dtype=torch.float16)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def restrict_mirror_axes(predictor, axes: list[int] | None) -> tuple[int, ...] | None:
    """Mirrors the TTA along ``axes`` only (a subset of the model's mirroring axes; [] = no TTA).

    nnU-Net's ``_internal_maybe_mirror_and_predict`` averages 2**k passes for k axes, so each axis
    left out halves the work. Returns the axes in use."""
    allowed = tuple(predictor.allowed_mirroring_axes or ())
    if axes is None:
        return allowed if predictor.use_mirroring else ()
    wrong = sorted(set(axes) - set(allowed))
    if wrong:
        raise PredictionError(f"--tta-axes {' '.join(map(str, axes))}: the model mirrors along axes "
                              f"{list(allowed)} only (axes count the spatial axes of the patch from 0); "
                              f"{wrong} is not among them")
    predictor.allowed_mirroring_axes = tuple(sorted(set(axes)))
    predictor.use_mirroring = bool(axes)
    return predictor.allowed_mirroring_axes
