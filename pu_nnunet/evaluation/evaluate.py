"""``evaluate_folders``: a prediction folder against a reference folder -> metrics and report.

Bad input is never skipped silently: a reference case without a prediction is scored as an
all-background prediction (Dice 0 where the reference has the label) and listed as missing
(only the nnU-Net protocol leaves it out, as ``nnUNetv2_evaluate_folder --chill`` does);
predictions without a reference are ignored with a warning; unreadable files and shape or
geometry mismatches raise :class:`EvaluationError` naming the case.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pu_nnunet.evaluation.case_io import (CasePair, DatasetInfo, describe_dataset, pair_cases,
                                          predictions_under_other_endings, read_case, read_meta)
from pu_nnunet.evaluation.run_records import evaluation_record, reference_set
from pu_nnunet.evaluation.metrics.boundary import BoundarySettings, case_boundary
from pu_nnunet.evaluation.metrics.confusion import LabelConfusion, counting_device, label_confusion
from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.evaluation.output_folder import check_output_dir, replaced_outputs
from pu_nnunet.evaluation.report.evaluation_outputs import EVALUATION_OUTPUTS, write_evaluation_outputs
from pu_nnunet.user_errors import worker_pool
from pu_nnunet.evaluation.metrics.case_metrics import (DEFAULT_MIN_SIZE, FOREGROUND, aggregate_by_class, aggregate_cases,
                                          case_record)

# Binary masks saved as 8-bit images mark the foreground with this value; nnU-Net expects 0..N.
MASK_VALUE_8BIT = 255

# Identifies the layout of metrics.json for compare and later readers.
METRICS_FORMAT = "pu-nnunet-evaluation/1"


@dataclass
class CaseCounts:
    case: str
    confusion: LabelConfusion
    spacing: tuple[float, ...]
    is_2d: bool
    missing_prediction: bool
    reference_sha256: str | None = None
    boundary: dict[str, dict[str, float | None]] | None = None  # label key -> {"nsd", "hd95"}


@dataclass(frozen=True)
class BoundaryJob:
    """How boundary metrics are computed while a case is in memory (before the labels are
    final): ``classes`` the evaluated label keys and their values when known up front (--labels
    or dataset.json), else None: every non-zero value in the case but the ignore label, which is
    what _choose_labels then picks."""

    classes: dict[str, tuple[int, ...]] | None
    settings: BoundarySettings
    ignore_label: int | None


def _count(pair: CasePair, device: str, boundary: BoundaryJob | None = None) -> CaseCounts:
    pred = pair.pred if pair.pred is not None else np.zeros_like(pair.ref)
    confusion = label_confusion(pred, pair.ref, device)
    scores = None
    if boundary is not None:
        classes = boundary.classes or label_classes(sorted(confusion.present_labels() - {0, boundary.ignore_label}))
        classes = {**classes, FOREGROUND: foreground_values(classes)}
        scores = case_boundary(pred, pair.ref, classes, pair.spacing, pair.is_2d, boundary.settings,
                               boundary.ignore_label)
    return CaseCounts(pair.case, confusion, pair.spacing, pair.is_2d, missing_prediction=pair.pred is None,
                      reference_sha256=pair.reference_sha256, boundary=scores)


def _read_hashed(case: str, pred_dir: Path | None, ref_dir: Path, info: DatasetInfo) -> CasePair:
    """read_case, plus the reference file's SHA-256 (compare checks two runs scored the same files)."""
    from pu_nnunet.provenance import sha256_file

    pair = read_case(case, pred_dir, ref_dir, info)
    pair.reference_sha256 = sha256_file(ref_dir / f"{case}{info.file_ending}")
    return pair


def _case_job(job: tuple) -> CasePair | CaseCounts:
    """Worker: reads a case and, for CPU evaluation, counts (and scores boundaries) there; GPU
    counting stays in the parent."""
    case, pred_dir, ref_dir, info, count_device, boundary = job
    pair = _read_hashed(case, pred_dir, ref_dir, info)
    return pair if count_device is None else _count(pair, count_device, boundary)


def _count_all(jobs: list[tuple], device: str, num_processes: int,
               boundary: BoundaryJob | None) -> Iterator[CaseCounts]:
    if num_processes <= 1:
        for job in jobs:
            yield _count(_read_hashed(*job[:4]), device, boundary)
        return
    # workers read (and on CPU count) in parallel; CUDA is used by this process only
    in_worker = device if device == "cpu" else None
    with worker_pool(num_processes) as pool:
        for result in pool.imap(_case_job, [(*job, in_worker, boundary) for job in jobs]):
            yield result if in_worker else _count(result, device, boundary)


def _check_prediction_values(info: DatasetInfo, counted: list[CaseCounts], pred_dir: Path) -> None:
    """Without dataset.json's labels, a 0/255 mask against 0/1 references (or the reverse) would
    be scored as two labels that never overlap: refused, naming a file. The sign is the 8-bit mask
    value on one side only while the predictions hold a value no reference has; a model that
    predicts a label absent from these references (2 against 0/1) is left alone."""
    in_references = set().union(*(c.confusion.reference_labels() for c in counted))
    in_predictions = set().union(*(c.confusion.prediction_labels() for c in counted if not c.missing_prediction))
    foreign = in_predictions - in_references - {info.ignore_label}
    if not foreign or MASK_VALUE_8BIT not in in_references ^ in_predictions:
        return
    example = next(c for c in counted if not c.missing_prediction and c.confusion.prediction_labels() & foreign)
    raise EvaluationError(
        f"{pred_dir / (example.case + info.file_ending)}: predictions hold label values {sorted(in_predictions)}, "
        f"the references {sorted(in_references)}; a 0/{MASK_VALUE_8BIT} mask against 0..N labels? There is no "
        "dataset.json to say which labels exist: convert the masks to 0..N, or pass --dataset-json or --labels")


def label_classes(labels: list[int]) -> dict[str, tuple[int, ...]]:
    """Label key -> label values of plain labels: "1" -> (1,)."""
    return {str(label): (int(label),) for label in labels}


def foreground_values(classes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """The label values of the foreground: every evaluated label (or region) merged."""
    return tuple(sorted({value for values in classes.values() for value in values}))


def _planned_classes(labels: list[int] | None, info: DatasetInfo) -> dict[str, tuple[int, ...]] | None:
    """The evaluated classes when known before any case is read (see BoundaryJob)."""
    if info.regions:
        if labels:
            raise EvaluationError(f"{info.dataset_json_path} defines regions ({', '.join(info.regions)}), which are "
                                  "evaluated as nnU-Net evaluates them; --labels selects label values and does not "
                                  "apply (give another --dataset-json to score label values)")
        return {key: values for key, (values, _) in info.regions.items()}
    if labels:
        return label_classes(sorted({int(label) for label in labels}))
    return label_classes(sorted(info.label_names)) if info.label_names else None


def _choose_labels(labels: list[int] | None, info: DatasetInfo, counted: list[CaseCounts]) -> list[int]:
    present = set().union(*(c.confusion.present_labels() for c in counted)) - {0}
    if info.ignore_label is not None:
        present.discard(info.ignore_label)
    if labels:
        chosen = sorted({int(label) for label in labels})
        if chosen[0] < 0:
            raise EvaluationError(f"--labels: label values are 0 or more, got {chosen[0]}")
        if 0 in chosen:
            raise EvaluationError("label 0 is the background and is not evaluated; the foreground is")
        absent = [label for label in chosen if label not in present]
        if absent:
            raise EvaluationError(f"--labels: {', '.join(map(str, absent))} occur(s) in no reference and no "
                                  f"prediction (values found: {sorted(present) or 'none'})")
    elif info.label_names:
        chosen = sorted(info.label_names)
    else:
        chosen = sorted(present)
    if not chosen:
        raise EvaluationError("no foreground label in any reference or prediction; name them with --labels")
    unlisted = sorted(present - set(chosen))
    if unlisted and not labels:
        warnings.warn(f"label values {unlisted} occur in the files but not in dataset.json; "
                      "they count as background")
    return chosen


def evaluate_folders(pred_dir: str | Path, ref_dir: str | Path, out_dir: str | Path, device: str = "auto",
                     labels: list[int] | None = None, min_size: int = DEFAULT_MIN_SIZE,
                     meta: str | Path | dict | None = None, num_processes: int = 1, overwrite: bool = False,
                     images: str | Path | None = None, dataset_json: str | Path | None = None,
                     plots: bool = True, cases: list[str] | None = None,
                     split_file: str | Path | None = None, boundary: bool = True,
                     nsd_tolerance: BoundarySettings | None = None) -> dict[str, Any]:
    """Scores every reference case; writes metrics.json, per_case.csv, report.md and plots/.

    Args:
        device: 'auto' (CUDA when available), 'cpu' (numpy), 'cuda', 'cuda:N', or
            'torch-cpu' (the GPU code path on the CPU).
        labels: label values to evaluate; default the non-background labels of dataset.json,
            else every non-zero value found in the references and predictions. A region-based
            dataset.json's regions are evaluated instead (nnU-Net's keys), and refuse ``labels``.
        min_size: K, the predicted voxels that make a reference-empty case a false positive (and
            below which a case with the label is a false negative); the detection flags only,
            no score (Dice, IoU, NSD, HD95, protocols) depends on it.
        meta: cases.json (case id -> {"class": ..., "split": ...}) for per-class aggregates.
        num_processes: processes reading (and on CPU, counting) cases.
        images: nnU-Net images folder (CASE_0000 files) to draw overlays on; blank without it.
        dataset_json: default PRED_DIR/dataset.json, else REF_DIR/../dataset.json, else none.
        plots: False skips the PNGs (metrics.json, per_case.csv and report.md still written).
        cases: evaluate only these reference cases (e.g. one fold's validation cases, see
            ``cases_of_fold``); every one of them must be in REF_DIR.
        split_file: the splits_final.json ``cases`` came from, recorded (hashed) in provenance.json.
        boundary: False skips NSD and HD95 (``--no-boundary``; their keys are then absent).
        nsd_tolerance: NSD tolerances in mm (pixels for 2D) per label key; default 2 for every
            label (``metrics.boundary.DEFAULT_NSD_TOLERANCE``).

    Returns: the content of metrics.json.
    """
    pred_dir, ref_dir, out_dir = Path(pred_dir), Path(ref_dir), Path(out_dir)
    selected = None if cases is None else set(cases)
    if min_size < 1:
        raise EvaluationError(f"--min-size must be at least 1 voxel, got {min_size}")
    if num_processes < 1:
        raise EvaluationError(f"the number of processes must be at least 1, got {num_processes}")
    if images is not None and not Path(images).is_dir():
        raise EvaluationError(f"{images}: images folder not found")
    check_output_dir(out_dir, "evaluate", EVALUATION_OUTPUTS, overwrite,
                     {"prediction folder": pred_dir, "reference folder": ref_dir,
                      "images folder": Path(images) if images is not None else None})
    info = describe_dataset(pred_dir, ref_dir, None if dataset_json is None else str(dataset_json))
    cases, missing, extra = pair_cases(pred_dir, ref_dir, info.file_ending)
    if selected is not None:
        unknown = sorted(set(selected) - set(cases))
        if unknown:
            raise EvaluationError(f"{len(unknown)} selected case(s) have no reference in {ref_dir}: "
                                  f"{', '.join(unknown[:10])}")
        cases = sorted(set(selected))
        missing = [case for case in missing if case in selected]
        extra = [case for case in extra if case not in selected]
    elsewhere = predictions_under_other_endings(pred_dir, missing, info.file_ending)
    if elsewhere:
        raise EvaluationError(f"{pred_dir}: {len(elsewhere)} prediction(s) end in another file ending than the "
                              f"references ({info.file_ending}): {', '.join(list(elsewhere.values())[:5])}; write "
                              f"them as {info.file_ending} (or give the dataset.json whose file_ending they use)")
    if len(missing) == len(cases):
        raise EvaluationError(f"none of the {len(cases)} reference cases in {ref_dir} has a prediction "
                              f"({info.file_ending}) in {pred_dir}")
    if extra:
        warnings.warn(f"{len(extra)} prediction(s) without a reference are ignored: {', '.join(extra[:10])}"
                      + (" ..." if len(extra) > 10 else ""))
    case_meta = read_meta(meta)
    if case_meta:
        unclassified = [case for case in cases if case not in case_meta]
        if unclassified:
            warnings.warn(f"{len(unclassified)} case(s) not in cases.json, grouped as 'unknown': "
                          f"{', '.join(unclassified[:10])}")
    used_device = counting_device(device)
    nsd_tolerance = nsd_tolerance or BoundarySettings()
    planned = _planned_classes(labels, info)
    if planned is not None:
        _check_tolerance_keys(nsd_tolerance, list(planned))
    boundary_job = BoundaryJob(planned, nsd_tolerance, info.ignore_label) if boundary else None

    jobs = [(case, None if case in missing else pred_dir, ref_dir, info) for case in cases]
    counted = list(_count_all(jobs, used_device, num_processes, boundary_job))
    if not labels and not info.label_values():
        _check_prediction_values(info, counted, pred_dir)
    if info.regions:
        classes = planned
        chosen, names = list(classes), {key: name for key, (_, name) in info.regions.items()}
    else:
        chosen = _choose_labels(labels, info, counted)
        classes = label_classes(chosen)
        names = {str(label): info.label_names.get(label, str(label)) for label in chosen}
    _check_tolerance_keys(nsd_tolerance, list(classes))
    records = [case_record(c.case, c.confusion.without_reference(info.ignore_label), classes, c.spacing,
                           c.is_2d, min_size, case_meta.get(c.case), c.missing_prediction, c.boundary)
               for c in counted]
    for record, c in zip(records, counted):
        record["reference_sha256"] = c.reference_sha256
    label_keys = list(classes) + [FOREGROUND]
    results = {
        "format": METRICS_FORMAT,
        "settings": {
            "pred_dir": str(pred_dir.resolve()),
            "ref_dir": str(ref_dir.resolve()),
            "images_dir": str(Path(images).resolve()) if images else None,
            "dataset_json": info.dataset_json_path,
            "file_ending": info.file_ending,
            "reader": info.reader_class.__name__,
            "device_requested": device,
            "device_used": used_device,
            "min_size": min_size,
            "boundary": boundary,
            "nsd_tolerance": {key: nsd_tolerance.tolerance(key) for key in label_keys} if boundary else None,
            "distance_unit": "pixels" if records[0]["volume_unit"] == "pixels" else "mm",
            "ignore_label": info.ignore_label,
            "meta": str(meta) if meta is not None and not isinstance(meta, dict) else None,
            "split_file": str(Path(split_file).resolve()) if split_file is not None else None,
        },
        "dataset_name": dataset_folder_name(ref_dir, info),
        "references": reference_set(records),
        "provenance": evaluation_record(used_device, info, pred_dir, split_file),
        "labels": chosen,
        # region-based dataset.json: "labels" are nnU-Net's region keys, these their label values
        "regions": {key: list(values) for key, values in classes.items()} if info.regions else None,
        "label_names": names,
        "volume_unit": records[0]["volume_unit"],
        "n_reference_cases": len(cases),
        "missing_predictions": missing,
        "extra_predictions": extra,
        "aggregates": aggregate_cases(records, label_keys),
        "per_class": aggregate_by_class(records, label_keys),
        "cases": records,
    }
    # checked again: another run may have written there meanwhile
    check_output_dir(out_dir, "evaluate", EVALUATION_OUTPUTS, overwrite, {})
    with replaced_outputs(out_dir, EVALUATION_OUTPUTS) as work:
        write_evaluation_outputs(results, work, info, plots=plots)
    return results


def _check_tolerance_keys(settings: BoundarySettings, keys: list[str]) -> None:
    unknown = sorted(set(settings.tolerances) - set(keys) - {FOREGROUND})
    if unknown:
        raise EvaluationError(f"--nsd-tolerance names label(s) {', '.join(unknown)}, not among the evaluated labels "
                              f"{', '.join(keys)} (or {FOREGROUND})")


def dataset_folder_name(ref_dir: Path, info: DatasetInfo) -> str | None:
    """``DatasetXXX_Name`` of nnU-Net's raw layout (REF_DIR's or dataset.json's folder), else None."""
    import re

    candidates = [ref_dir.resolve().parent.name]
    if info.dataset_json_path:
        candidates.append(Path(info.dataset_json_path).resolve().parent.name)
    return next((name for name in candidates if re.fullmatch(r"Dataset\d{3}_.+", name)), None)


def cases_of_fold(split_file: str | Path, fold: int) -> list[str]:
    """The validation cases of one fold of an nnU-Net splits_final.json (checked: a list of
    {"train": [...], "val": [...]} whose val cases are not also training cases)."""
    from pu_nnunet.user_files import check_fold_number, read_splits

    splits = read_splits(split_file, error=EvaluationError)
    check_fold_number(fold, len(splits), split_file, error=EvaluationError)
    return list(splits[fold]["val"])
