"""The pictures ``tfcam explain`` writes for one image, drawn as arrays and written by a pool of
threads while the model explains the next batch.

Per image and method (``<key>`` is ``method`` or ``method-layer``):

- ``<key>_overlay.png``: the heatmap over the photo, at the photo's own aspect with its longer
  side ``overlay_size`` pixels (the photo read again upright with the pipeline's decoder, the
  heatmap mapped from the model's input onto it for the run's resize mode);
- ``<key>_heatmap.png``: the bare map, 8-bit grey on the model's input grid (the numbers, for
  programs);
- ``<key>_panel.png``: photo | map | overlay under a title strip naming the file, the prediction
  with its probability and the explained class.

Why threads: drawing and PNG encoding took most of the time of explaining a folder (a matplotlib
figure per image, 0.23 s). Composed with NumPy and OpenCV instead, a panel costs a few
milliseconds, and :mod:`tfcam.viz.png` encodes it in about 5 ms (libpng took 23 ms), while
TensorFlow, which releases the GIL in its kernels, explains the next batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfcam.data.display import Window

#: Default longer side of overlays and panel tiles, in pixels.
OVERLAY_SIZE = 448


@dataclass
class Maps:
    """One method's result for one image.

    Attributes:
        key: ``method`` or ``method-layer`` (file names and the record's ``outputs``).
        label: The map's title in the panel (``gradcam @ layer``).
        heatmap: ``[H, W]`` in [0, 1] on the model's input grid.
        attribution: ``[H, W, 3]`` signed gradients for gradient methods, else None.
        paths: ``{"overlay", "heatmap", "panel": path}``.
    """

    key: str
    label: str
    heatmap: np.ndarray
    attribution: np.ndarray | None
    paths: dict[str, Path]


@dataclass
class ImageJob:
    """Everything needed to draw one image's pictures, away from the model.

    Attributes:
        photo: The image at display size (uint8 RGB, its own aspect).
        window: Where the model's input sits in it (:func:`tfcam.data.display.input_window`).
        header: ``(text, bold)`` lines of every panel's title strip.
        maps: One per method and layer.
        galleries: ``{path: (header lines, [(layer, heatmap)])}``: one figure per method
            explained at several layers.
    """

    photo: np.ndarray
    window: Window
    header: list[tuple[str, bool]]
    maps: list[Maps]
    galleries: dict[Path, tuple[list[tuple[str, bool]], list[tuple[str, np.ndarray]]]]


def save_png(path: Path, rgb_or_grey: np.ndarray) -> None:
    """Writes a uint8 RGB or grey array as PNG (:func:`tfcam.viz.png.encode_png`), atomically
    but not flushed to the disk one by one: pictures can be drawn again, and the flushes took more
    time than the drawing."""
    from tfcam.io import write_bytes
    from tfcam.viz.png import encode_png

    write_bytes(path, encode_png(rgb_or_grey), durable=False)


def draw_image(job: ImageJob, *, alpha: float = 0.4) -> None:
    """Draws and writes one image's overlays, heatmaps, panels and galleries."""
    import cv2

    from tfcam.viz.overlay import colorize, compose_panel, gradient_image, place, to_uint8

    photo, window = job.photo, job.window
    hw = photo.shape[:2]

    def over(heatmap: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The overlay, the coloured map (black where the model saw nothing of the photo)."""
        heat, inside = place(heatmap, window.input_box, window.image_box, hw)
        colour = colorize(heat)
        # What viz.overlay.overlay computes, with the colours made once for both pictures.
        drawn = cv2.addWeighted(photo, 1.0 - alpha, colour, alpha, 0.0)
        if not inside.all():  # crop mode: the model never saw the edges
            drawn[~inside] = photo[~inside]
            colour[~inside] = 0
        return drawn, colour, inside

    for m in job.maps:
        drawn, middle, _ = over(m.heatmap)
        if m.attribution is not None:
            middle, _ = place(gradient_image(m.attribution), window.input_box,
                              window.image_box, hw, fill=128)  # fmt: skip
            middle = to_uint8(middle)
        save_png(m.paths["overlay"], drawn)
        save_png(m.paths["heatmap"], to_uint8(m.heatmap * 255))
        panel = compose_panel([photo, middle, drawn], ["image", m.label, "overlay"], job.header)
        save_png(m.paths["panel"], panel)
    for path, (header, layers) in job.galleries.items():
        tiles = [photo] + [over(heat)[0] for _, heat in layers]
        save_png(path, compose_panel(tiles, ["image", *(n for n, _ in layers)], header))


class PictureWriter:
    """A small pool of threads drawing and writing pictures while the caller goes on.

    At most ``limit`` jobs wait at a time (memory stays bounded); the first error of a job is
    raised by the next :meth:`submit` or on leaving the ``with`` block, which waits for every
    job. An interrupt cancels the jobs not started and waits for the running ones, so every file
    is whole or absent (each is written atomically).
    """

    def __init__(self, workers: int | None = None, limit: int = 64):
        self.workers = workers or min(4, max(1, (os.cpu_count() or 1)))
        self.limit = limit
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def __enter__(self) -> PictureWriter:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tfcam-pictures")
        return self

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Runs ``fn(*args, **kwargs)`` on a worker."""
        assert self._pool is not None, "use PictureWriter in a with block"
        self._collect(wait_for=len(self._pending) - self.limit + 1)
        self._pending.append(self._pool.submit(fn, *args, **kwargs))

    def _collect(self, wait_for: int = 0) -> None:
        """Raises the first error of a finished job; waits for the oldest ``wait_for`` jobs."""
        for f in self._pending[: max(0, wait_for)]:
            f.result()
        done = [f for f in self._pending if f.done()]
        for f in done:
            f.result()
        self._pending = [f for f in self._pending if not f.done()]

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._pool is not None
        if exc_type is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            return
        try:
            self._collect(wait_for=len(self._pending))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


def header_lines(name: str, predicted: str, probability: float, target: str,
                 what: str = "") -> list[tuple[str, bool]]:  # fmt: skip
    """The title strip of a panel: the file, then the prediction and what was explained."""
    second = f"predicted {predicted} ({probability:.3f})"
    second += f" · explained {target}" + (f" · {what}" if what else "")
    return [(name, True), (second, False)]


def output_paths(folder: Path, key: str) -> dict[str, Path]:
    """``{"overlay", "heatmap", "panel": folder/<key>_<kind>.png}``."""
    return {k: folder / f"{key}_{k}.png" for k in ("overlay", "heatmap", "panel")}


def method_label(method: str, layer: str | None) -> str:
    return method if layer is None or layer == method else f"{method} @ {layer}"
