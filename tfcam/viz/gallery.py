"""Image galleries: misclassified and correct images, CAMs per class and per layer (no TensorFlow)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from tfcam.viz import plain_text
from tfcam.viz.overlay import to_uint8


@plain_text
def image_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    cols: int = 6,
    cell: float = 1.9,
    suptitle: str = "",
    title_colours: Sequence[str] | None = None,
) -> Figure:
    """Images in a grid, one title each (several lines allowed).

    Args:
        images: RGB uint8 or float [0, 255] images (any sizes).
        titles: One per image.
        cols: Columns (fewer if there are fewer images).
        cell: Inches per cell.
        suptitle: Title over the grid.
        title_colours: Optional colour per title (e.g. red for a wrong prediction).
    """
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(cols * cell, rows * (cell + 0.35) + (0.4 if suptitle else 0)),
        squeeze=False,
    )
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(to_uint8(images[i]), interpolation="nearest")
            ax.set_title(titles[i], fontsize=7, color=(title_colours or ["black"] * n)[i])
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


@plain_text
def class_cams(
    image: np.ndarray,
    overlays: Sequence[np.ndarray],
    class_names: Sequence[str],
    scores,
    *,
    true: str | None = None,
    cell: float = 2.0,
) -> Figure:
    """One image and its CAM for every class, side by side, each titled with the class's probability."""
    tiles = [image, *overlays]
    titles = ["image" + (f"\n(true: {true})" if true else "")]
    best = int(np.argmax(scores))
    titles += [
        f"{name}\np={float(s):.2f}{' ★' if i == best else ''}"
        for i, (name, s) in enumerate(zip(class_names, scores, strict=True))
    ]
    return image_grid(
        tiles, titles, cols=len(tiles), cell=cell, suptitle="Grad-CAM for every class"
    )


@plain_text
def layer_grid(
    images: Sequence[np.ndarray],
    overlays: dict[str, Sequence[np.ndarray]],
    *,
    row_titles: Sequence[str] | None = None,
    cell: float = 1.8,
    suptitle: str = "",
) -> Figure:
    """Rows = images, columns = the image then one CAM overlay per layer (titled by layer)."""
    layers = list(overlays)
    cols = 1 + len(layers)
    rows = len(images)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.5), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.axis("off")
            tile = images[r] if c == 0 else overlays[layers[c - 1]][r]
            ax.imshow(to_uint8(tile), interpolation="nearest")
            if r == 0:
                ax.set_title("image" if c == 0 else layers[c - 1], fontsize=8)
        if row_titles:
            axes[r, 0].text(
                -0.05,
                0.5,
                row_titles[r],
                transform=axes[r, 0].transAxes,
                rotation=90,
                va="center",
                ha="right",
                fontsize=7,
            )
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig
