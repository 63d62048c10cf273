"""The ``pu-nnunet`` command: one subcommand per part of the package.

Each subcommand lives in the module of the part it belongs to; that module exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported
only when their subcommand runs, so ``pu-nnunet trainer-path`` stays instant.

Every subcommand runs inside :func:`pu_nnunet.user_errors.run_command`, so a new one reports
errors like the others without code of its own: user and OS errors as one line on stderr
(``pu-nnunet COMMAND: error: PATH: what is wrong``, exit 1), Ctrl-C and SIGTERM as one line
(exit 130 / 143), argument errors through argparse (stderr, exit 2). ``--debug`` (anywhere on
the command line) shows the traceback.

A subcommand that writes output folders or files also exposes ``output_paths(args) -> list`` (its
outputs; ``OUTPUTS_ARE_FILES = True`` when they are files, not folders); the dispatcher holds the
lock of each (pu_nnunet/output_lock.py) while the subcommand runs, so a second run into the same
output is refused, naming the first; it then removes the temporaries (``.NAME.partial-PID-HOST-TOKEN``,
:mod:`pu_nnunet.user_files`) that killed runs of this machine left where the command writes.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from pu_nnunet.cpu_threads import use_passive_waits
from pu_nnunet.user_errors import EXIT_INTERRUPTED, debug_requested, run_command

DEBUG_FLAG = "--debug"

# subcommand -> module implementing it (see the module docstring for the protocol), in the
# order data flows: data in, training set-up, training and studies, prediction, scoring, sharing
COMMANDS: dict[str, str] = {
    "synth": "pu_nnunet.datasets.cli_synth",
    "convert": "pu_nnunet.datasets.cli_convert",
    "trainer-path": "pu_nnunet.trainers.cli_trainer_path",
    "plans": "pu_nnunet.trainers.cli_plans",
    "transfer-weights": "pu_nnunet.trainers.cli_transfer_weights",
    "demo": "pu_nnunet.demo.cli_demo",
    "study": "pu_nnunet.study.cli_study",
    "predict": "pu_nnunet.inference.cli_predict",
    "export-onnx": "pu_nnunet.inference.cli_export_onnx",
    "evaluate": "pu_nnunet.evaluation.cli_evaluate",
    "compare": "pu_nnunet.evaluation.cli_compare",
    "robustness": "pu_nnunet.robustness.cli_robustness",
    "export-model": "pu_nnunet.sharing.cli_export_model",
}


def build_parser(commands: dict[str, str], only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pu-nnunet",
        description="Product-unit residual U-Nets for nnU-Net v2: data, training helpers, evaluation.",
    )
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="show the traceback of an error (allowed anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in commands.items():
        if only is not None and name != only:
            # only the chosen subcommand's module is imported; the others get a placeholder
            sub.add_parser(name)
            continue
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run, _outputs=getattr(module, "output_paths", None),
                        _output_files=getattr(module, "OUTPUTS_ARE_FILES", False))
    return parser


def deepest_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the subcommand the arguments chose (``study run``'s, not ``pu-nnunet``'s)."""
    current = parser
    while True:
        choosers = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(args, choosers[0].dest, None) if choosers else None
        if chosen not in (choosers[0].choices if choosers else {}):
            return current
        current = choosers[0].choices[chosen]


def _split_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """--debug is accepted before and after the subcommand (nested subcommands such as
    ``synth ct`` would otherwise only take it between their two words)."""
    end = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:end]
    return [a for i, a in enumerate(argv) if i >= end or a != DEBUG_FLAG], debug


def main(argv: list[str] | None = None) -> int:
    # before any subcommand imports torch: its OpenMP threads then sleep while waiting
    use_passive_waits()
    argv, debug = _split_debug_flag(list(sys.argv[1:] if argv is None else argv))
    debug = debug or debug_requested()
    commands = COMMANDS
    chosen = argv[0] if argv and argv[0] in commands else None
    try:
        # no or unknown subcommand: build the full help so the user sees every command
        parser = build_parser(commands, only=chosen) if chosen else build_parser(commands)
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # named by the (sub)command that was given, with its own usage
            deepest_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    except KeyboardInterrupt:  # Ctrl-C while the subcommand's modules are imported
        print(f"pu-nnunet{' ' + chosen if chosen else ''}: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return run_command(args.command, lambda: _run_locked(args), debug=debug)


def _run_locked(args: argparse.Namespace) -> int | None:
    from pu_nnunet.output_lock import locked_outputs

    from pathlib import Path

    from pu_nnunet.user_files import sweep_stale_temporaries

    outputs = args._outputs(args) if args._outputs else []
    with locked_outputs(outputs, files=args._output_files):
        # where the command writes its temporaries: beside an output file, inside an output folder
        for folder in dict.fromkeys(Path(p).parent if args._output_files else Path(p) for p in outputs):
            sweep_stale_temporaries(folder)
        return args._run(args)


if __name__ == "__main__":
    sys.exit(main())
