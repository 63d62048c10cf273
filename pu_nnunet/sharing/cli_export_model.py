"""``pu-nnunet export-model``: a trained model folder as nnU-Net's model zip with a model card."""

import argparse
import shlex
from pathlib import Path

HELP = ("export a trained model folder as nnU-Net's model zip (installable with "
        "nnUNetv2_install_pretrained_model_from_zip) with a README model card: what to install, validation, provenance")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR",
                        help="trained model folder: nnUNet_results/DatasetX/<trainer>__<plans>__<configuration>")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.zip", help="zip file to write")
    parser.add_argument("-f", "--folds", nargs="+", metavar="F",
                        help="folds to export (numbers or 'all'; default: every fold_N with the checkpoint)")
    parser.add_argument("--chk", default="checkpoint_final.pth", metavar="NAME",
                        help="checkpoint file of each fold (default checkpoint_final.pth)")
    parser.add_argument("--data-license", metavar="TEXT",
                        help="terms under which the training data (and so the model) may be used, for the model card")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE.zip when it exists")


# the outputs are files in an existing folder (pu_nnunet/cli.py)
OUTPUTS_ARE_FILES = True


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes (FILE.zip): one run at a time (pu_nnunet/cli.py locks it)."""
    return [args.output]


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.sharing.export_model import ExportRequest, export_model

    request = ExportRequest(model_dir=Path(args.model_dir), output=Path(args.output), folds=args.folds,
                            checkpoint=args.chk, data_license=args.data_license, overwrite=args.overwrite)
    card_name, _ = export_model(request)
    # quoted: a path with spaces or shell characters must paste into a shell as one argument
    print(f"wrote {shlex.quote(str(request.output))} (nnU-Net's model zip; model card {card_name})")
    print(f"install: nnUNetv2_install_pretrained_model_from_zip {shlex.quote(str(request.output))}")
    return 0
