"""``pu-nnunet convert``: a public dataset's download -> ``$nnUNet_raw/DatasetIII_Name``.

    pu-nnunet convert {amos,isic2018,kvasir,busi} SOURCE_DIR -d ID [--name NAME] [--overwrite]
                      [--skip-bad] [-np N] [dataset options]
    pu-nnunet convert install-splits -d ID     (after nnUNetv2_plan_and_preprocess)
"""

from __future__ import annotations

import argparse
import os

HELP = "Convert AMOS 2022 CT, ISIC 2018, Kvasir-SEG or BUSI to nnU-Net's raw format (with its split)."

# name -> (default dataset name, one-line description); the converter modules are imported on use
DATASETS = {
    "amos": ("AMOS2022CT",
             "AMOS 2022 CT (amos22/ folder: dataset.json, imagesTr, labelsTr, imagesVa, labelsVa, imagesTs)"),
    "isic2018": ("ISIC2018", "ISIC 2018 Task 1 (folder with ISIC2018_Task1-2_Training_Input, "
                             "ISIC2018_Task1_Training_GroundTruth, ...)"),
    "kvasir": ("KvasirSEG", "Kvasir-SEG (folder with images/ and masks/)"),
    "busi": ("BUSI", "BUSI (Dataset_BUSI_with_GT/ folder with benign/, malignant/, normal/)"),
}
# process count when neither -np nor nnUNet_def_n_proc is given: enough to help, modest on a laptop
FALLBACK_PROCESSES = 4


def _default_processes() -> int:
    configured = os.environ.get("nnUNet_def_n_proc")
    if configured and configured.isdigit():
        return max(1, int(configured))
    return max(1, min(FALLBACK_PROCESSES, os.cpu_count() or 1))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET")
    sub.required = True
    for key, (default_name, description) in DATASETS.items():
        p = sub.add_parser(key, help=description, description=f"Convert {description} to $nnUNet_raw/DatasetIII_Name.")
        p.add_argument("source_dir", metavar="SOURCE_DIR", help="the extracted download")
        p.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1-999)")
        p.add_argument("--name", default=default_name, help=f"dataset name (default: {default_name})")
        p.add_argument("--overwrite", action="store_true", help="replace an existing DatasetIII_Name")
        p.add_argument("--skip-bad", action="store_true",
                       help="leave out unreadable or inconsistent cases (listed at the end) instead of stopping")
        p.add_argument("-np", dest="num_processes", type=int, default=None,
                       help="worker processes (default: $nnUNet_def_n_proc, else up to 4)")
        if key == "amos":
            p.add_argument("--val-as-test", action="store_true",
                           help="keep the official validation cases aside as imagesTs/labelsTs (default: train on "
                                "training + validation, fold 0 of the split = official training/validation)")
        if key == "kvasir":
            p.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
            p.add_argument("--five-fold", action="store_true",
                           help="write a seeded 5-fold cross-validation instead of the 880/120 split")
        if key == "busi":
            from pu_nnunet.datasets.converters.busi import DEFAULT_TEST_FRACTION

            p.add_argument("--seed", type=int, default=0, help="seed of the splits (default: 0)")
            p.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                           help=f"share of each class held out as the test set (default: {DEFAULT_TEST_FRACTION})")
    p = sub.add_parser("install-splits", help="copy a converted dataset's splits_final.json into nnUNet_preprocessed",
                       description="Copy $nnUNet_raw/DatasetIII_Name/splits_final.json to "
                                   "$nnUNet_preprocessed/DatasetIII_Name/ (run after nnUNetv2_plan_and_preprocess).")
    p.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id")


def _convert(args: argparse.Namespace):
    common = dict(source_dir=args.source_dir, dataset_id=args.dataset_id, name=args.name, overwrite=args.overwrite,
                  skip_bad=args.skip_bad,
                  num_processes=args.num_processes if args.num_processes is not None else _default_processes())
    if args.dataset == "amos":
        from pu_nnunet.datasets.converters.amos import convert_amos

        return convert_amos(**common, val_as_test=args.val_as_test)
    if args.dataset == "isic2018":
        from pu_nnunet.datasets.converters.isic2018 import convert_isic2018

        return convert_isic2018(**common)
    if args.dataset == "kvasir":
        from pu_nnunet.datasets.converters.kvasir import convert_kvasir

        return convert_kvasir(**common, seed=args.seed, five_fold=args.five_fold)
    from pu_nnunet.datasets.converters.busi import convert_busi

    return convert_busi(**common, seed=args.seed, test_fraction=args.test_fraction)


def output_paths(args: argparse.Namespace) -> list:
    """The dataset folder a conversion writes: one run at a time (pu_nnunet/cli.py locks it)."""
    from pu_nnunet.datasets.shared.raw_folder import dataset_folder_name, raw_root_from_environment

    if args.dataset == "install-splits":
        return []  # one file copied by an atomic rename
    return [raw_root_from_environment() / dataset_folder_name(args.dataset_id, args.name)]


def run(args: argparse.Namespace) -> int:
    if args.dataset == "install-splits":
        from pu_nnunet.datasets.shared.splits import install_splits

        print(f"wrote {install_splits(args.dataset_id)}")
    else:
        print(_convert(args).format())
    return 0
