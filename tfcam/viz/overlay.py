"""Heatmap overlays and panels (NumPy, OpenCV and matplotlib colormaps; no TensorFlow).

Per-image panels (:func:`compose_panel`) are put together as arrays, their text drawn with
Pillow in matplotlib's DejaVu Sans: about a millisecond per panel, where a matplotlib figure with
its layout engine took a quarter of a second. :func:`panel` (a matplotlib figure) stays for
pages that draw a few figures.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import matplotlib
import numpy as np

from tfcam.viz import plain_text, subplots


@functools.lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    """The colormap's 256 colours as uint8 RGB ``[256, 3]``."""
    from matplotlib import colormaps

    colours = colormaps[cmap].resampled(256)(np.arange(256))
    return np.round(colours[:, :3] * 255).astype(np.uint8)


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A ``[H, W]`` map in [0, 1] as uint8 RGB ``[H, W, 3]`` through a matplotlib colormap.

    A table of the colormap's 256 colours indexed as matplotlib indexes them (``floor(256·v)``,
    1.0 in the last bin), so the colours are matplotlib's at a fraction of its cost.
    """
    import cv2

    v = np.nan_to_num(np.asarray(heatmap, np.float32), nan=0.0)
    idx = np.clip(v * 256.0, 0, 255).astype(np.uint8)
    if idx.ndim != 2:
        return _lut(cmap)[idx]
    # OpenCV's table look-up: several times faster than NumPy's gather on photo-sized maps.
    return cv2.LUT(cv2.merge([idx, idx, idx]), _lut(cmap).reshape(256, 1, 3))


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
    # uint8 arithmetic in OpenCV (rounded, saturated): several times faster than float64 NumPy.
    return cv2.addWeighted(image, 1.0 - alpha, colorize(heatmap, cmap), alpha, 0.0)


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
    fig, axes = subplots(
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

    channels = list(channels)
    cols = math.ceil(math.sqrt(max(len(channels), 1)))
    rows = math.ceil(max(len(channels), 1) / cols)
    fig, axes = subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.4), squeeze=False)
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


#: Space between the tiles of a panel, and around its text, in pixels.
GAP = 8
_INK = (34, 34, 34)
_MUTED = (90, 98, 110)


@functools.lru_cache(maxsize=8)
def _font(px: int, bold: bool = False):
    """DejaVu Sans (shipped with matplotlib: wide Latin, Greek and Cyrillic coverage) at ``px``
    pixels, else Pillow's own default font."""
    from pathlib import Path

    from PIL import ImageFont

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    try:
        return ImageFont.truetype(str(path), px)
    except OSError:
        return ImageFont.load_default(px)


def _fit(text: str, font, width: float) -> str:
    """``text``, cut with an ellipsis where it would be wider than ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if font.getlength(text[:mid] + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def text_strip(
    lines: Sequence[tuple[str, bool]], width: int, *, px: int = 16, align: str = "left"
) -> np.ndarray:
    """Lines of text on white, as uint8 RGB ``[h, width, 3]``.

    Args:
        lines: ``(text, bold)`` per line; any Unicode (a glyph the font lacks shows as a box);
            the undecodable bytes of a file name show as ``\\xNN``; a line too long for
            ``width`` is cut with an ellipsis.
        width: Width of the strip in pixels.
        px: Font size in pixels.
        align: ``left`` or ``center``.
    """
    from PIL import Image, ImageDraw

    from tfcam.io import printable

    line_h = round(px * 1.35)
    height = GAP // 2 + line_h * len(lines) + GAP // 2
    strip = Image.new("RGB", (max(1, width), height), "white")
    draw = ImageDraw.Draw(strip)
    for i, (text, bold) in enumerate(lines):
        font = _font(px, bold)
        text = _fit(printable(str(text)).replace("\n", " "), font, width - 2 * GAP)
        x = GAP if align == "left" else (width - font.getlength(text)) / 2
        draw.text((x, GAP // 2 + i * line_h), text, font=font, fill=_INK if bold else _MUTED)
    return np.asarray(strip)


def place(
    values: np.ndarray,
    input_box: Sequence[float],
    image_box: Sequence[float],
    out_hw: Sequence[int],
    fill: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A map computed on the model's input, drawn over the photo's own frame.

    Args:
        values: ``[H, W]`` or ``[H, W, C]`` on the model's input grid.
        input_box: ``(y0, x0, y1, x1)``: the part of the input that shows the photo (pixels).
        image_box: The same part of the photo, as fractions of its height and width.
        out_hw: ``(height, width)`` of the result (the photo at display size).
        fill: Value where the input shows nothing of the photo (``crop`` mode's outside).

    Returns:
        ``(canvas, mask)``: the map resized (bilinear) into its box of an ``out_hw`` canvas,
        and a boolean ``[h, w]`` that is True inside the box.
    """
    import cv2

    values = np.asarray(values, np.float32)
    h, w = int(out_hw[0]), int(out_hw[1])
    iy0, ix0, iy1, ix1 = (round(float(v)) for v in input_box)
    iy1, ix1 = max(iy1, iy0 + 1), max(ix1, ix0 + 1)
    oy0, ox0 = round(image_box[0] * h), round(image_box[1] * w)
    oy1, ox1 = max(round(image_box[2] * h), oy0 + 1), max(round(image_box[3] * w), ox0 + 1)
    part = values[iy0:iy1, ix0:ix1]
    part = cv2.resize(part, (ox1 - ox0, oy1 - oy0), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((h, w, *values.shape[2:]), fill, np.float32)
    canvas[oy0:oy1, ox0:ox1] = part.reshape(canvas[oy0:oy1, ox0:ox1].shape)
    mask = np.zeros((h, w), bool)
    mask[oy0:oy1, ox0:ox1] = True
    return canvas, mask


def compose_panel(
    tiles: Sequence[np.ndarray], labels: Sequence[str], header: Sequence[tuple[str, bool]] = ()
) -> np.ndarray:
    """Tiles side by side, each under its label, under a header, as uint8 RGB (no matplotlib).

    Args:
        tiles: uint8 images, RGB ``[h, w, 3]`` or grey ``[h, w]``; tiles of different heights
            are aligned at the top.
        labels: One short label per tile (centred above it).
        header: ``(text, bold)`` lines across the whole panel (file name, prediction …).
    """
    tiles = [np.repeat(t[..., None], 3, axis=2) if t.ndim == 2 else t for t in tiles]
    height = max(t.shape[0] for t in tiles)
    width = sum(t.shape[1] for t in tiles) + GAP * (len(tiles) + 1)
    px = int(np.clip(max(height, max(t.shape[1] for t in tiles)) / 28, 11, 22))
    row = np.full((height, width, 3), 255, np.uint8)
    label_row = np.full((round(px * 1.35) + GAP, width, 3), 255, np.uint8)
    x = GAP
    for tile, label in zip(tiles, labels, strict=True):
        th, tw = tile.shape[:2]
        row[:th, x : x + tw] = tile
        strip = text_strip([(label, False)], tw, px=px, align="center")
        label_row[:, x : x + tw] = strip[: label_row.shape[0]]
        x += tw + GAP
    parts = [text_strip(header, width, px=px + 2)] if header else []
    bottom = np.full((GAP, width, 3), 255, np.uint8)
    return np.concatenate([*parts, label_row, row, bottom], axis=0)
