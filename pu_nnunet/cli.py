"""The ``pu-nnunet`` command: one subcommand per part of the package.

Each subcommand lives in the module of the part it belongs to; that module exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported
only when their subcommand runs, so ``pu-nnunet trainer-path`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module implementing it (see the module docstring for the protocol)
COMMANDS: dict[str, str] = {
    "trainer-path": "pu_nnunet.trainers.cli_trainer_path",
    "synth": "pu_nnunet.datasets.cli_synth",
    "convert": "pu_nnunet.datasets.cli_convert",
    "evaluate": "pu_nnunet.evaluation.cli_evaluate",
    "compare": "pu_nnunet.evaluation.cli_compare",
    "predict": "pu_nnunet.inference.cli_predict",
    "demo": "pu_nnunet.demo.cli_demo",
    "study": "pu_nnunet.study.cli_study",
}


def _available_commands() -> dict[str, str]:
    """Subcommands whose module is installed (parts may land one at a time)."""
    found = {}
    for name, module in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = module
    return found


def build_parser(commands: dict[str, str], only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pu-nnunet",
        description="Product-unit residual U-Nets for nnU-Net v2: data, training helpers, evaluation.",
    )
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
        sp.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _available_commands()
    chosen = argv[0] if argv and argv[0] in commands else None
    parser = build_parser(commands, only=chosen)
    if chosen is None:
        # no or unknown subcommand: build the full help so the user sees every command
        parser = build_parser(commands)
    args = parser.parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
