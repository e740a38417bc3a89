"""Drawing from arrays: overlays, plots, galleries (no TensorFlow)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def plain_text(fn: F) -> F:
    """Draws ``fn``'s figure with matplotlib's mathtext off.

    Titles and labels carry names a user chose (class folders, files, layers); with mathtext on,
    ``cost $5 and $6`` renders as maths and ``a$\\x$b`` makes the whole figure fail. Text objects
    read the setting when they are created, so the figure stays plain when saved later. Strings
    (and lists of strings) given to ``fn`` lose the lone surrogates of non-UTF-8 file names, which
    no font can draw (shown as ``\\xNN``).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib

        args = tuple(_printable(a) for a in args)
        kwargs = {k: _printable(v) for k, v in kwargs.items()}
        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _printable(value):
    from tfcam.io import printable

    if isinstance(value, str):
        return printable(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return type(value)(printable(v) for v in value)
    return value


def figure(**kwargs):
    """A matplotlib ``Figure`` on its own Agg canvas, outside pyplot.

    tfcam never imports pyplot nor sets matplotlib's backend: a notebook user's own figures keep
    showing inline, and figures drawn in a loop are freed with their last reference (pyplot would
    keep each one until closed). Keyword arguments go to ``Figure`` (``figsize``, ``layout`` …).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def subplots(nrows: int = 1, ncols: int = 1, *, squeeze: bool = True, **kwargs):
    """``(figure, axes)`` as ``pyplot.subplots`` gives them, from :func:`figure`
    (``figsize``, ``layout`` … go to the figure; ``sharex``, ``gridspec_kw`` … to its grid)."""
    grid_keys = ("sharex", "sharey", "width_ratios", "height_ratios", "subplot_kw", "gridspec_kw")
    grid = {k: kwargs.pop(k) for k in grid_keys if k in kwargs}
    fig = figure(**kwargs)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze, **grid)
