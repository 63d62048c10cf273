"""``pu-nnunet plans -d D -p SOURCE -o NAME``: plans that make any trainer train the PU network."""

from __future__ import annotations

import argparse

from pu_nnunet.architectures.stage_selection import DEFAULT_PLACEMENT, PLACEMENTS
from pu_nnunet.product_units.positivity import positivity_choices

HELP = ("write plans that build the PU residual-encoder U-Net (and the matched baseline's) beside nnU-Net's plans, "
        "so that any trainer (stock nnUNetTrainer, schedule variants, your own) trains it with -p NAME")


def _stages(value: str):
    if value in PLACEMENTS:
        return value
    try:
        return [int(part) for part in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: a placement ({', '.join(PLACEMENTS)}) or stage indices like "
                                         "3,4 or -1 (negative: from the bottleneck)") from None


def _clip(value: str):
    if value.lower() == "none":
        return None
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: a positive number or none") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: a positive finite number or none")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-d", dest="dataset_id", type=int, required=True, metavar="DATASET_ID",
                        help="nnU-Net dataset id (its plans in $nnUNet_preprocessed/DatasetXXX_Name)")
    parser.add_argument("-p", dest="source_plans", default="nnUNetPlans", metavar="PLANS",
                        help="source plans identifier (default nnUNetPlans; e.g. nnUNetResEncUNetMPlans)")
    parser.add_argument("-o", dest="name", required=True, metavar="NAME",
                        help="identifier of the PU plans; the baseline's is NAME + 'Baseline' (train with -p NAME)")
    parser.add_argument("--pu-stages", type=_stages, default=DEFAULT_PLACEMENT, metavar="STAGES",
                        help=f"where the PU blocks go: {', '.join(PLACEMENTS)} or stage indices (3,4; -1 = the "
                             f"bottleneck); default {DEFAULT_PLACEMENT}")
    parser.add_argument("--pu-positivity", choices=positivity_choices(), default="softplus",
                        help="a registered positivity mapping: softplus (stable, default), threshold (PURe's), or "
                             "one registered with pu_nnunet.product_units.register_positivity")
    parser.add_argument("--pu-log-input-clip", type=_clip, default="6.0", metavar="C",
                        help="clamp of log(pos(x)) to [-C, C]; none switches it off (default 6)")
    parser.add_argument("--pu-log-output-clip", type=_clip, default="10.0", metavar="C",
                        help="clamp before exp; none switches it off (default 10)")
    parser.add_argument("--no-nonlin-after-add", dest="nonlin_after_add", action="store_false",
                        help="drop the LeakyReLU after the residual add of PU blocks (as PURe's classifiers)")
    parser.add_argument("--overwrite", action="store_true", help="replace NAME.json / NAMEBaseline.json")


def _preprocessed_dataset(dataset_id: int):
    from pu_nnunet.datasets.shared.raw_folder import NNUNET_PREPROCESSED_ENV, folder_from_environment
    from pu_nnunet.datasets.shared.splits import find_raw_dataset

    return find_raw_dataset(folder_from_environment(NNUNET_PREPROCESSED_ENV), dataset_id)


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes: the two plans files (locked while it runs)."""
    from pu_nnunet.trainers.pu_plans import BASELINE_SUFFIX

    folder = _preprocessed_dataset(args.dataset_id)
    return [folder / f"{args.name}.json", folder / f"{args.name}{BASELINE_SUFFIX}.json"]


OUTPUTS_ARE_FILES = True


def run(args: argparse.Namespace) -> int:
    from pu_nnunet.trainers.pu_plans import PlansError, pu_options, write_pu_plans

    if not args.name or "/" in args.name or args.name.startswith("."):
        raise PlansError(f"-o {args.name!r}: a plans identifier is a file name in the dataset's folder")
    options = pu_options(args.pu_stages, args.pu_positivity, args.pu_log_input_clip, args.pu_log_output_clip,
                         args.nonlin_after_add)
    pu, baseline = write_pu_plans(_preprocessed_dataset(args.dataset_id), args.source_plans, args.name, options,
                                  args.overwrite)
    print(f"wrote {pu} (PU residual-encoder U-Net, PU blocks: {options['pu_stages']}) and {baseline} (the matched "
          f"baseline)\ntrain with: nnUNetv2_train {args.dataset_id} CONFIGURATION FOLD -p {args.name}  "
          f"(any trainer; -p {args.name}Baseline for the baseline)")
    return 0
