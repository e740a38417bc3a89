"""Heatmap overlays and panels (NumPy, OpenCV and matplotlib colormaps; no TensorFlow)."""

from __future__ import annotations

import matplotlib
import numpy as np

from tfcam.viz import plain_text

matplotlib.use("Agg")


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A ``[H, W]`` map in [0, 1] as uint8 RGB ``[H, W, 3]`` through a matplotlib colormap."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.clip(np.asarray(heatmap, np.float64), 0.0, 1.0))
    return np.round(rgba[..., :3] * 255).astype(np.uint8)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image in [0, 255] (any float or int type) as uint8."""
    return np.clip(np.round(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, cmap: str = "jet"
) -> np.ndarray:
    """Blends a coloured heatmap over an image: ``(1 - alpha) · image + alpha · colour``.

    Args:
        image: RGB ``[H, W, 3]`` in [0, 255].
        heatmap: ``[h, w]`` in [0, 1]; resized to the image if needed.
        alpha: Weight of the heatmap colour.
        cmap: A matplotlib colormap name.

    Returns:
        uint8 RGB ``[H, W, 3]``.
    """
    import cv2

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    image = to_uint8(image)
    h, w = image.shape[:2]
    heatmap = np.asarray(heatmap, np.float32)
    if heatmap.shape != (h, w):
        heatmap = cv2.resize(heatmap, (w, h), interpolation=cv2.INTER_LINEAR)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(heatmap, cmap).astype(
        np.float32
    )
    return to_uint8(blended)


def gradient_image(attribution: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """A signed RGB attribution ``[H, W, 3]`` as a viewable uint8 image (0 → mid-grey).

    Gradients are heavy-tailed: scaled by their maximum, nearly everything is grey. They are
    scaled by the ``percentile`` of their magnitude instead, and the few larger values clipped.
    """
    a = np.asarray(attribution, np.float64)
    mags = np.abs(a)
    scale = np.percentile(mags, percentile) if mags.any() else 0.0
    if scale == 0:
        scale = mags.max()
    if scale == 0:
        return np.full(a.shape, 128, np.uint8)
    return to_uint8((np.clip(a / scale, -1, 1) * 0.5 + 0.5) * 255)


@plain_text
def panel(
    tiles: list[np.ndarray], titles: list[str], *, suptitle: str = "", tile_inches: float = 3.0
):
    """A row of images with titles, as a matplotlib figure (use ``viz.plots.to_png`` to save)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(tiles), figsize=(tile_inches * len(tiles), tile_inches + 0.5), squeeze=False
    )
    for ax, tile, title in zip(axes[0], tiles, titles, strict=True):
        ax.imshow(
            tile,
            cmap="gray" if tile.ndim == 2 else None,
            vmin=0,
            vmax=255 if tile.dtype == np.uint8 else 1,
        )
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


@plain_text
def feature_grid(activations: np.ndarray, channels, *, title: str = "", cell: float = 1.4):
    """Channels of one image's feature maps ``[h, w, C]`` in a grid, each scaled to its own range.

    Zeiler & Fergus (2014) popularised reading intermediate layers this way.
    """
    import math

    import matplotlib.pyplot as plt

    channels = list(channels)
    cols = math.ceil(math.sqrt(max(len(channels), 1)))
    rows = math.ceil(max(len(channels), 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, c in zip(axes.ravel(), channels, strict=False):
        m = np.asarray(activations[..., c], np.float64)
        lo, hi = m.min(), m.max()
        ax.imshow(
            (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m), cmap="viridis", vmin=0, vmax=1
        )
        ax.set_title(f"#{c} max {hi:.2g}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
