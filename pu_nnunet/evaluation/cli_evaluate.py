"""``pu-nnunet evaluate PRED_DIR REF_DIR -o OUT_DIR``: Dice, IoU, NSD, HD95 and case-level FP/FN rates."""

from __future__ import annotations

import argparse
from pathlib import Path

from pu_nnunet.devices import add_device_argument
from pu_nnunet.evaluation import operating_points
from pu_nnunet.evaluation.metrics.boundary import DEFAULT_NSD_TOLERANCE
from pu_nnunet.evaluation.metrics.case_metrics import DEFAULT_MIN_SIZE

HELP = ("Score predictions against references: Dice, IoU, NSD, HD95, case-level false-positive rate, report and "
        "plots.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted segmentations (CASE.ext)")
    parser.add_argument("ref_dir", metavar="REF_DIR", help="folder of reference segmentations (e.g. labelsTr)")
    parser.add_argument("-o", "--output", dest="out_dir", required=True, metavar="OUT_DIR",
                        help="folder for metrics.json, per_case.csv, report.md and plots/")
    add_device_argument(parser, "where label counts are computed")
    parser.add_argument("--labels", type=int, nargs="+", metavar="L",
                        help="label values to evaluate (default: dataset.json's labels, else every non-zero "
                             "value found; a region-based dataset.json's regions are evaluated as nnU-Net does, "
                             "without --labels)")
    parser.add_argument("--min-size", type=int, default=DEFAULT_MIN_SIZE, metavar="K",
                        help="predicted voxels that make a reference-empty case a false positive, and below "
                             "which a case with the label is a false negative: the case-level detection flags "
                             "only; Dice, IoU, NSD, HD95 and every averaging protocol count every voxel "
                             f"(default {DEFAULT_MIN_SIZE})")
    parser.add_argument("--nsd-tolerance", nargs="+", action="extend", metavar="MM|LABEL=MM",
                        help="tolerance of the normalised surface distance in mm (pixels for 2D images): one "
                             "value for every label and/or LABEL=MM for one label value (or foreground=MM), e.g. "
                             f"--nsd-tolerance 2 1=1.5 (default {DEFAULT_NSD_TOLERANCE:g} for every label; "
                             "Metrics Reloaded advises a task-specific value such as the inter-rater variation)")
    parser.add_argument("--no-boundary", action="store_true",
                        help="skip NSD and HD95: their surface distances take far longer than the voxel counts "
                             "on large volumes (benchmarks/bench_evaluation.py times both)")
    parser.add_argument("--meta", metavar="cases.json",
                        help="case id -> {\"class\": ..., \"split\": ...}; adds per-class aggregates")
    parser.add_argument("--images", metavar="DIR",
                        help="nnU-Net images folder (CASE_0000 files) for the overlays; without it the "
                             "contours are drawn on a blank background")
    parser.add_argument("--dataset-json", metavar="FILE",
                        help="dataset.json (labels, file ending, reader); default PRED_DIR/dataset.json, "
                             "else REF_DIR/../dataset.json, else inferred from the files")
    parser.add_argument("-np", "--num-processes", type=int, default=1, metavar="N",
                        help="processes reading cases (on the CPU also counting and measuring surface "
                             "distances; default 1)")
    parser.add_argument("--split-file", metavar="splits_final.json",
                        help="with --fold: evaluate only that fold's validation cases (e.g. Kvasir-SEG's 120 "
                             "test images, nnU-Net's fold_0/validation predictions)")
    parser.add_argument("--fold", type=int, metavar="F", help="fold of --split-file")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in OUT_DIR")
    parser.add_argument("--reference-is-a-prediction", action="store_true",
                        help="REF_DIR is another model's predictions (agreement between two models): accept it "
                             "although it looks like a prediction folder and PRED_DIR does not")
    operating_points.add_arguments(parser)


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes (OUT_DIR): one run at a time (pu_nnunet/cli.py locks it)."""
    return [args.out_dir]


# what a folder of predictions holds and a folder of references does not: pu-nnunet predict's
# model record, nnUNetv2_predict's record of its arguments, nnU-Net's validation summary, and
# softmax probabilities (--save_probabilities)
PREDICTION_MARKERS = ("model_record.json", "predict_from_raw_data_args.json", "summary.json")
PROBABILITIES_GLOB = "*.npz"


def prediction_markers(folder: Path) -> list[str]:
    """The marks of a prediction folder that ``folder`` holds."""
    found = [name for name in PREDICTION_MARKERS if (folder / name).is_file()]
    probabilities = next(folder.glob(PROBABILITIES_GLOB), None) if folder.is_dir() else None
    return found + ([probabilities.name] if probabilities is not None else [])


def check_not_swapped(pred_dir: Path, ref_dir: Path, reference_is_a_prediction: bool) -> None:
    """``evaluate PRED REF`` is the reverse of ``nnUNetv2_evaluate_folder GT PRED``; swapped folders
    give the same Dice (it is symmetric) but exchange false positives and false negatives, so a
    REF_DIR that looks like predictions beside a PRED_DIR that does not is refused."""
    from pu_nnunet.evaluation.errors import EvaluationError

    in_reference = prediction_markers(ref_dir)
    if in_reference and not prediction_markers(pred_dir) and not reference_is_a_prediction:
        raise EvaluationError(f"{ref_dir}: REF_DIR looks like a folder of predictions (it holds {in_reference[0]}) and "
                              f"PRED_DIR {pred_dir} does not: are the folders swapped? pu-nnunet evaluate takes "
                              "PRED_DIR first, then REF_DIR (nnUNetv2_evaluate_folder takes the reference first); "
                              "swap them, or pass --reference-is-a-prediction to score against another model")


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.evaluation.errors import EvaluationError
    from pu_nnunet.evaluation.evaluate import cases_of_fold, evaluate_folders
    from pu_nnunet.evaluation.metrics.boundary import parse_tolerances
    from pu_nnunet.evaluation.report.markdown import number
    from pu_nnunet.nnunet_validation import validation_problem

    if Path(args.pred_dir).resolve() == Path(args.ref_dir).resolve():
        # refused, not warned: every score would be 1 by construction, a result that measures nothing
        raise EvaluationError(f"{args.pred_dir}: PRED_DIR and REF_DIR are the same folder; every case would score "
                              "Dice 1. Give the predictions and the references")
    check_not_swapped(Path(args.pred_dir), Path(args.ref_dir), args.reference_is_a_prediction)
    for folder in (args.pred_dir, args.ref_dir):  # a half-written nnU-Net validation is no result
        if validation_problem(folder):
            raise EvaluationError(validation_problem(folder))
    if (args.split_file is None) != (args.fold is None):
        raise EvaluationError("--split-file and --fold go together")
    cases = None
    if args.split_file is not None:
        cases = cases_of_fold(args.split_file, args.fold)
    results = evaluate_folders(
        args.pred_dir, args.ref_dir, args.out_dir, device=args.device, labels=args.labels, min_size=args.min_size,
        meta=args.meta, num_processes=args.num_processes, overwrite=args.overwrite, images=args.images,
        dataset_json=args.dataset_json, plots=not args.no_plots, cases=cases, split_file=args.split_file,
        boundary=not args.no_boundary, nsd_tolerance=parse_tolerances(args.nsd_tolerance))
    fg = results["aggregates"]["foreground"]
    boundary = (f"NSD {number(fg['nsd_mean'])}, HD95 median {number(fg['hd95_median'], 2)} "
                f"{results['settings']['distance_unit']}, " if "nsd_mean" in fg else "")
    print(f"{len(results['cases'])} cases ({len(results['missing_predictions'])} missing predictions), "
          f"device {results['settings']['device_used']}: foreground Dice {number(fg['dice_mean'])}, "
          f"IoU {number(fg['iou_mean'])}, {boundary}FP rate {number(fg['false_positive_rate'])} "
          f"({fg['false_positive_cases']}/{fg['n_reference_empty']}), "
          f"FN rate {number(fg['false_negative_rate'])}")
    print(f"wrote {args.out_dir}/report.md")
    operating_points.run_from_arguments(args, cases)
    return 0
