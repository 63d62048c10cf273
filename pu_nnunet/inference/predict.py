"""``pu-nnunet predict``: segment NIfTI volumes or DICOM series with a trained nnU-Net model.

Each case goes the way ``nnUNetv2_predict`` takes it, through nnU-Net's own code: the model's
reader (plans ``image_reader_writer``), the preprocessor class named in the plans
(``run_case_npy``: transpose, crop, normalise, resample), then the logits, then
``export_prediction_from_logits`` (resampling back, uncropping, writing with the input's
geometry). Only the logits of 2d models are computed differently: many slices per forward pass
(:mod:`pu_nnunet.inference.sliding_window_2d`). 3d models use nnU-Net's predictor unchanged.
Cases run in this process, no worker processes to start: two threads read the next case and
export the last one while the current one is predicted (:mod:`pu_nnunet.inference.pipeline`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pu_nnunet.inference.cpu_optimise import check_cpu_optimisation, use_cpu_optimisation
from pu_nnunet.inference.dicom_seg import check_output_format, seg_output_name, write_dicom_seg
from pu_nnunet.inference.errors import PredictionError
from pu_nnunet.inference.inputs import OUTPUT_ENDING, PROBABILITY_ENDINGS, InputCase, check_channels, find_input_cases, materialise_case
from pu_nnunet.inference.model_folder import DEFAULT_CHECKPOINT, ModelFolder, inspect_model_folder
from pu_nnunet.inference.pipeline import run_pipelined
from pu_nnunet.inference.precision import autocast_context, check_precision, restrict_mirror_axes
from pu_nnunet.json_files import json_text, write_json
from pu_nnunet.provenance import MODEL_RECORD_FILE, RUN_RECORD_FILE, model_record, run_record, same_model
from pu_nnunet.user_errors import error_reason, naming_the_path
from pu_nnunet.user_files import (damaged_file_problem, read_user_json,
                                  remove_stale_partial_entries, temporary_name)

# files that mark a folder as the output of another pu-nnunet command
FOREIGN_OUTPUT_MARKERS = {"metrics.json": "evaluate", "comparison.json": "compare"}


@dataclass
class PredictionRun:
    """What a run did: one output per case, on which device, with how many patches per pass."""

    outputs: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # complete outputs kept by continue_prediction
    case_seconds: list[float] = field(default_factory=list)
    device: str = ""
    batch_size: int | None = None  # None for 3d models (nnU-Net's own predictor)
    folds: tuple = ()
    mirroring: bool = True
    precision: str = "auto"
    mirror_axes: tuple | None = None
    # busy seconds per step ("model loading", then STEPS of the pipeline, summed over cases;
    # reading and exporting overlap the sliding window), the main thread's waits for them, and
    # the wall seconds of the loop over the cases
    step_seconds: dict[str, float] = field(default_factory=dict)
    waiting_seconds: float = 0.0
    loop_seconds: float = 0.0


def _record_contents(model: ModelFolder) -> dict[str, dict]:
    """dataset.json and plans.json, written beside the segmentations as nnUNetv2_predict does, so
    that evaluation and post-processing find the labels and the file ending."""
    # the segmentations are NIfTI whatever the model was trained on
    return {"dataset.json": {**model.dataset_json, "file_ending": OUTPUT_ENDING}, "plans.json": model.plans}


def _input_folders(cases: list[InputCase]) -> set[Path]:
    return {(case.source if case.is_dicom else path.parent).resolve() for case in cases
            for path in (case.channel_files or (case.source,))}


def _shown(value):
    """A model record's value for a message: checkpoint hashes shortened as git shortens commits."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"fold {k}: {str(v)[:12]}" for k, v in value.items()) + "}"
    return value


def prediction_settings(use_mirroring: bool, tta_axes: list[int] | None, precision: str, device,
                        backend: str, onnx: str | Path | None, cpu_optimise: str = "none") -> dict:
    """Everything besides the weights that changes a segmentation, as the model record pins it:
    ``--continue`` refuses a folder predicted with other settings. Precision ``auto`` is recorded
    as what it means on the device (fp16 autocast on CUDA, fp32 elsewhere). ``--cpu-optimise`` is
    recorded only when given, so that folders predicted before it existed still continue."""
    from pu_nnunet.inference.model_folder import TILE_STEP_SIZE
    from pu_nnunet.inference.onnx_backend import exported_graph_hashes

    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    mirroring = "off" if not use_mirroring or tta_axes == [] else \
        ("all model axes" if tta_axes is None else sorted(set(tta_axes)))
    settings = {"mirroring": mirroring, "precision": precision, "backend": backend,
                "onnx_sha256": exported_graph_hashes(onnx) if backend == "onnxruntime" else None,
                "tile_step_size": TILE_STEP_SIZE}
    if cpu_optimise != "none":
        settings["cpu_optimise"] = cpu_optimise
    return settings


def same_output(earlier: dict, record: dict) -> list[str]:
    """How a folder's model record differs from this run's: the model, or the settings of its
    prediction (records written before settings were pinned are compared by the model only)."""
    differing = same_model(earlier, record)
    if "prediction" in earlier and earlier.get("prediction") != record.get("prediction"):
        differing.append("prediction")
    return differing


def _difference(name: str, there, now) -> str:
    """One differing field of two model records, for a message (the prediction settings by setting)."""
    if name == "prediction" and isinstance(there, dict) and isinstance(now, dict):
        return "; ".join(f"{key} {_shown(there.get(key))} there, {_shown(now.get(key))} now"
                         for key in sorted(set(there) | set(now)) if there.get(key) != now.get(key))
    return f"{name} {_shown(there)} there, {_shown(now)} now"


def _check_model_record(output_dir: Path, record: dict, existing: list[str], continue_prediction: bool) -> None:
    """The folder's segmentations must all come from one model with one set of prediction
    settings: its model record (written with the first segmentation) must name this model and
    these settings, or the folder must hold none of its cases yet."""
    path = output_dir / MODEL_RECORD_FILE
    if path.exists():
        earlier = read_user_json(path, "model record", dict, PredictionError)
        differing = same_output(earlier, record)
        if differing:
            details = "; ".join(_difference(name, earlier.get(name), record.get(name)) for name in differing)
            what = "with other prediction settings" if differing == ["prediction"] else "by another model"
            raise PredictionError(f"{path}: the segmentations in this folder were written {what} ({details})"
                                  "; pass --overwrite to replace them or choose another output folder")
    elif existing and continue_prediction:
        raise PredictionError(f"{output_dir}: has no {MODEL_RECORD_FILE} (written by an older pu-nnunet or another "
                              f"tool), so --continue cannot tell which model wrote {existing[0]}; pass "
                              "--overwrite to predict every case again or choose another output folder")


def _check_no_foreign_leftovers(output_dir: Path, cases: list[InputCase], record: dict) -> None:
    """A segmentation of another (or an unrecorded) model that is not among this run's cases would
    stay in the folder under this model's record (``--overwrite`` replaces only this run's cases):
    refused, naming it."""
    path = output_dir / MODEL_RECORD_FILE
    earlier = _read_json_or_none(path) if path.exists() else None
    differing = same_output(earlier, record) if earlier is not None else None
    if differing == []:
        return
    replaced = {case.output_name for case in cases}
    leftovers = sorted(p for p in output_dir.glob(f"*{OUTPUT_ENDING}") if p.name not in replaced
                       and not p.name.startswith("."))
    if leftovers:
        more = f" (and {len(leftovers) - 1} more)" if len(leftovers) > 1 else ""
        writer = (f"written by a model this folder has no {MODEL_RECORD_FILE} of" if differing is None
                  else "written with other prediction settings" if differing == ["prediction"]
                  else "written by another model")
        raise PredictionError(f"{leftovers[0]}{more}: {writer} and not among the inputs, so it would stay "
                              "beside this model's segmentations (--overwrite replaces only the inputs' cases); "
                              "remove it or choose another output folder")


def _output_names(case: InputCase, output_format: str, nifti: bool, probabilities: bool = False) -> list[str]:
    """The files a case's prediction writes into the output folder (the segmentation first)."""
    names = [case.output_name] if nifti else []
    names += [seg_output_name(case)] if output_format == "dicom-seg" else []
    # nnUNetv2_predict --save_probabilities: CASE.npz (softmax, "probabilities") and CASE.pkl
    return names + ([case.case_id + ending for ending in PROBABILITY_ENDINGS] if probabilities else [])


def _check_outputs(output_dir: Path, cases: list[InputCase], model: ModelFolder, overwrite: bool,
                   continue_prediction: bool, record: dict, output_format: str = "nifti",
                   nifti: bool = True, probabilities: bool = False) -> list[InputCase]:
    """Refuses, before any work: an output path that is a file, an output folder that holds the
    inputs or another command's outputs, segmentations of another model (``record``: this
    model's) and existing segmentations unless ``overwrite`` or ``continue_prediction``. Returns
    the cases still to predict (all, unless continuing)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise PredictionError(f"{output_dir}: the output path exists and is not a folder")
    if output_dir.resolve() in _input_folders(cases):
        raise PredictionError(f"{output_dir}: the output folder holds the input images; choose another output "
                              "folder (segmentations would be mixed with, or replace, the images)")
    if output_dir.resolve() == model.path.resolve() or model.path.resolve() in output_dir.resolve().parents:
        raise PredictionError(f"{output_dir}: the output folder lies in the model folder {model.path}")
    for marker, owner in FOREIGN_OUTPUT_MARKERS.items():
        if (output_dir / marker).exists():
            raise PredictionError(f"{output_dir}: holds the output of pu-nnunet {owner} ({marker}); choose another "
                                  "output folder")
    if not output_dir.is_dir():
        return list(cases)
    present = {case.case_id: [name for name in _output_names(case, output_format, nifti, probabilities)
                              if (output_dir / name).exists()] for case in cases}
    existing = [case for case in cases if present[case.case_id]]
    if not overwrite:
        _check_model_record(output_dir, record, [present[case.case_id][0] for case in existing], continue_prediction)
    _check_no_foreign_leftovers(output_dir, cases, record)
    for name, content in _record_contents(model).items():
        path = output_dir / name
        if not overwrite and path.exists() and _read_json_or_none(path) != json.loads(json_text(content, 4)):
            raise PredictionError(f"{path} exists and belongs to another model; pass --overwrite to replace it "
                                  "or choose another output folder")
    if overwrite:
        return list(cases)
    if not continue_prediction:
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            first = output_dir / present[existing[0].case_id][0]
            raise PredictionError(f"{first} already exists{more}; pass --overwrite "
                                  "to replace it or --continue to keep it and predict the rest")
        return list(cases)
    # outputs are renamed into place when complete, so an existing one is complete unless written
    # by something else; a damaged one is predicted again
    done = {case.case_id for case in existing
            if present[case.case_id] == _output_names(case, output_format, nifti, probabilities)
            and all(damaged_file_problem(output_dir / name) is None for name in present[case.case_id])}
    return [case for case in cases if case.case_id not in done]


def _read_json_or_none(path: Path):
    try:
        return read_user_json(path, "record", dict, PredictionError)
    except PredictionError:
        return None


def _write_records(output_dir: Path, model: ModelFolder) -> None:
    for name, content in _record_contents(model).items():
        write_json(output_dir / name, content, indent=4)


def input_hashes(cases: list[InputCase]) -> dict[str, dict]:
    """Per case: where it was read and one SHA-256 over its files (channels, or a DICOM series'
    slices, in order: the name and the hash of each)."""
    import hashlib

    import SimpleITK as sitk

    from pu_nnunet.provenance import sha256_file

    hashes = {}
    for case in cases:
        files = ([Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(case.source), case.dicom_series_id)]
                 if case.is_dicom else list(case.channel_files))
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.name}|{sha256_file(path)}|".encode())
        hashes[case.case_id] = {"source": str(Path(case.source).resolve()), "files": len(files),
                                "sha256": digest.hexdigest()}
    return hashes


def _write_provenance(output_dir: Path, model: ModelFolder, record: dict, device: str, argv: list[str] | None,
                      cases: list[InputCase]) -> None:
    """The model record (which weights and prediction settings: ``--continue`` compares it) and
    the run record (device, code, libraries, working directory, the model's dataset.json and
    plans.json, the hashes of this run's input images), before the first segmentation."""
    files = {"dataset.json": model.path / "dataset.json", "plans.json": model.path / "plans.json"}
    run = {**run_record(device=device, files=files, model=record, argv=argv), "inputs": input_hashes(cases)}
    for name, content in ((MODEL_RECORD_FILE, record), (RUN_RECORD_FILE, run)):
        write_json(output_dir / name, content, indent=4)


def _read_case(reader, files: list[str], case: InputCase):
    try:
        data, properties = reader.read_images(files)
    except Exception as error:  # noqa: BLE001 - readers raise anything from RuntimeError to nibabel's own
        raise PredictionError(f"cannot read {case.source} with the model's reader {type(reader).__name__}: "
                              f"{str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)}"
                              ) from None
    import numpy as np

    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:  # readers other than SimpleITK keep NaN; normalisation would spread them everywhere
            raise PredictionError(f"{case.source}: {bad} voxel(s) are NaN or infinite")
    return data, properties


def _export_atomically(export, logits, properties, configuration, plans_manager, export_json, output: Path,
                       probabilities: bool = False) -> None:
    """nnU-Net writes ``stem + file_ending`` (and, with ``probabilities``, ``stem.npz`` and
    ``stem.pkl``): it writes a hidden temporary stem, renamed when complete, the segmentation
    last, so an interrupted run leaves each case complete or without its segmentation."""
    stem = output.name[: -len(OUTPUT_ENDING)]
    temporary = temporary_name(output.parent / stem)
    written = temporary.parent / (temporary.name + OUTPUT_ENDING)
    extras = [(temporary.parent / (temporary.name + ending), output.parent / (stem + ending))
              for ending in (PROBABILITY_ENDINGS if probabilities else ())]
    try:
        with naming_the_path(output):
            export(logits, properties, configuration, plans_manager, export_json, str(temporary), probabilities)
            # ITK's NIfTI writer only prints a message when the disk is full: check what it wrote
            problem = damaged_file_problem(written)
            if problem is not None:
                raise PredictionError(f"{output}: writing failed, the file is incomplete (disk full?): {problem}")
            for source, target in extras:
                os.replace(source, target)
            os.replace(written, output)
    except RuntimeError as error:  # ITK's writers report a full disk or a bad path this way
        raise PredictionError(f"{output}: cannot write the segmentation: {error_reason(error)}") from None
    finally:
        written.unlink(missing_ok=True)
        for source, _ in extras:
            source.unlink(missing_ok=True)


def _on_cpu_under_precision(function: Callable, precision: str, device) -> Callable:
    """nnU-Net's 3d sliding window under the chosen autocast on the CPU (on CUDA it opens its own)."""
    if device.type != "cpu":
        return function

    def wrapped(*args, **kwargs):
        with autocast_context(precision, device):
            return function(*args, **kwargs)
    return wrapped


def _check_backend(backend: str, onnx, precision: str) -> None:
    from pu_nnunet.inference.onnx_backend import BACKENDS

    if backend not in BACKENDS:
        raise PredictionError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "onnxruntime" and onnx is None:
        raise PredictionError("--backend onnxruntime needs --onnx FILE: the .onnx (or its .json) written by "
                              "pu-nnunet export-onnx for this model folder")
    if backend != "onnxruntime" and onnx is not None:
        raise PredictionError("--onnx is read by --backend onnxruntime only; add it, or leave out --onnx")
    if backend == "onnxruntime" and precision not in ("auto", "fp32"):
        raise PredictionError(f"--precision {precision}: the ONNX export is float32; use --backend torch for "
                              "lower precision")


def predict(input_path: str | Path, output_dir: str | Path, model_dir: str | Path,
            folds: list[int | str] | None = None, device: str = "auto", checkpoint: str = DEFAULT_CHECKPOINT,
            use_mirroring: bool = True, batch_size: int | None = None, overwrite: bool = False,
            continue_prediction: bool = False, log: Callable[[str], None] = print,
            argv: list[str] | None = None, precision: str = "auto",
            tta_axes: list[int] | None = None, backend: str = "torch",
            onnx: str | Path | None = None, output_format: str = "nifti", nifti: bool = True,
            save_probabilities: bool = False, cpu_optimise: str = "none") -> PredictionRun:
    """Segments every case in ``input_path`` into ``output_dir/CASE.nii.gz``.

    Bad input (unreadable header, truncated file, damaged DICOM slice, empty folder, incomplete
    model folder, wrong channel count, existing outputs without ``overwrite``) raises
    PredictionError before any case is predicted; an image whose data fails to read later stops
    the run with a PredictionError naming it. Each segmentation is renamed into place when
    complete; ``continue_prediction`` keeps those already there and predicts the others, when the
    folder's model record (``model_record.json``, written with ``provenance.json`` before the
    first segmentation; ``argv`` is the command line recorded there) names this model.
    ``precision`` and ``tta_axes`` trade accuracy for speed (:mod:`pu_nnunet.inference.precision`).
    ``backend="onnxruntime"`` runs the network of ``onnx`` (``pu-nnunet export-onnx``'s output for
    this model folder; its folds by default) in onnxruntime (:mod:`pu_nnunet.inference.onnx_backend`).
    ``output_format="dicom-seg"`` (DICOM input only) also writes ``CASE_seg.dcm``, a DICOM SEG of
    the series (:mod:`pu_nnunet.inference.dicom_seg`), only that with ``nifti=False``;
    ``save_probabilities`` also writes nnU-Net's ``CASE.npz`` (softmax probabilities, for operating
    points) and ``CASE.pkl``, as ``nnUNetv2_predict --save_probabilities``; a case counts as done
    when all its files are there. ``cpu_optimise`` runs the PyTorch network on the CPU in one of
    PyTorch's inference forms (:mod:`pu_nnunet.inference.cpu_optimise`; ``none``: eager).
    """
    if overwrite and continue_prediction:
        raise PredictionError("--overwrite and --continue exclude each other")
    _check_backend(backend, onnx, precision)
    if backend == "onnxruntime" and folds is None:
        from pu_nnunet.inference.onnx_backend import exported_folds

        folds = exported_folds(onnx)
    import torch
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.inference.export_prediction import export_prediction_from_logits

    from pu_nnunet.devices import resolve_device
    from pu_nnunet.inference.model_folder import load_predictor

    model = inspect_model_folder(model_dir, folds, checkpoint)
    cases = find_input_cases(input_path, len(model.channel_names))
    check_channels(cases, model.channel_names)
    check_output_format(output_format, cases, nifti)
    output_dir = Path(output_dir)
    torch_device = resolve_device(device)
    check_cpu_optimisation(cpu_optimise, torch_device, backend)
    record = {**model_record(model.path, model.folds, model.checkpoint),
              "prediction": prediction_settings(use_mirroring, tta_axes, precision, torch_device, backend, onnx,
                                                cpu_optimise)}
    if save_probabilities and not nifti:
        raise PredictionError("--save_probabilities needs the NIfTI segmentation beside the probabilities: drop "
                              "--no-nifti")
    to_predict = _check_outputs(output_dir, cases, model, overwrite, continue_prediction, record, output_format,
                                nifti, save_probabilities)

    loading_started = time.perf_counter()
    predictor = load_predictor(model, torch_device, use_mirroring)
    if backend == "onnxruntime":
        from pu_nnunet.inference.onnx_backend import use_onnxruntime

        use_onnxruntime(predictor, model, onnx, threads=min(default_num_processes, torch.get_num_threads()))
    use_cpu_optimisation(predictor, cpu_optimise)
    loading_seconds = time.perf_counter() - loading_started
    plans_manager, configuration = predictor.plans_manager, predictor.configuration_manager
    check_precision(precision, torch_device, is_2d=len(configuration.patch_size) == 2)
    mirror_axes = restrict_mirror_axes(predictor, None if not use_mirroring else tta_axes)
    run = PredictionRun(device=str(torch_device), folds=model.folds, mirroring=bool(mirror_axes),
                        precision=precision, mirror_axes=mirror_axes)
    # 3d models: nnU-Net's own sliding window (its fp16 autocast on CUDA; bf16 on the CPU from here);
    # 2d models: ours, many slices per forward pass
    logits_of = _on_cpu_under_precision(predictor.predict_logits_from_preprocessed_data, precision, torch_device)
    batched = None
    if len(configuration.patch_size) == 2:
        from pu_nnunet.inference.sliding_window_2d import BatchedSlicePredictor

        batched = BatchedSlicePredictor(predictor, batch_size, precision)
        logits_of = batched.predict_logits
    reader = plans_manager.image_reader_writer_class()
    preprocessor = configuration.preprocessor_class(verbose=False)
    export_json = _record_contents(model)["dataset.json"]
    run.skipped = [output_dir / _output_names(case, output_format, nifti)[0] for case in cases
                   if case not in to_predict]
    log(f"{len(to_predict)} case(s)" + (f" ({len(run.skipped)} already complete, kept)" if run.skipped else "")
        + f", model {model.path.name} (folds {', '.join(map(str, model.folds))}), "
        f"device {torch_device}" + (", onnxruntime" if backend == "onnxruntime" else "")
        + f", precision {precision}" + (f", --cpu-optimise {cpu_optimise}" if cpu_optimise != "none" else "")
        + ", mirroring "
        + (f"along axes {list(mirror_axes)}" if run.mirroring else "off")
        + (f", {batched.describe_batch_size()}" if batched else ""))

    output_dir.mkdir(parents=True, exist_ok=True)
    for entry in remove_stale_partial_entries(output_dir):
        log(f"removed {entry.name}, left behind by an earlier run that was killed")
    with tempfile.TemporaryDirectory(prefix="pu_nnunet_predict_") as scratch:
        def read(case: InputCase):
            data, properties = _read_case(reader, materialise_case(case, Path(scratch)), case)
            data, _, properties = preprocessor.run_case_npy(data, None, properties, plans_manager, configuration,
                                                            model.dataset_json)
            return torch.from_numpy(data).to(dtype=torch.float32, memory_format=torch.contiguous_format), properties

        def export(case: InputCase, logits, properties) -> None:
            # without the NIfTI output, the SEG is made from one written to the scratch folder
            segmentation = (output_dir if nifti else Path(scratch)) / case.output_name
            _export_atomically(export_prediction_from_logits, logits, properties, configuration, plans_manager,
                               export_json, segmentation, save_probabilities)
            if output_format == "dicom-seg":
                write_dicom_seg(segmentation, case, export_json, record, output_dir / seg_output_name(case))
            if not nifti:
                segmentation.unlink()

        def written(index: int, case: InputCase, seconds: float) -> None:
            names = _output_names(case, output_format, nifti, save_probabilities)
            run.outputs.append(output_dir / names[0])
            log(f"[{index}/{len(to_predict)}] {case.source.name} -> {' and '.join(names)} ({seconds:.1f} s)")

        # every segmentation in the folder is covered by the records, written before the first
        timings = run_pipelined(to_predict, read, lambda volume: logits_of(volume).cpu().numpy(), export,
                                lambda: _write_provenance(output_dir, model, record, str(torch_device), argv,
                                                          cases),
                                written)
    run.case_seconds = timings.per_case
    run.step_seconds = {"model loading": loading_seconds, **timings.busy}
    run.waiting_seconds, run.loop_seconds = timings.waiting, timings.wall
    if batched is not None:
        run.batch_size = batched.batch_size  # smaller than at the start after a CUDA out-of-memory retry
    _write_records(output_dir, model)
    return run
