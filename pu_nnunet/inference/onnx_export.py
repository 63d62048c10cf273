"""ONNX export of a trained model folder: one ``.onnx`` per fold plus what prediction needs.

nnU-Net has no ONNX export. Each fold's network is loaded the way ``nnUNetv2_predict`` loads it
(:func:`pu_nnunet.inference.model_folder.load_predictor`: the trainer named in the checkpoint
builds it, deep supervision off), exported with ``torch.onnx.export`` (torch.export based) and
checked against PyTorch with onnxruntime before anything is kept.

The PU layer becomes standard ONNX operators: its ``reference`` implementation (softplus or
max with the floor, Log, Clip, Conv, Exp) is exported instead of the fused autograd Function,
which computes the same values (tests/product_units) but is opaque to the exporter.

Batch and spatial sizes are dynamic. A spatial size must be a multiple of the network's total
stride along that axis (what nnU-Net's patch sizes are), because the decoder concatenates
upsampled maps with the encoder's: torch.export needs that rule spelt out, as ``divisor * k``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import pu_nnunet
from pu_nnunet import provenance
from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.inference.model_folder import DEFAULT_CHECKPOINT, inspect_model_folder, load_predictor
from pu_nnunet.json_files import json_text
from pu_nnunet.user_files import temporary_name

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
# onnxruntime's CPU kernels sum convolutions in another order than torch's: differences of a few
# 1e-6 on unit-scale logits were measured on the tiny test models; 1e-3 leaves room for deeper
# networks and larger logits while still catching a wrong operator (those differ by O(1))
LOGIT_ATOL = 1e-3
LOGIT_RTOL = 1e-3
# largest spatial size the exported graph accepts, in multiples of the axis's total stride
MAX_BLOCKS_PER_AXIS = 1024
# the check inputs: z-scored like nnU-Net's normalised images, a few batch sizes and shapes
CHECK_SEED = 0


class OnnxExportError(PredictionError):
    """A model folder that cannot be exported, or an export that does not match PyTorch."""


def _require_onnx_packages() -> None:
    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if _not_importable(name)]
    if missing:
        raise OnnxExportError(f"export-onnx needs {', '.join(missing)}: pip install \"pu-nnunet[onnx]\"")


def _not_importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return True
    return False


def total_strides(arch_kwargs: dict, ndim: int) -> list[int]:
    """Per spatial axis, the product of the encoder's strides: every size must be its multiple.
    A stage's stride is a list (one per axis, as nnU-Net's plans write it) or one number for all."""
    strides = arch_kwargs.get("strides")
    if not strides:
        raise OnnxExportError("the plans' architecture lists no strides")
    per_axis = [[int(s)] * ndim if np.ndim(s) == 0 else [int(v) for v in s] for s in strides]
    if any(len(stage) != ndim for stage in per_axis):
        raise OnnxExportError(f"the plans' strides {strides} do not have {ndim} axes like the patch size")
    return [math.prod(stage[axis] for stage in per_axis) for axis in range(ndim)]


def output_paths(output: Path, folds: tuple) -> dict[str, Path]:
    """``model.onnx`` for one fold; ``model.fold_0.onnx``, ``model.fold_1.onnx``, ... for several."""
    if len(folds) == 1:
        return {str(folds[0]): output}
    return {str(fold): output.with_name(f"{output.stem}.fold_{fold}.onnx") for fold in folds}


@dataclass
class ExportResult:
    onnx_files: dict[str, Path]
    metadata_file: Path
    max_abs_difference: float


def _use_reference_pu(network: torch.nn.Module) -> None:
    from pu_nnunet.product_units.layer import ProductUnitConv

    for module in network.modules():
        if isinstance(module, ProductUnitConv):
            module.implementation = "reference"


def _check_inputs(num_channels: int, patch_size: list[int], divisors: list[int]) -> list[torch.Tensor]:
    """Random z-scored inputs: the patch size at batch 1 and 2, and a larger non-square size."""
    generator = torch.Generator().manual_seed(CHECK_SEED)
    other = [size + divisor for size, divisor in zip(patch_size, divisors)]
    return [torch.randn(1, num_channels, *patch_size, generator=generator),
            torch.randn(2, num_channels, *patch_size, generator=generator),
            torch.randn(1, num_channels, *other, generator=generator) * 2.0]


def compare_with_torch(network: torch.nn.Module, onnx_file: Path, inputs: list[torch.Tensor]) -> float:
    """Runs both on every input; returns the largest absolute logit difference, or raises."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = network(x).float().numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise OnnxExportError(f"{onnx_file}: onnxruntime returns shape {got.shape} for input {tuple(x.shape)}, "
                                  f"PyTorch {expected.shape}")
        difference = float(np.max(np.abs(got - expected)))
        worst = max(worst, difference)
        if not np.allclose(got, expected, atol=LOGIT_ATOL, rtol=LOGIT_RTOL):
            raise OnnxExportError(f"{onnx_file}: onnxruntime's logits differ from PyTorch's by up to {difference:.3g} "
                                  f"(input {tuple(x.shape)}; tolerance {LOGIT_ATOL} + {LOGIT_RTOL} x |logit|)")
    return worst


def _export_network(network: torch.nn.Module, example: torch.Tensor, divisors: list[int], path: Path) -> None:
    from torch.export import Dim

    spatial = {axis + 2: divisor * Dim(f"blocks_{axis}", min=1, max=MAX_BLOCKS_PER_AXIS)
               for axis, divisor in enumerate(divisors)}
    dynamic = {0: Dim("batch", min=1, max=1024), **spatial}
    torch.onnx.export(network, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_shapes={"x": dynamic}, dynamo=True, external_data=False, verbose=False)


def _prediction_metadata(model, predictor, divisors: list[int], files: dict[str, Path], worst: float,
                         written: dict[str, Path]) -> dict:
    """Everything a runtime without nnU-Net needs to predict as nnU-Net does."""
    configuration = predictor.configuration_manager
    plans = predictor.plans_manager
    return {
        "format": "pu-nnunet onnx export 1",
        "files": {fold: path.name for fold, path in files.items()},
        # predict --backend onnxruntime checks each file against these: a file replaced or
        # re-exported without its JSON is refused, not run under this JSON's model record
        "sha256": {fold: provenance.sha256_file(written[fold]) for fold in files},
        "input": {"name": INPUT_NAME, "layout": "batch, channel, spatial axes in nnU-Net's transposed order",
                  "channel_names": model.channel_names, "dtype": "float32",
                  "spatial_size_multiple_of": divisors},
        "output": {"name": OUTPUT_NAME, "what": "logits, one channel per segmentation head (argmax -> label)",
                   "num_segmentation_heads": predictor.label_manager.num_segmentation_heads},
        "labels": model.dataset_json.get("labels"),
        "configuration": (provenance.split_model_folder_name(model.path.name) or (None, None, None))[2],
        "patch_size": list(configuration.patch_size),
        "spacing": list(configuration.spacing),
        "normalization_schemes": list(configuration.normalization_schemes),
        "use_mask_for_norm": list(configuration.use_mask_for_norm),
        "foreground_intensity_properties_per_channel": plans.foreground_intensity_properties_per_channel,
        "transpose_forward": list(plans.transpose_forward),
        "transpose_backward": list(plans.transpose_backward),
        "sliding_window": {"tile_step_size": predictor.tile_step_size, "gaussian_weighting": predictor.use_gaussian,
                           "mirror_axes": list(predictor.allowed_mirroring_axes or [])},
        "check": {"max_abs_logit_difference": worst, "atol": LOGIT_ATOL, "rtol": LOGIT_RTOL,
                  "runtime": "onnxruntime CPUExecutionProvider"},
        "model": provenance.model_record(model.path, model.folds, model.checkpoint),
        "pu_nnunet": pu_nnunet.__version__,
        "libraries": provenance.library_versions(("torch", "onnx", "onnxscript", "onnxruntime", "nnunetv2")),
    }


def export_onnx(model_dir: str | Path, output: str | Path, folds: list | None = None,
                checkpoint: str = DEFAULT_CHECKPOINT, overwrite: bool = False) -> ExportResult:
    """Writes each fold's network as ONNX and ``<output stem>.json``; returns what was written."""
    _require_onnx_packages()
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise OnnxExportError(f"{output}: the output file must end in .onnx")
    if not output.parent.is_dir():
        raise OnnxExportError(f"{output.parent}: the output folder does not exist")
    model = inspect_model_folder(model_dir, folds, checkpoint)
    files = output_paths(output, model.folds)
    metadata_file = output.with_suffix(".json")
    for path in (*files.values(), metadata_file):
        if path.exists() and not overwrite:
            raise OnnxExportError(f"{path} already exists; pass --overwrite to replace it")
        if path.exists() and not path.is_file():
            raise OnnxExportError(f"{path} exists and is not a file")

    predictor = load_predictor(model, torch.device("cpu"), use_mirroring=True)
    network = predictor.network
    network.eval()
    _use_reference_pu(network)
    patch_size = list(predictor.configuration_manager.patch_size)
    divisors = total_strides(predictor.configuration_manager.network_arch_init_kwargs, len(patch_size))
    num_channels = len(model.channel_names)
    inputs = _check_inputs(num_channels, patch_size, divisors)

    written: list[tuple[Path, Path]] = []
    worst = 0.0
    try:
        for parameters, (fold, final_path) in zip(predictor.list_of_parameters, files.items()):
            network.load_state_dict(parameters)
            work_path = temporary_name(final_path)
            written.append((work_path, final_path))
            _export_network(network, inputs[0], divisors, work_path)
            worst = max(worst, compare_with_torch(network, work_path, inputs))
        metadata = _prediction_metadata(model, predictor, divisors, files, worst,
                                        {fold: work for (work, _), fold in zip(written, files)})
        work_metadata = temporary_name(metadata_file)
        written.append((work_metadata, metadata_file))
        # renamed with the .onnx files below: the writer's own rename would place it before them
        work_metadata.write_text(json_text(metadata), encoding="utf-8")
        for work_path, final_path in written:
            os.replace(work_path, final_path)
    finally:
        for work_path, _ in written:
            work_path.unlink(missing_ok=True)
    return ExportResult(files, metadata_file, worst)
