"""``pu-nnunet synth``: write a synthetic dataset to ``$nnUNet_raw/DatasetIII_Name`` (no download).

    pu-nnunet synth ct -d ID [--cases N] [--test-cases N] [--seed S] [--size Z Y X] [--spacing Z Y X] [--organs K]
    pu-nnunet synth ultrasound -d ID [--cases N] [--test-cases N] [--seed S] [--size H W]
"""

from __future__ import annotations

import argparse
import time

HELP = "Write a synthetic dataset (3D CT with organs, or 2D ultrasound with lesions) to nnU-Net's raw format."

# defaults of the command line: a dataset small enough to train on a CPU in minutes
CT_DEFAULTS = dict(name="SynthCT", cases=12, test_cases=4, size=(24, 64, 64), spacing=(3.0, 0.8, 0.8),
                   organs=3)
ULTRASOUND_DEFAULTS = dict(name="SynthUS", cases=40, test_cases=10, size=(128, 128))


def _add_common(p: argparse.ArgumentParser, defaults: dict, size_names: str) -> None:
    p.add_argument("-d", dest="dataset_id", type=int, required=True, help="nnU-Net dataset id (1-999)")
    p.add_argument("--name", default=defaults["name"], help=f"dataset name (default: {defaults['name']})")
    p.add_argument("--cases", type=int, default=defaults["cases"],
                   help=f"number of cases (default: {defaults['cases']})")
    p.add_argument("--test-cases", type=int, default=defaults["test_cases"],
                   help=f"how many of them go to imagesTs/labelsTs (default: {defaults['test_cases']})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--size", type=int, nargs=len(defaults["size"]), metavar=tuple(size_names.split()),
                   default=defaults["size"],
                   help=f"image size {size_names} (default: {' '.join(map(str, defaults['size']))})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DatasetIII_Name")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND")
    sub.required = True
    ct = sub.add_parser("ct", help="3D abdominal CT volumes (.nii.gz) with organ labels",
                        description="3D abdominal CT: body outline, organs with distinct HU, noise, "
                                    "anisotropic spacing.")
    _add_common(ct, CT_DEFAULTS, "Z Y X")
    ct.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=CT_DEFAULTS["spacing"],
                    help="voxel spacing in mm (default: 3.0 0.8 0.8)")
    ct.add_argument("--organs", type=int, default=CT_DEFAULTS["organs"],
                    help="number of organ labels, 1-5 (default: 3)")
    us = sub.add_parser("ultrasound", help="2D breast ultrasound images (.png) with lesions and normal cases",
                        description="2D ultrasound: speckle, lesions of varying contrast and shape, normal images; "
                                    "cases.json holds each case's class and split.")
    _add_common(us, ULTRASOUND_DEFAULTS, "H W")


def output_paths(args: argparse.Namespace) -> list:
    """The dataset folder this run writes: one run at a time (pu_nnunet/cli.py locks it)."""
    from pu_nnunet.datasets.shared.raw_folder import dataset_folder_name, raw_root_from_environment

    return [raw_root_from_environment() / dataset_folder_name(args.dataset_id, args.name)]


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.datasets.shared.raw_folder import raw_root_from_environment

    start = time.perf_counter()
    raw_root = raw_root_from_environment()
    common = dict(raw_root=raw_root, dataset_id=args.dataset_id, name=args.name, num_cases=args.cases,
                  num_test=args.test_cases, seed=args.seed, shape=tuple(args.size), overwrite=args.overwrite)
    if args.kind == "ct":
        from pu_nnunet.datasets.synthetic.ct import generate_synthetic_ct

        folder = generate_synthetic_ct(**common, spacing=tuple(args.spacing), num_organs=args.organs)
    else:
        from pu_nnunet.datasets.synthetic.ultrasound import generate_synthetic_ultrasound

        folder = generate_synthetic_ultrasound(**common)
    from pu_nnunet.datasets.shared.conversion import ConversionSummary
    from pu_nnunet.user_files import read_user_json

    dataset_json = read_user_json(folder / "dataset.json", "dataset.json", dict)
    print(ConversionSummary(args.dataset_id, folder, dataset_json["numTraining"], dataset_json["numTest"],
                            time.perf_counter() - start).format())
    return 0
