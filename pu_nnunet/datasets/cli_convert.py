"""``pu-nnunet convert``: a public dataset's download -> ``$nnUNet_raw/DatasetIII_Name``.

    pu-nnunet convert {amos,isic2018,kvasir,busi,...} SOURCE_DIR -d ID [--name NAME] [--overwrite]
                      [--skip-bad] [-np N] [dataset options]
    pu-nnunet convert install-splits -d ID     (after nnUNetv2_plan_and_preprocess)
"""

from __future__ import annotations

import argparse
import os

HELP = "Convert AMOS 2022 CT, ISIC 2018, Kvasir-SEG or BUSI to nnU-Net's raw format (with its split)."
# the converters and their own options: pu_nnunet/datasets/converters/registry.py

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
    from pu_nnunet.datasets.converters.registry import CONVERTERS

    for key, converter in CONVERTERS.items():
        default_name, description = converter.default_name, converter.description
        p = sub.add_parser(key, help=description, description=f"Convert {description} to $nnUNet_raw/DatasetIII_Name.")
        p.add_argument("source_dir", metavar="SOURCE_DIR", help="the extracted download")
        p.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1-999)")
        p.add_argument("--name", default=default_name, help=f"dataset name (default: {default_name})")
        p.add_argument("--overwrite", action="store_true", help="replace an existing DatasetIII_Name")
        p.add_argument("--skip-bad", action="store_true",
                       help="leave out unreadable or inconsistent cases (listed at the end) instead of stopping")
        p.add_argument("-np", dest="num_processes", type=int, default=None,
                       help="worker processes (default: $nnUNet_def_n_proc, else up to 4)")
        # the converter's own options go to its function as keywords named by their dests
        own = [p.add_argument(*option.flags, **option.kwargs).dest for option in converter.options]
        p.set_defaults(_own_options=own)
    p = sub.add_parser("install-splits", help="copy a converted dataset's splits_final.json into nnUNet_preprocessed",
                       description="Copy $nnUNet_raw/DatasetIII_Name/splits_final.json to "
                                   "$nnUNet_preprocessed/DatasetIII_Name/ (run after nnUNetv2_plan_and_preprocess).")
    p.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id")


def _convert(args: argparse.Namespace):
    from pu_nnunet.datasets.converters.registry import CONVERTERS

    common = dict(source_dir=args.source_dir, dataset_id=args.dataset_id, name=args.name, overwrite=args.overwrite,
                  skip_bad=args.skip_bad,
                  num_processes=args.num_processes if args.num_processes is not None else _default_processes())
    own = {dest: getattr(args, dest) for dest in args._own_options}
    return CONVERTERS[args.dataset].load()(**common, **own)


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
