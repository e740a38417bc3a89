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
    read the setting when they are created, so the figure stays plain when saved later.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import matplotlib.pyplot as plt

        with plt.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
