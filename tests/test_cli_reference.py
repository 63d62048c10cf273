"""docs/reference/cli.md is generated from the argparse definitions (issue 28): it must equal what
``python -m pu_nnunet.cli_reference`` writes now, so a changed option cannot leave it stale."""

from pu_nnunet import cli_reference
from pu_nnunet.cli import COMMANDS


def test_the_committed_cli_reference_is_what_the_code_generates():
    assert cli_reference.REFERENCE_FILE.read_text(encoding="utf-8") == cli_reference.render(), (
        "docs/reference/cli.md is out of date: run python -m pu_nnunet.cli_reference and commit it")


def test_it_documents_every_command_and_nnunets_spellings():
    text = cli_reference.render()
    for name in COMMANDS:
        assert f"## pu-nnunet {name}\n" in text
    assert "--continue, --continue_prediction, --c" in text and "--chk NAME, -chk NAME" in text
