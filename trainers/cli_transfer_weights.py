"""``pu-nnunet transfer-weights``: a checkpoint's weights for another trainer's network, as a file
``nnUNetv2_train -pretrained_weights`` accepts (see :mod:`pu_nnunet.trainers.transfer_weights`)."""

import argparse
import re
import shlex
from collections import Counter
from pathlib import Path

HELP = ("copy a trained checkpoint's weights into another trainer's network of the same plans (ResEnc or "
        "baseline -> PURe, PURe -> baseline) for nnUNetv2_train -pretrained_weights")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE_CHECKPOINT",
                        help="nnU-Net checkpoint to start from (a fold's checkpoint_final.pth)")
    parser.add_argument("--plans", required=True, metavar="PLANS",
                        help="plans file the target trains with (nnUNet_preprocessed/DatasetX/nnUNetPlans.json or a "
                             "model folder's plans.json); the source must have been trained with the same network")
    parser.add_argument("--configuration", "-c", required=True, metavar="C", help="configuration, e.g. 2d or 3d_fullres")
    parser.add_argument("--to", "-tr", required=True, metavar="TRAINER", dest="trainer",
                        help="trainer that will train from these weights, e.g. nnUNetTrainerPURe")
    parser.add_argument("-o", "--output", required=True, metavar="FILE.pth", help="file to write")
    parser.add_argument("--dataset-json", metavar="FILE",
                        help="dataset.json of the target dataset (default: dataset.json beside PLANS)")
    parser.add_argument("--overwrite", action="store_true", help="replace FILE.pth when it exists")


def _print_keys(title: str, keys: list[str]) -> None:
    """One line per kind of tensor (stage and block numbers as *), with how many there are; the
    full list is in the written file. Shared modules appear under several names in a state dict
    (the decoder holds the encoder), so each tensor kind is counted under each of its names."""
    print(title)
    for pattern, count in Counter(re.sub(r"\.\d+(?=\.)", ".*", key) for key in keys).items():
        print(f"  {count:5d}  {pattern}")


# the outputs are files in an existing folder (pu_nnunet/cli.py)
OUTPUTS_ARE_FILES = True


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes (FILE.pth): one run at a time (pu_nnunet/cli.py locks it)."""
    return [args.output]


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.trainers.transfer_weights import TransferError, save_pretrained_weights, transfer_checkpoint

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise TransferError(f"{output}: already exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise TransferError(f"{output.parent}: folder not found")
    dataset_json = Path(args.dataset_json) if args.dataset_json else Path(args.plans).parent / "dataset.json"
    result, record = transfer_checkpoint(args.source, args.plans, args.configuration, args.trainer, dataset_json)
    save_pretrained_weights(result, record, output)
    print(f"{args.source} ({record['source_trainer'] or 'trainer not recorded'}) -> {args.trainer}, "
          f"plans {record['plans_name']}, configuration {args.configuration}")
    print(f"copied {len(result.copied)} tensors, initialised {len(result.initialised)}, dropped {len(result.dropped)} "
          f"(the target network has {len(result.weights)})")
    if result.initialised:
        _print_keys(f"initialised by {args.trainer} (not in the source, or a segmentation head, which nnU-Net's "
                    "-pretrained_weights never loads):", result.initialised)
    if result.dropped:
        _print_keys("dropped (no place for them in the target network, or a segmentation head):", result.dropped)
    print(f"wrote {output}; train with: nnUNetv2_train DATASET {args.configuration} FOLD -tr {args.trainer} "
          f"-p {record['plans_name']} -pretrained_weights {shlex.quote(str(output))}")
    return 0
