"""``pu-nnunet trainer-path``: the folder to put in nnUNet_extTrainer."""

import argparse

from pu_nnunet.trainers import EXT_TRAINER_DIR

HELP = 'print the folder for nnUNet_extTrainer: export nnUNet_extTrainer="$(pu-nnunet trainer-path)"'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print(EXT_TRAINER_DIR)
    return 0
