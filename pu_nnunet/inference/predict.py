"""``pu-nnunet predict``: segment NIfTI volumes or DICOM series with a trained nnU-Net model.

Each case goes the way ``nnUNetv2_predict`` takes it, through nnU-Net's own code: the model's
reader (plans ``image_reader_writer``), the preprocessor class named in the plans
(``run_case_npy``: transpose, crop, normalise, resample), then the logits, then
``export_prediction_from_logits`` (resampling back, uncropping, writing with the input's
geometry). Only the logits of 2d models are computed differently: many slices per forward pass
(:mod:`pu_nnunet.inference.sliding_window_2d`). 3d models use nnU-Net's predictor unchanged.
Cases run one after the other in this process: no worker processes to start.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.inference.inputs import OUTPUT_ENDING, InputCase, check_channels, find_input_cases, materialise_case
from pu_nnunet.inference.model_folder import DEFAULT_CHECKPOINT, ModelFolder, inspect_model_folder


@dataclass
class PredictionRun:
    """What a run did: one output per case, on which device, with how many patches per pass."""

    outputs: list[Path] = field(default_factory=list)
    case_seconds: list[float] = field(default_factory=list)
    device: str = ""
    batch_size: int | None = None  # None for 3d models (nnU-Net's own predictor)
    folds: tuple = ()
    mirroring: bool = True


def _record_contents(model: ModelFolder) -> dict[str, dict]:
    """dataset.json and plans.json, written beside the segmentations as nnUNetv2_predict does, so
    that evaluation and post-processing find the labels and the file ending."""
    # the segmentations are NIfTI whatever the model was trained on
    return {"dataset.json": {**model.dataset_json, "file_ending": OUTPUT_ENDING}, "plans.json": model.plans}


def _check_outputs(output_dir: Path, cases: list[InputCase], model: ModelFolder, overwrite: bool) -> None:
    """Refuses, before any work, to replace existing files unless ``overwrite``."""
    if output_dir.exists() and not output_dir.is_dir():
        raise PredictionError(f"output {output_dir} exists and is not a folder")
    if overwrite:
        return
    existing = [output_dir / case.output_name for case in cases if (output_dir / case.output_name).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise PredictionError(f"{existing[0]} already exists{more}; pass --overwrite to replace it")
    for name, content in _record_contents(model).items():
        path = output_dir / name
        if path.exists() and _read_json_or_none(path) != json.loads(json.dumps(content)):
            raise PredictionError(f"{path} exists and belongs to another model; pass --overwrite to replace it "
                                  "or choose another output folder")


def _read_json_or_none(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_records(output_dir: Path, model: ModelFolder) -> None:
    for name, content in _record_contents(model).items():
        (output_dir / name).write_text(json.dumps(content, indent=4))


def _read_case(reader, files: list[str], case: InputCase):
    try:
        return reader.read_images(files)
    except Exception as error:  # noqa: BLE001 - readers raise anything from RuntimeError to nibabel's own
        raise PredictionError(f"cannot read {case.source} with the model's reader {type(reader).__name__}: "
                              f"{str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)}"
                              ) from None


def predict(input_path: str | Path, output_dir: str | Path, model_dir: str | Path,
            folds: list[int | str] | None = None, device: str = "auto", checkpoint: str = DEFAULT_CHECKPOINT,
            use_mirroring: bool = True, batch_size: int | None = None, overwrite: bool = False,
            log: Callable[[str], None] = print) -> PredictionRun:
    """Segments every case in ``input_path`` into ``output_dir/CASE.nii.gz``.

    Bad input (unreadable header, empty folder, incomplete model folder, wrong channel count,
    existing outputs without ``overwrite``) raises PredictionError before any case is predicted;
    an image whose data fails to read later stops the run with a PredictionError naming it.
    """
    import torch
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    from pu_nnunet.devices import resolve_device
    from pu_nnunet.inference.model_folder import load_predictor

    model = inspect_model_folder(model_dir, folds, checkpoint)
    cases = find_input_cases(input_path, len(model.channel_names))
    check_channels(cases, model.channel_names)
    output_dir = Path(output_dir)
    _check_outputs(output_dir, cases, model, overwrite)
    torch_device = resolve_device(device)

    predictor = load_predictor(model, torch_device, use_mirroring)
    plans_manager, configuration = predictor.plans_manager, predictor.configuration_manager
    run = PredictionRun(device=str(torch_device), folds=model.folds,
                        mirroring=use_mirroring and bool(predictor.allowed_mirroring_axes))
    # 3d models: nnU-Net's own sliding window; 2d models: ours, many slices per forward pass
    logits_of, batched = predictor.predict_logits_from_preprocessed_data, None
    if len(configuration.patch_size) == 2:
        from pu_nnunet.inference.sliding_window_2d import BatchedSlicePredictor

        batched = BatchedSlicePredictor(predictor, batch_size)
        logits_of = batched.predict_logits
    reader = plans_manager.image_reader_writer_class()
    preprocessor = configuration.preprocessor_class(verbose=False)
    export_json = _record_contents(model)["dataset.json"]
    log(f"{len(cases)} case(s), model {model.path.name} (folds {', '.join(map(str, model.folds))}), "
        f"device {torch_device}, mirroring {'on' if run.mirroring else 'off'}"
        + (f", {batched.batch_size} patches per forward pass" if batched else ""))

    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pu_nnunet_predict_") as scratch:
        for index, case in enumerate(cases, start=1):
            started = time.perf_counter()
            data, properties = _read_case(reader, materialise_case(case, Path(scratch)), case)
            data, _, properties = preprocessor.run_case_npy(data, None, properties, plans_manager, configuration,
                                                            model.dataset_json)
            volume = torch.from_numpy(data).to(dtype=torch.float32, memory_format=torch.contiguous_format)
            logits = logits_of(volume).cpu().numpy()
            export_prediction_from_logits(logits, properties, configuration, plans_manager, export_json,
                                          str(output_dir / case.case_id))
            run.outputs.append(output_dir / case.output_name)
            run.case_seconds.append(time.perf_counter() - started)
            log(f"[{index}/{len(cases)}] {case.source.name} -> {case.output_name} ({run.case_seconds[-1]:.1f} s)")
    if batched is not None:
        run.batch_size = batched.batch_size  # smaller than at the start after a CUDA out-of-memory retry
    _write_records(output_dir, model)
    return run
