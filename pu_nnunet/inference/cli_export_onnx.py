"""``pu-nnunet export-onnx MODEL_DIR -o model.onnx``: each fold's network as ONNX, checked with onnxruntime."""

from __future__ import annotations

import argparse

HELP = ("Export a trained model folder's networks to ONNX (one file per fold, dynamic batch and spatial size) "
        "with a JSON of what prediction needs; checked against PyTorch with onnxruntime.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_DIR",
                        help="trained model folder: nnUNet_results/DatasetX/<trainer>__<plans>__<configuration>")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.onnx",
                        help="the ONNX file (several folds: FILE.fold_N.onnx each); FILE.json holds the metadata")
    parser.add_argument("-f", "--folds", nargs="+", metavar="F",
                        help="folds to export (numbers or 'all'; default: every fold_N with the checkpoint)")
    parser.add_argument("--chk", default="checkpoint_final.pth", metavar="NAME",
                        help="checkpoint file in each fold folder (default checkpoint_final.pth)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


# the outputs are files in an existing folder (pu_nnunet/cli.py)
OUTPUTS_ARE_FILES = True


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes (FILE.onnx (and FILE.fold_N.onnx, FILE.json)): one run at a time (pu_nnunet/cli.py locks it)."""
    return [args.output]


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.inference.onnx_export import export_onnx

    result = export_onnx(args.model, args.output, folds=args.folds, checkpoint=args.chk, overwrite=args.overwrite)
    for fold, path in result.onnx_files.items():
        print(f"fold {fold}: {path}")
    print(f"metadata: {result.metadata_file}")
    print(f"checked with onnxruntime: largest logit difference to PyTorch {result.max_abs_difference:.2e}")
    return 0
