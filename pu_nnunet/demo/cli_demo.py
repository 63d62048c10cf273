"""``pu-nnunet demo``: PURe and its matched baseline, trained, applied and compared on synthetic CT."""

from __future__ import annotations

import argparse
from pathlib import Path

from pu_nnunet.devices import add_device_argument

HELP = ("train nnUNetTrainerPURe and its matched baseline on a built-in synthetic CT dataset, predict "
        "held-out volumes and compare them (no download; ~15 min on 2 CPU cores)")

DEFAULT_WORKDIR = "pu_nnunet_demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR,
                        help=f"folder for everything the demo writes (default ./{DEFAULT_WORKDIR}); nnUNet_raw, "
                             "nnUNet_preprocessed and nnUNet_results go under it unless already set")
    parser.add_argument("--fresh", action="store_true", help="start over instead of reusing finished steps")
    add_device_argument(parser, "where nnU-Net trains and predicts", allow_index=False)


def output_paths(args: argparse.Namespace) -> list:
    """What this command writes (the work folder): one run at a time (pu_nnunet/cli.py locks it)."""
    return [args.workdir]


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from pu_nnunet.demo.pipeline import Demo, DemoSettings
    from pu_nnunet.demo.summary import format_summary
    from pu_nnunet.devices import resolve_device
    from pu_nnunet.study import api
    from pu_nnunet.user_errors import UserInputError

    start = time.perf_counter()
    # nnUNetv2_train -device takes "cpu" or "cuda", hence no GPU index
    device = resolve_device(args.device, allow_index=False)
    api.show_progress("pu-nnunet demo")  # this process's lines and the jobs' own
    demo = Demo(DemoSettings(workdir=Path(args.workdir).resolve(), device=device.type), echo_jobs=True)
    if args.fresh:
        demo.remove_previous_run()
    try:
        result = demo.run()
    except api.StepFailed as error:
        raise UserInputError(str(error)) from error
    except api.Interrupted:
        print("pu-nnunet demo: interrupted; run it again to resume", file=sys.stderr)
        return 143
    print(format_summary(result, demo))
    print(f"Demo finished in {time.perf_counter() - start:.0f} s.")
    return 0
