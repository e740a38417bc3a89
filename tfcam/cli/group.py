"""The ``tfcam`` group: logging to stderr, and exceptions mapped to exit codes and one line.

Exit codes: 0 success; 2 a usage or input error (one line on stderr naming the bad value and the
valid choices, no traceback); 1 anything unexpected; 130 when interrupted.

Ctrl-C: the first one raises ``KeyboardInterrupt``, so that the command stops where it is, its
``finally`` blocks remove their temporary files and a run records ``interrupted``; it ends with
130. A second one ends the process at once (still 130), after removing the temporary files of the
atomic writes in progress: every file is either its old or its new self, never half-written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback

import click

from tfcam import __version__, progress
from tfcam.errors import TrainingDiverged, UserError, file_error_message

log = logging.getLogger("tfcam")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"tfcam: {record.levelname.lower()}: {msg}"
        return f"tfcam: {msg}"


class _TerminalHandler(logging.Handler):
    """Writes through :func:`tfcam.progress.write_line`: to the same terminal as the progress
    bar, which it clears and draws again below the message."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            progress.write_line(self.format(record))
        except Exception:
            self.handleError(record)


def setup_logging(quiet: bool) -> None:
    """tfcam's log lines on stderr, ``tfcam: …``; only warnings and errors when ``quiet``.

    Progress (:mod:`tfcam.progress`) is a redrawn bar on a terminal; with ``quiet``, or in a pipe
    or a file, a plain line at most every five seconds.
    """
    log.handlers[:] = []
    progress.configure("lines" if quiet else "auto")
    handler = _TerminalHandler()
    handler.setFormatter(_Formatter())
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def fail(message: str, code: int) -> None:
    """One line on stderr, ``tfcam: error: …``, and the exit code."""
    click.echo(f"tfcam: error: {message}", err=True)
    if code == 130 and _interrupts["installed"]:
        # Interrupted, and every file is already whole: leave now. Python's shutdown resets the
        # Ctrl-C handler, so a second Ctrl-C during TensorFlow's slow teardown would otherwise
        # kill the process by the signal instead of exiting with 130.
        from tfcam.cli.stderr import drain_stderr

        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        drain_stderr()
        os._exit(130)
    sys.exit(code)


_interrupts = {"count": 0, "installed": False}


def _on_sigint(signum, frame) -> None:
    _interrupts["count"] += 1
    if _interrupts["count"] == 1:
        raise KeyboardInterrupt
    from tfcam.cli.stderr import terminal_fd
    from tfcam.io import discard_pending

    discard_pending()
    try:
        os.write(terminal_fd(), b"\ntfcam: error: interrupted (stopped at once)\n")
    finally:
        os._exit(130)


def handle_interrupts() -> None:
    """Installs the Ctrl-C handler described above, for the whole process (the console script
    calls it; an in-process ``CliRunner`` keeps its host's handler)."""
    if threading.current_thread() is threading.main_thread():
        _interrupts["count"] = 0
        _interrupts["installed"] = True
        signal.signal(signal.SIGINT, _on_sigint)


#: ``tfcam --help`` lists commands in the order a person uses them, each with a whole one-line
#: summary (click would cut a long docstring sentence at ~45 characters with "…"); a command not
#: named here follows, alphabetically, with the first sentence of its help.
WORKFLOW = {
    "experiments": "List the bundled experiments, one line each.",
    "backbones": "List the backbones: family, source, parameters, size, explanation layer.",
    "config": "Print an experiment's resolved config as commented YAML.",
    "fit": "Train an experiment (or a folder of class folders) into a run directory.",
    "evaluate": "Accuracy, loss and per-class precision/recall/F1 of a run on a split.",
    "predict": "Predict the class of images and folders of images with a run's model.",
    "explain": "Heatmaps for images and folders: Grad-CAM and its family, gradients.",
    "features": "Feature-map grids: a layer's activations, one small map per channel.",
    "evaluate-cams": "Which heatmap to trust: pointing games, deletion/insertion, ROAD, sanity.",
    "receptive-field": "Receptive fields: size, stride and padding of every layer, per axis.",
    "report": "(Re)write a run's HTML report, RUN_DIR/report/index.html.",
    "compare": "Runs side by side: config differences, accuracy, loss, curves, a page.",
    "lr-find": "Learning-rate range test: loss against a growing rate, and a suggestion.",
    "augment-preview": "A grid of training images and their augmented copies.",
    "serve": "Explore runs in the browser: gallery, heatmaps on demand, your own images.",
}


class _Group(click.Group):
    """Lists commands in workflow order with whole summaries; maps exceptions to exit codes and
    one-line messages."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        rank = {name: i for i, name in enumerate(WORKFLOW)}
        return sorted(self.commands, key=lambda n: (rank.get(n, len(rank)), n))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """One row per command with its whole summary (:data:`WORKFLOW`)."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, WORKFLOW.get(name) or cmd.get_short_help_str(limit=10**6)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "tfcam",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort as e:
            # click turns Ctrl-C (KeyboardInterrupt) into Abort outside standalone mode: that is
            # an interruption (130), not the "aborted" of a declined prompt (1).
            if isinstance(e.__cause__, KeyboardInterrupt) or _interrupts["count"]:
                fail("interrupted", 130)
            fail("aborted", 1)
        except click.ClickException as e:
            fail(" ".join(e.format_message().split()), 2)
        except UserError as e:
            fail(" ".join(str(e).split()), 2)
        except TrainingDiverged as e:
            fail(str(e), 1)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except OSError as e:
            message = file_error_message(e)
            if message is None:
                traceback.print_exc()
                fail(f"unexpected {type(e).__name__}: {e}", 1)
            fail(message, 2)
        except Exception as e:
            traceback.print_exc()
            fail(f"unexpected {type(e).__name__}: {e}", 1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="tfcam")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def cli(quiet: bool) -> None:
    """Transfer learning for image classification, and the heatmaps that show why.

    \b
    Start here:
      tfcam fit                       train the synthetic shapes default (no download)
      tfcam fit ~/photos              train on your class folders (or train/ val/ of them)
      tfcam experiments               list the bundled experiments
      tfcam config shapes             an experiment's resolved config, commented
      tfcam explain RUN photo.jpg     a Grad-CAM of a run's prediction
    """
    setup_logging(quiet)
