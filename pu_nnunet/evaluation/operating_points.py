"""``evaluate --operating-points``: FPR on normal cases against lesion Dice and lesion sensitivity
over a grid of minimum component sizes and softmax thresholds, for one prediction folder.

Writes ``operating_points.json`` (every point, the frontier, the default point and nnU-Net's
postprocessing point), ``operating_points.csv`` (one row per point) and ``operating_points.png``
into the evaluation folder. Thresholds need nnU-Net's probabilities (``CASE.npz`` beside each
prediction, from ``--save_probabilities``); without them only the saved label maps (nnU-Net's
argmax) are scored, over the minimum sizes. Definitions: :mod:`pu_nnunet.evaluation.metrics.operating_points`.

nnU-Net's own operating point: ``nnUNetv2_determine_postprocessing`` only ever chooses "keep the
largest foreground component" (overall, then per label; ``nnunetv2/postprocessing/
remove_connected_components.py``), when it raises nnU-Net's mean foreground Dice and lowers no
label's. Its ``postprocessing.json`` in the prediction folder (or given) is applied as it says;
without one the rule is applied here to these cases for the foreground union (exact for a single
label, as BUSI's lesion). Keeping the largest component never removes a false positive on a
normal case: it only trades lesion sensitivity for Dice.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pu_nnunet.evaluation.case_io import DatasetInfo, describe_dataset, pair_cases, read_case
from pu_nnunet.evaluation.errors import EvaluationError
from pu_nnunet.evaluation.jsonio import read_json, write_json
from pu_nnunet.evaluation.metrics.operating_points import (DEFAULT_MATCHED_LEVELS, DEFAULT_MIN_SIZES,
                                                           DEFAULT_THRESHOLDS, LABEL_MAP, CaseComponents, MinSize,
                                                           case_components, frontier, grid_points, score_point)
from pu_nnunet.evaluation.output_folder import replaced_outputs

OPERATING_POINTS_FORMAT = "pu-nnunet-operating-points/1"
JSON_FILE, CSV_FILE, PLOT_FILE = "operating_points.json", "operating_points.csv", "operating_points.png"
OUTPUTS = (JSON_FILE, CSV_FILE, PLOT_FILE)
# nnU-Net's --save_probabilities writes CASE.npz (key "probabilities", channels first) and CASE.pkl
PROBABILITIES_ENDING, PROBABILITIES_KEY = ".npz", "probabilities"
# written by nnUNetv2_determine_postprocessing into the prediction folder it examined
POSTPROCESSING_JSON = "postprocessing.json"
KEEP_LARGEST = "remove_all_but_largest_component_from_segmentation"
CSV_COLUMNS = ("threshold", "min_size", "min_size_unit", "fpr", "false_positive_cases", "n_normal", "fpr_ci_low",
               "fpr_ci_high", "lesion_sensitivity", "lesions_hit", "n_lesions", "lesion_dice",
               "lesion_cases_detected", "n_lesion_cases")


def _foreground_probability(path: Path, shape: tuple[int, ...], case: str) -> np.ndarray:
    try:
        with np.load(path) as content:
            probabilities = content[PROBABILITIES_KEY]
    except Exception as error:  # zip, pickle or key errors of a damaged or foreign file
        raise EvaluationError(f"{path}: cannot read nnU-Net's probabilities of case {case}: "
                              f"{type(error).__name__}: {error}") from None
    if probabilities.ndim != len(shape) + 1 or tuple(probabilities.shape[1:]) != tuple(shape):
        raise EvaluationError(f"{path}: probabilities of shape {probabilities.shape} do not match the reference "
                              f"{shape} of case {case} (channels first, as nnU-Net's --save_probabilities writes)")
    # softmax over background and labels: the foreground is everything but the background
    return 1.0 - probabilities[0].astype(np.float32)


def case_grid(case: str, pred_dir: Path, ref_dir: Path, info: DatasetInfo, thresholds: Sequence[float]
              ) -> dict[Any, CaseComponents]:
    """One case's components at the label map and at each threshold (thresholds need CASE.npz)."""
    pair = read_case(case, pred_dir, ref_dir, info)
    reference = pair.ref > 0
    if info.ignore_label is not None:
        reference &= pair.ref != info.ignore_label
    result = {LABEL_MAP: case_components(pair.pred > 0, reference, pair.spacing, pair.is_2d)}
    if thresholds:
        foreground = _foreground_probability(pred_dir / f"{case}{PROBABILITIES_ENDING}", pair.ref.shape, case)
        for threshold in thresholds:
            result[threshold] = case_components(foreground >= threshold, reference, pair.spacing, pair.is_2d)
    return result


def _postprocessing_choice(path: Path | None, pred_dir: Path) -> dict[str, Any] | None:
    """What nnUNetv2_determine_postprocessing chose, from its postprocessing.json; None when absent."""
    path = path if path is not None else pred_dir / POSTPROCESSING_JSON
    if not Path(path).is_file():
        return None
    content = read_json(path, "nnU-Net's postprocessing.json", dict)
    functions = content.get("postprocessing_fns")
    if not isinstance(functions, list) or any(name != KEEP_LARGEST for name in functions):
        raise EvaluationError(f"{path}: postprocessing_fns {functions!r}; nnU-Net 2.8 writes only {KEEP_LARGEST}")
    return {"source": str(path), "keep_largest": bool(functions), "functions": functions,
            "kwargs": content.get("postprocessing_kwargs")}


def _nnunet_dice(cases: Sequence[CaseComponents], keep_largest: bool) -> float | None:
    """nnU-Net's mean Dice of the label maps: empty reference and prediction -> dropped, an empty
    reference with a prediction -> 0 (nnunetv2/evaluation/evaluate_predictions.py)."""
    values = []
    for case in cases:
        kept = case.largest_only() if keep_largest else case.kept(1)
        score = case.scores(kept)
        if score["dice"] is not None:
            values.append(score["dice"])
    return float(np.mean(values)) if values else None


def nnunet_rule(cases: Sequence[CaseComponents], source: str) -> dict[str, Any]:
    """nnUNetv2_determine_postprocessing's decision for the foreground union: keep the largest
    component when that raises nnU-Net's mean Dice. nnU-Net decides on the cross-validation
    predictions; decided on the cases that are then scored, it is chosen on the test set."""
    without, with_largest = _nnunet_dice(cases, False), _nnunet_dice(cases, True)
    keep = with_largest is not None and without is not None and with_largest > without
    return {"source": source, "keep_largest": keep, "nnunet_dice_without": without,
            "nnunet_dice_keep_largest": with_largest}


def postprocessing_from_folder(pred_dir: str | Path, ref_dir: str | Path, cases: Sequence[str] | None = None,
                               dataset_json: str | Path | None = None) -> dict[str, Any]:
    """nnU-Net's rule decided on another prediction folder (a fold's validation predictions), to
    be applied to held-out cases as nnU-Net applies postprocessing.pkl."""
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    info = describe_dataset(pred_dir, ref_dir, None if dataset_json is None else str(dataset_json))
    chosen = sorted(cases) if cases is not None else pair_cases(pred_dir, ref_dir, info.file_ending)[0]
    grids = [case_grid(case, pred_dir, ref_dir, info, ())[LABEL_MAP] for case in chosen]
    return nnunet_rule(grids, f"nnU-Net's rule on {pred_dir} ({len(chosen)} cases)")


def nnunet_postprocessing_point(cases: Sequence[CaseComponents], chosen: dict[str, Any] | None) -> dict[str, Any]:
    """The operating point users of nnU-Net get: the label maps, with the largest foreground
    component kept when nnU-Net's postprocessing says so."""
    here = nnunet_rule(cases, "nnU-Net's rule applied to these same cases (no postprocessing.json found or "
                              "given: chosen on the cases it is scored on)")
    chosen = here if chosen is None else chosen
    point = score_point(cases, (lambda case: case.largest_only()) if chosen["keep_largest"] else
                        (lambda case: case.kept(1)))
    # nnunet_dice_*: on the cases the choice was made on (absent for a postprocessing.json)
    return {**chosen, "nnunet_dice_scored_cases": {"without": here["nnunet_dice_without"],
                                                   "keep_largest": here["nnunet_dice_keep_largest"]},
            "threshold": LABEL_MAP, "min_size": 1, "min_size_unit": "voxels", **point}


def operating_points(grids: Sequence[dict[Any, CaseComponents]], min_sizes: Sequence[MinSize],
                     postprocessing: dict[str, Any] | None = None) -> dict[str, Any]:
    """Points, frontier, default point and nnU-Net's postprocessing point of a set of case grids."""
    thresholds = list(grids[0]) if grids else [LABEL_MAP]
    by_threshold = {threshold: [grid[threshold] for grid in grids] for threshold in thresholds}
    points = grid_points(by_threshold, min_sizes)
    default = next(p for p in points if p["threshold"] == LABEL_MAP and p["min_size"] == 1
                   and p["min_size_unit"] == "voxels") if MinSize(1, "voxels") in min_sizes else \
        {"threshold": LABEL_MAP, "min_size": 1, "min_size_unit": "voxels",
         **score_point(by_threshold[LABEL_MAP], lambda case: case.kept(1))}
    return {"points": points, "frontier": frontier(points), "default_point": default,
            "nnunet_postprocessing": nnunet_postprocessing_point(by_threshold[LABEL_MAP], postprocessing)}


def parse_min_sizes(voxels: Sequence[int] | None, millimetres: Sequence[float] | None) -> list[MinSize]:
    sizes = [MinSize(int(v), "voxels") for v in (DEFAULT_MIN_SIZES if voxels is None else voxels)]
    sizes += [MinSize(float(v), "mm") for v in (millimetres or ())]
    bad = [size.label() for size in sizes if size.value <= 0]
    if bad:
        raise EvaluationError(f"minimum component sizes must be positive, got {', '.join(bad)}")
    return sizes


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    bad = [t for t in thresholds if not 0.0 < t <= 1.0]
    if bad:
        raise EvaluationError(f"probability thresholds lie in (0, 1], got {bad}")
    return sorted(set(float(t) for t in thresholds))


def folder_operating_points(pred_dir: str | Path, ref_dir: str | Path, out_dir: str | Path | None = None, *,
                            thresholds: Sequence[float] | None = None, min_sizes: Sequence[int] | None = None,
                            min_sizes_mm: Sequence[float] | None = None, dataset_json: str | Path | None = None,
                            cases: Sequence[str] | None = None, postprocessing_json: str | Path | None = None,
                            name: str | None = None, plot: bool = True,
                            postprocessing: dict[str, Any] | None = None) -> dict[str, Any]:
    """Operating points of one prediction folder; writes the three files into ``out_dir`` when given.

    Args:
        thresholds: softmax foreground thresholds; default DEFAULT_THRESHOLDS when every case has
            CASE.npz, none (label maps only) when no case has; some but not all is an error.
        min_sizes / min_sizes_mm: minimum component sizes in voxels and in mm^2 (2D) / mm^3 (3D).
        cases: only these reference cases (e.g. one fold's validation cases).
        postprocessing_json: nnU-Net's postprocessing.json; default PRED_DIR/postprocessing.json.
        postprocessing: a decision made elsewhere (``postprocessing_from_folder``), used when
            no postprocessing.json is given or found.
    """
    pred_dir, ref_dir = Path(pred_dir), Path(ref_dir)
    info = describe_dataset(pred_dir, ref_dir, None if dataset_json is None else str(dataset_json))
    references, missing, _ = pair_cases(pred_dir, ref_dir, info.file_ending)
    chosen = sorted(cases) if cases is not None else references
    absent = sorted(set(chosen) & set(missing) | set(chosen) - set(references))
    if absent:
        raise EvaluationError(f"{pred_dir}: operating points need a prediction of every case; missing: "
                              f"{', '.join(absent[:10])}")
    with_probabilities = [c for c in chosen if (pred_dir / f"{c}{PROBABILITIES_ENDING}").is_file()]
    if thresholds is None:
        thresholds = DEFAULT_THRESHOLDS if with_probabilities and len(with_probabilities) == len(chosen) else ()
    thresholds = _check_thresholds(thresholds)
    if thresholds and len(with_probabilities) != len(chosen):
        lacking = sorted(set(chosen) - set(with_probabilities))
        raise EvaluationError(f"{pred_dir}: thresholds need nnU-Net's probabilities (CASE{PROBABILITIES_ENDING}, "
                              f"predict with --save_probabilities) of every case; missing for {', '.join(lacking[:10])}")
    sizes = parse_min_sizes(min_sizes, min_sizes_mm)
    grids = [case_grid(case, pred_dir, ref_dir, info, thresholds) for case in chosen]
    result = {"format": OPERATING_POINTS_FORMAT, "name": name or pred_dir.name, "prediction_folder": str(pred_dir),
              "reference_folder": str(ref_dir),
              "settings": {"thresholds": [LABEL_MAP, *thresholds], "min_sizes": [vars(s) for s in sizes],
                           "connectivity": "face (scipy.ndimage.label's default)",
                           "probabilities": bool(thresholds), "n_cases": len(chosen),
                           "matched_levels": list(DEFAULT_MATCHED_LEVELS)},
              **operating_points(grids, sizes, _postprocessing_choice(
                  None if postprocessing_json is None else Path(postprocessing_json), pred_dir) or postprocessing)}
    if out_dir is not None:
        write_operating_points(result, Path(out_dir), plot=plot)
    return result


def write_operating_points(result: dict[str, Any], out_dir: Path, plot: bool = True) -> None:
    with replaced_outputs(out_dir, OUTPUTS) as work:
        write_json(work / JSON_FILE, result)
        with open(work / CSV_FILE, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for point in result["points"]:
                low, high = point["fpr_ci"] or ("", "")
                row = {**point, "fpr_ci_low": low, "fpr_ci_high": high}
                writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        if plot:
            from pu_nnunet.evaluation.operating_points_plot import plot_curves

            plot_curves({result["name"]: result}, work / PLOT_FILE)


def read_operating_points(path: str | Path) -> dict[str, Any]:
    content = read_json(path, JSON_FILE, dict)
    if content.get("format") != OPERATING_POINTS_FORMAT:
        raise EvaluationError(f"{path}: not an operating_points.json of format {OPERATING_POINTS_FORMAT} "
                              f"(found {content.get('format')!r})")
    return content


def add_arguments(parser) -> None:
    """``evaluate``'s options for the operating points (one call in cli_evaluate)."""
    group = parser.add_argument_group("operating points (FPR on normal cases against lesion sensitivity)")
    group.add_argument("--operating-points", action="store_true",
                       help=f"also write {JSON_FILE}, {CSV_FILE} and {PLOT_FILE}: image-level FPR on reference-empty "
                            "cases against lesion Dice and lesion sensitivity over minimum component sizes and "
                            "softmax thresholds (thresholds need CASE.npz from --save_probabilities)")
    group.add_argument("--op-min-sizes", type=int, nargs="+", metavar="VOXELS",
                       help=f"minimum component sizes in voxels (default {' '.join(map(str, DEFAULT_MIN_SIZES))})")
    group.add_argument("--op-min-sizes-mm", type=float, nargs="+", metavar="MM",
                       help="minimum component sizes in mm^2 (2D) or mm^3 (3D), from each case's spacing")
    group.add_argument("--op-thresholds", type=float, nargs="+", metavar="P",
                       help="softmax foreground thresholds (default "
                            f"{' '.join(map(str, DEFAULT_THRESHOLDS))} when every case has CASE.npz)")
    group.add_argument("--op-postprocessing", metavar="postprocessing.json",
                       help="nnUNetv2_determine_postprocessing's choice (default PRED_DIR/postprocessing.json; "
                            "without one, nnU-Net's rule is applied to these cases)")


def run_from_arguments(args, cases: Sequence[str] | None) -> dict[str, Any] | None:
    """Runs when ``--operating-points`` was given; prints one line."""
    if not args.operating_points:
        stale = Path(args.out_dir) / JSON_FILE
        if stale.is_file():
            import warnings

            warnings.warn(f"{stale} is left from an earlier evaluation, not of these predictions; pass "
                          "--operating-points to renew it")
        return None
    result = folder_operating_points(args.pred_dir, args.ref_dir, args.out_dir, thresholds=args.op_thresholds,
                                     min_sizes=args.op_min_sizes, min_sizes_mm=args.op_min_sizes_mm,
                                     dataset_json=args.dataset_json, cases=cases,
                                     postprocessing_json=args.op_postprocessing, plot=not args.no_plots)
    default, curve = result["default_point"], result["frontier"]
    print(f"operating points: {len(result['points'])} ({len(curve)} on the frontier); label map: FPR "
          f"{default['false_positive_cases']}/{default['n_normal']}, lesion sensitivity "
          f"{default['lesions_hit']}/{default['n_lesions']}; wrote {Path(args.out_dir) / JSON_FILE}")
    return result


def compare_at_matched_sensitivity(results: dict[str, dict[str, Any]],
                                   levels: Sequence[float] = DEFAULT_MATCHED_LEVELS) -> dict[str, Any]:
    """Models (name -> operating_points.json content) side by side: the FPR of each at common
    lesion sensitivities (the levels and each model's default-point sensitivity), and at each
    model's default and nnU-Net-postprocessing points as they stand (unmatched)."""
    from pu_nnunet.evaluation.metrics.operating_points import matched_comparison

    return {"matched": matched_comparison({name: r["frontier"] for name, r in results.items()},
                                          {name: r["default_point"] for name, r in results.items()}, levels),
            "as_predicted": {name: {key: {field: r[key][field] for field in
                                          ("fpr", "false_positive_cases", "n_normal", "fpr_ci", "lesion_sensitivity",
                                           "lesions_hit", "n_lesions", "lesion_dice")}
                                    for key in ("default_point", "nnunet_postprocessing")}
                             for name, r in results.items()}}
