"""Keeping TensorFlow's native start-up chatter off the terminal.

TensorFlow writes info lines, an absl banner and (on CPU machines) a failed CUDA probe to file
descriptor 2 before its logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them all.

The filter replaces descriptor 2 by a pipe, which is not a terminal: the original descriptor is
kept and handed to :mod:`tfcam.progress`, so the progress bar is decided on (and drawn to) the
real terminal, and is not held back by the filter's line-by-line pump.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from tfcam import progress
from tfcam.startup import NATIVE_NOISE as _NATIVE_NOISE

_stderr_filter: dict = {}


def filter_native_stderr() -> None:
    """Routes file descriptor 2 through a filter that drops TensorFlow's start-up chatter.

    Only for the real terminal stderr (not under test runners), and not when TFCAM_TF_LOGS=1.
    Everything else written to stderr passes through unchanged; at exit the filter is drained.
    """
    if _stderr_filter or os.environ.get("TFCAM_TF_LOGS") == "1" or sys.stderr is not sys.__stderr__:
        return
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError):
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with (
            os.fdopen(read_end, "rb") as src,
            os.fdopen(os.dup(original), "wb", buffering=0) as dst,
        ):
            for line in src:
                if not _NATIVE_NOISE.match(line):
                    dst.write(line)

    thread = threading.Thread(target=pump, name="tfcam-stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes the pipe's last write end: the pump sees EOF
        thread.join(timeout=5)

    _stderr_filter["thread"] = thread
    _stderr_filter["original"] = original
    _stderr_filter["drain"] = drain
    progress.use_terminal(original)
    atexit.register(drain)


def quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ start-up chatter off the terminal (call before TF is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    filter_native_stderr()


def terminal_fd() -> int:
    """The file descriptor of the real stderr (the filter's pump may not run again when the
    process ends with ``os._exit``)."""
    return _stderr_filter.get("original", 2)


def drain_stderr() -> None:
    """Forwards what is still in the filter's pipe to the terminal and puts it back on fd 2 (for
    a process about to end with ``os._exit``, which skips the ``atexit`` drain)."""
    drain = _stderr_filter.pop("drain", None)
    if drain is not None:
        drain()
