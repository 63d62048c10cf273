"""``docs/reference/cli.md``, generated from the argparse definitions of every subcommand, so the
reference cannot drift from the code (tests/test_cli_reference.py fails when the committed file
differs from what this writes).

    python -m pu_nnunet.cli_reference            # rewrites docs/reference/cli.md
    python -m pu_nnunet.cli_reference --check    # exit 1 when the file is out of date
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REFERENCE_FILE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "cli.md"
# argparse wraps help text to the terminal; a fixed width makes the file the same everywhere
HELP_WIDTH = "100"


def _parsers(parser: argparse.ArgumentParser, path: list[str]):
    """(command words, parser) of a parser and every subcommand under it, depth first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _parsers(child, path + [name])


def render() -> str:
    from pu_nnunet.cli import COMMANDS, build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_WIDTH
    try:
        parser = build_parser(COMMANDS)
        lines = ["# Command reference", "",
                 "Generated from the commands' own argument definitions by `python -m pu_nnunet.cli_reference`; "
                 "do not edit by hand (a test fails when this file and the code disagree). Every command also "
                 "takes `--debug` (show the traceback of an error).", ""]
        sections = list(_parsers(parser, []))[1:]
        lines += [f"- [`pu-nnunet {' '.join(words)}`](#{'-'.join(['pu-nnunet', *words])})" for words, _ in sections]
        for words, sub in sections:
            lines += ["", f"## pu-nnunet {' '.join(words)}", "", "```text", sub.format_help().rstrip(), "```"]
        return "\n".join(lines) + "\n"
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write (or --check) docs/reference/cli.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = REFERENCE_FILE.read_text(encoding="utf-8") if REFERENCE_FILE.is_file() else ""
        if current != text:
            print(f"{REFERENCE_FILE} is out of date: run python -m pu_nnunet.cli_reference", file=sys.stderr)
            return 1
        return 0
    REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
