"""Receptive-field patches drawn on images, and grids of the cropped patches (no TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tfcam.viz import figure, plain_text
from tfcam.viz.overlay import to_uint8

#: Distinct RGB colours for ranked boxes (the first is the strongest unit).
BOX_COLOURS = [
    (255, 0, 0),
    (0, 200, 0),
    (0, 90, 255),
    (255, 160, 0),
    (200, 0, 200),
    (0, 200, 200),
    (255, 255, 0),
    (128, 64, 0),
    (255, 255, 255),
]


def display_scale(height: int, width: int, target: int = 256) -> int:
    """Integer factor that brings a small model input to about ``target`` pixels for viewing."""
    return max(1, round(target / max(height, width)))


def scaled_box(box: tuple[int, int, int, int], scale: int) -> tuple[int, int, int, int]:
    """An inclusive pixel box ``(top, left, bottom, right)`` after nearest-neighbour upscaling."""
    t, left, b, r = box
    return t * scale, left * scale, (b + 1) * scale - 1, (r + 1) * scale - 1


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[tuple[int, int, int, int]],
    *,
    scale: int = 1,
    thickness: int = 1,
    colours: Sequence[tuple[int, int, int]] = BOX_COLOURS,
) -> np.ndarray:
    """Draws inclusive boxes ``(top, left, bottom, right)`` (input-pixel coordinates) on an image.

    Args:
        image: RGB ``[H, W, 3]`` in [0, 255].
        boxes: Boxes in the image's pixel grid, strongest first; drawn weakest first so the
            strongest is on top.
        scale: Nearest-neighbour upscaling applied to the image (and boxes) first.
        thickness: Line width in output pixels; lines are drawn inside the box.
        colours: Cycle of RGB colours by rank.

    Returns:
        uint8 RGB ``[H·scale, W·scale, 3]``.
    """
    import cv2

    out = to_uint8(image)
    if scale > 1:
        out = np.repeat(np.repeat(out, scale, axis=0), scale, axis=1)
    out = np.ascontiguousarray(out)
    for rank in range(len(boxes) - 1, -1, -1):
        t, left, b, r = scaled_box(boxes[rank], scale)
        colour = tuple(int(c) for c in colours[rank % len(colours)])
        for i in range(thickness):
            if t + i > b - i or left + i > r - i:
                break
            cv2.rectangle(out, (left + i, t + i), (r - i, b - i), colour, 1)
    return out


def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels of an inclusive box."""
    t, left, b, r = box
    return np.asarray(image)[t : b + 1, left : r + 1]


@plain_text
def patch_grid(
    patches: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    cols: int | None = None,
    cell: float = 1.6,
    suptitle: str = "",
):
    """A matplotlib figure with the patches in a grid, each with its title.

    Args:
        patches: RGB crops (any sizes; each is shown at its aspect ratio).
        titles: One short line per patch.
        cols: Columns (default: about a square).
        cell: Inches per cell.
        suptitle: A title over the grid.
    """
    import math

    n = max(len(patches), 1)
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = figure(figsize=(cols * cell, rows * cell + (0.4 if suptitle else 0)))
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        if i < len(patches):
            ax.imshow(to_uint8(patches[i]), interpolation="nearest")
            ax.set_title(titles[i], fontsize=7)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig
