"""The ``tfcam`` command line: a thin shell over the library.

Each command parses its options, calls one library function and prints; TensorFlow is imported
inside the commands that need it, never at module level, so ``tfcam --help`` and every ``--help``
answer at once. The group and its exit codes are :mod:`tfcam.cli.group`; shared options
:mod:`tfcam.cli.options`; the commands live in one module per group: :mod:`~tfcam.cli.training`,
:mod:`~tfcam.cli.runs`, :mod:`~tfcam.cli.explanations`, :mod:`~tfcam.cli.receptive_field`.
"""

from __future__ import annotations

import sys

from tfcam.cli import explanations, receptive_field, runs, serve, training  # noqa: F401 - registers
from tfcam.cli.group import cli, handle_interrupts


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    handle_interrupts()
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 prints as \xNN
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    cli.main(args=argv, prog_name="tfcam")


__all__ = ["cli", "main"]
