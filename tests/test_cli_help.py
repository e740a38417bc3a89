"""``tfcam --help`` and every subcommand's ``--help`` print what they printed before the CLI became a
package (saved copies in tests/help/, taken on c42ff39 before the move).

A deliberate change of a help text is recorded with ``TFCAM_UPDATE_HELP=1 pytest tests/test_cli_help.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tfcam.cli import cli

HELP_DIR = Path(__file__).parent / "help"
COMMANDS = [
    "",
    "augment-preview",
    "backbones",
    "compare",
    "config",
    "evaluate",
    "evaluate-cams",
    "experiments",
    "explain",
    "features",
    "fit",
    "lr-find",
    "predict",
    "receptive-field",
    "report",
    "serve",
]


def _help(command: str) -> str:
    args = [command, "--help"] if command else ["--help"]
    # A fixed width: click otherwise wraps to the terminal the tests run in.
    result = CliRunner().invoke(cli, args, prog_name="tfcam", terminal_width=100)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_has_a_saved_help_text():
    assert sorted(cli.commands) == sorted(c for c in COMMANDS if c)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c or "tfcam")
def test_help_text_is_unchanged(command):
    path = HELP_DIR / f"{command or 'tfcam'}.txt"
    text = _help(command)
    if os.environ.get("TFCAM_UPDATE_HELP") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_method_list_is_unchanged():
    """``--list-methods`` reads the method table; the move must not change what it prints."""
    path = HELP_DIR / "explain-list-methods.txt"
    result = CliRunner().invoke(cli, ["explain", "--list-methods"], prog_name="tfcam")
    assert result.exit_code == 0, result.output
    if os.environ.get("TFCAM_UPDATE_HELP") == "1":
        path.write_text(result.output, encoding="utf-8")
    assert result.output == path.read_text(encoding="utf-8")
