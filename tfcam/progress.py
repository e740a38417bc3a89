"""One progress style for every long step: scanning, downloading, explaining, evaluating, drawing.

Library code opens a task around a loop and advances it::

    from tfcam.progress import task

    with task("Explaining", total=len(files), unit="image") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))

What the user sees is decided once for the process, not by each caller:

* ``bar`` — on a terminal: one line redrawn in place (``\\r``) with a bar, the count, the share
  done, the rate and the time left; it ends with the total time when the task finishes.
* ``lines`` — in a pipe, a file, a notebook or under ``tfcam --quiet``: at most one plain line
  every :data:`INTERVAL` seconds, and a closing line for a task that printed any. A task that
  ends within the interval prints nothing, so short calls in a notebook stay silent.
* ``off`` — nothing.

The default, ``auto``, is ``bar`` when the terminal stream is a TTY and ``lines`` otherwise. The
terminal stream is ``sys.stderr``, or the original file descriptor 2 that the command line keeps
when it routes descriptor 2 through its TensorFlow-noise filter (:func:`use_terminal`): the
filter's pipe is not a TTY, so the decision must be made on what it replaced. Progress never
goes to stdout, so ``--json`` output stays parseable. Override with :func:`configure` (e.g.
``tfcam.progress.configure("off")`` in a notebook) or the ``TFCAM_PROGRESS`` environment
variable (``bar``, ``lines`` or ``off``). Keras's own progress bar during training is left as
it is.

This module is at the bottom of the import order: no TensorFlow, nothing from tfcam.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

MODES = ("auto", "bar", "lines", "off")
#: Seconds between two lines in ``lines`` mode.
INTERVAL = 5.0
#: Seconds between two redraws of the bar.
REDRAW = 0.1

_settings: dict = {"mode": "auto", "fd": None, "stream": None}
_lock = threading.RLock()
_active: list[Task] = []


def configure(mode: str = "auto") -> None:
    """Chooses how progress shows for the rest of the process.

    Args:
        mode: ``auto`` (a bar on a terminal, periodic lines elsewhere), ``bar``, ``lines`` or
            ``off``.

    Raises:
        ValueError: An unknown mode.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown progress mode '{mode}'. Choose from: {', '.join(MODES)}")
    _settings["mode"] = mode


def use_terminal(fd: int | None) -> None:
    """Makes progress (and :func:`write_line`) write to file descriptor ``fd`` instead of
    ``sys.stderr``: the real terminal when descriptor 2 has been replaced by a filter's pipe."""
    with _lock:
        stream = _settings.pop("stream", None)
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        _settings["fd"] = fd
        _settings["stream"] = None


def stream() -> TextIO:
    """Where progress goes: the kept terminal descriptor, else the current ``sys.stderr``."""
    fd = _settings["fd"]
    if fd is None:
        return sys.stderr
    if _settings.get("stream") is None:
        _settings["stream"] = open(  # noqa: SIM115 - lives as long as the process
            fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False
        )
    return _settings["stream"]


def _is_tty(out: TextIO) -> bool:
    try:
        return out.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, OSError, ValueError):
        return False


def mode() -> str:
    """The mode in force now: ``bar``, ``lines`` or ``off`` (``auto`` resolved)."""
    chosen = os.environ.get("TFCAM_PROGRESS", "").strip().lower() or _settings["mode"]
    if chosen not in MODES:
        chosen = "auto"
    if chosen == "auto":
        return "bar" if _is_tty(stream()) else "lines"
    return chosen


def write_line(text: str) -> None:
    """Writes one line to the progress stream without tearing an active bar: the bar's line is
    cleared, the text written, and the bar drawn again below it (for log messages)."""
    with _lock:
        out = stream()
        bars = [t for t in _active if t.style == "bar" and t.drawn]
        if bars:
            out.write("\r\x1b[K")
        out.write(text + "\n")
        for t in bars[-1:]:
            t.draw(force=True)
        out.flush()


def _plural(unit: str, n: float) -> str:
    if not unit or unit == "B" or n == 1 or unit.endswith("s"):
        return unit
    return unit + "es" if unit.endswith(("ch", "sh", "x")) else unit + "s"


def format_count(n: float, unit: str) -> str:
    """``1,234`` for counts; ``12.3 MB`` (powers of 1000, as downloads are sized) for bytes."""
    if unit != "B":
        return f"{int(n):,}"
    for factor, prefix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= factor:
            return f"{n / factor:.1f} {prefix}"
    return f"{int(n)} B"


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:05`` or ``1:02:03`` (whole seconds, rounded up so a wait never shows 0:00
    while time is left)."""
    s = max(0, int(-(-round(seconds, 3) // 1)))  # round first: 5.0000001 s is 0:05
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_rate(rate: float, unit: str) -> str:
    """``3.1 images/s``, ``2.4 MB/s``; slow rates as ``12.0 s/image``."""
    if unit == "B":
        return format_count(rate, "B") + "/s"
    if 0 < rate < 0.1:
        return f"{1 / rate:.1f} s/{unit or 'step'}"
    return f"{rate:.1f} {_plural(unit or 'step', 2)}/s"


class Task:
    """One long step's progress; made by :func:`task` (its arguments are described there)."""

    def __init__(
        self,
        label: str,
        total: float | None = None,
        unit: str = "",
        *,
        style: str | None = None,
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float | None = None,
        width: int | None = None,
    ):
        self.label = label
        self.total = total if total and total > 0 else None
        self.unit = unit
        self.done = 0.0
        self.detail = ""
        self.style = style or mode()
        self.out = out
        self.clock = clock
        self.interval = INTERVAL if interval is None else interval
        self.width = width
        self.start = clock()
        self.last = self.start  # last line (lines mode) or redraw (bar mode)
        self.lines = 0
        self.drawn = False
        self.cells: int | None = None  # the bar's width, chosen at its first drawing

    # -- what callers use ---------------------------------------------------------------------

    def advance(self, n: float = 1) -> None:
        """Counts ``n`` more units done, and shows it when it is time to."""
        self.done += n
        self._tick()

    def update(self, n: float = 1) -> None:
        """The same as :meth:`advance` (the name ``click.progressbar`` uses)."""
        self.advance(n)

    def describe(self, detail: str) -> None:
        """Sets a short note shown after the label (e.g. the current stage)."""
        self.detail = detail
        self._tick()

    # -- numbers ------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return max(0.0, self.clock() - self.start)

    def rate(self) -> float | None:
        """Units per second since the task started (None before any time has passed)."""
        t = self.elapsed()
        return self.done / t if t > 0 and self.done > 0 else None

    def eta(self) -> float | None:
        """Seconds left at the rate so far (None without a total or a rate)."""
        r = self.rate()
        if self.total is None or r is None:
            return None
        return max(0.0, self.total - self.done) / r

    # -- text ---------------------------------------------------------------------------------

    def _name(self) -> str:
        return f"{self.label} ({self.detail})" if self.detail else self.label

    def _count(self) -> str:
        done = format_count(self.done, self.unit)
        if self.unit == "B":  # sizes carry their unit; 12.3/45.0 MB reads better than twice MB
            if self.total is None:
                return done
            total = format_count(self.total, self.unit)
            if done.split(" ")[-1] == total.split(" ")[-1]:
                done = done.rsplit(" ", 1)[0]
            return f"{done}/{total}"
        if self.total is None:
            return f"{done} {_plural(self.unit, self.done)}".rstrip()
        total = format_count(self.total, self.unit)
        return f"{done}/{total} {_plural(self.unit, self.total)}".rstrip()

    def line(self, final: bool = False) -> str:
        """The plain one-line form: ``Explaining: 20/50 images (40%), 3.1 images/s, ETA 0:10``;
        when ``final``: ``Explaining: 50/50 images in 0:16 (3.1 images/s)``."""
        parts = [self._count()]
        if self.total is not None and not final:
            parts[0] += f" ({100 * min(self.done / self.total, 1):.0f}%)"
        r = self.rate()
        if final:
            text = f"{self._name()}: {parts[0]} in {format_duration(self.elapsed())}"
            return text + (f" ({format_rate(r, self.unit)})" if r else "")
        if r is not None:
            parts.append(format_rate(r, self.unit))
        eta = self.eta()
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        return f"{self._name()}: " + ", ".join(parts)

    def bar_text(self, final: bool = False) -> str:
        """The redrawn form: ``Explaining  [#####.....]  20/50 images  40%  3.1 images/s  ETA
        0:10``, fitted to the terminal's width."""
        tail = [self._count()]
        if self.total is not None:
            tail.append(f"{100 * min(self.done / self.total, 1):3.0f}%")
        r = self.rate()
        if r is not None:
            tail.append(format_rate(r, self.unit))
        eta = self.eta()
        if final:
            tail.append(f"in {format_duration(self.elapsed())}")
        elif eta is not None:
            tail.append(f"ETA {format_duration(eta)}")
        width = self.width or _columns(self._out())
        right = "  ".join(tail)
        name = self._name()
        if self.total is not None and self.cells is None:  # fixed for the task: no jitter
            self.cells = max(0, min(30, width - 1 - len(name) - 6 - 44))
        if self.total is not None and self.cells and self.cells >= 8:
            filled = int(self.cells * min(self.done / self.total, 1))
            bar = "#" * filled + "." * (self.cells - filled)
            return f"{name}  [{bar}]  {right}"[: width - 1]
        room = width - 3 - len(right)  # the numbers matter more than the whole name
        if len(name) > room:
            name = name[: max(8, room - 1)] + "…"
        return f"{name}  {right}"[: width - 1]

    # -- output -------------------------------------------------------------------------------

    def _out(self) -> TextIO:
        return self.out if self.out is not None else stream()

    def _tick(self) -> None:
        if self.style == "off":
            return
        now = self.clock()
        if self.style == "bar":
            if now - self.last >= REDRAW or not self.drawn:
                self.draw()
        elif now - self.last >= self.interval:
            self._print(self.line())

    def draw(self, force: bool = False, final: bool = False) -> None:
        """Redraws the bar's line in place."""
        with _lock:
            out = self._out()
            out.write("\r" + self.bar_text(final) + "\x1b[K")
            out.flush()
            self.drawn = True
            self.last = self.clock()

    def _print(self, text: str) -> None:
        with _lock:
            out = self._out()
            out.write(f"tfcam: {text}\n")
            out.flush()
            self.lines += 1
            self.last = self.clock()

    def close(self, failed: bool = False) -> None:
        """Ends the task: the bar's last state and a newline, or the closing plain line."""
        if self.style == "bar" and self.drawn:
            with _lock:
                if not failed:  # a failed task's bar stays where it stopped
                    self.draw(final=True)
                out = self._out()
                out.write("\n")  # whatever follows starts on its own line
                out.flush()
        elif self.style == "lines" and self.lines and not failed:
            self._print(self.line(final=True))


def _columns(out: TextIO) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns or 80
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return 80


@contextmanager
def task(label: str, total: float | None = None, unit: str = "", **kwargs) -> Iterator[Task]:
    """A progress task around a long step (see the module's notes for what shows).

    Args:
        label: What is being done, a verb first: ``"Explaining"``, ``"Downloading"``.
        total: How many units the step has (None when unknown: no bar and no ETA).
        unit: The unit in the singular (``"image"``), or ``"B"`` for bytes (shown in kB/MB/GB).
        **kwargs: For tests and special uses: ``style`` (``bar``/``lines``/``off``, default the
            process's mode), ``out`` (a stream), ``clock``, ``interval``, ``width``.

    Yields:
        The :class:`Task`; call ``advance(n)`` as units finish.
    """
    t = Task(label, total, unit, **kwargs)
    with _lock:
        _active.append(t)
    if t.style == "bar":  # at 0 at once: the first unit may take a while (tracing, a download)
        t.draw()
    failed = True
    try:
        yield t
        failed = False
    finally:
        with _lock:
            if t in _active:
                _active.remove(t)
        try:
            t.close(failed=failed)
        except (OSError, ValueError):  # a closed terminal must not hide the real error
            pass
