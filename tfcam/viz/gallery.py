"""Image galleries: misclassified and correct images, CAMs per class and per layer (no TensorFlow)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from tfcam.viz import plain_text, subplots
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
    captions: Sequence[str] | None = None,
    fontsize: float = 8,
) -> Figure:
    """Images in a grid, one title each (several lines allowed) and optionally a caption under
    each (a file name, shortened in its middle to fit the tile).

    Args:
        images: RGB uint8 or float [0, 255] images (any sizes).
        titles: One per image.
        cols: Columns (fewer if there are fewer images).
        cell: Inches per cell.
        suptitle: Title over the grid.
        title_colours: Optional colour per title (e.g. red for a wrong prediction).
        captions: Optional text under each image.
        fontsize: Points of the titles (captions are one point smaller).
    """
    n = len(images)
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    extra = 0.35 + (0.2 if captions else 0)
    fig, axes = subplots(
        rows,
        cols,
        figsize=(cols * cell, rows * (cell + extra) + (0.4 if suptitle else 0)),
        squeeze=False,
    )
    chars = max(8, int(cell * 72 / (0.6 * (fontsize - 1))))
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(to_uint8(images[i]), interpolation="nearest")
            ax.set_title(titles[i], fontsize=fontsize, color=(title_colours or ["black"] * n)[i])
            if captions:
                ax.text(
                    0.5,
                    -0.03,
                    shorten(captions[i], chars),
                    transform=ax.transAxes,
                    ha="center",
                    va="top",
                    fontsize=fontsize - 1,
                    color="dimgrey",
                )
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
    fig, axes = subplots(rows, cols, figsize=(cols * cell, rows * cell + 0.5), squeeze=False)
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


def shorten(text: str, limit: int) -> str:
    """``text`` cut in its middle with an ellipsis to at most ``limit`` characters (the start
    and the end of a long class or file name are what tell it apart)."""
    if len(text) <= limit:
        return text
    keep = max(limit - 1, 2)
    head = (keep + 1) // 2
    return text[:head] + "…" + text[len(text) - (keep - head) :]


@plain_text
def labelled_tiles(
    tiles: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    colours: Sequence[str] | None = None,
    cols: int = 4,
    tile_px: int = 224,
    font_px: int = 13,
    pad: int = 8,
) -> np.ndarray:
    """Images as square tiles of exactly ``tile_px`` pixels, each under a title row, as one RGB
    array (for TensorBoard's image dashboard, which shows images at their pixel size).

    Tiles are placed at pixel positions with :meth:`~matplotlib.figure.Figure.figimage` (no
    resampling by matplotlib, no layout engine: a few milliseconds per panel). Each tile is
    scaled to fit ``tile_px`` (aspect kept, white margins). Each line of a title is shortened in
    its middle to fit the tile's width.

    Args:
        tiles: RGB uint8 or float [0, 255] images.
        titles: One per tile; lines separated by ``\\n`` (all titles get the height of the
            longest one).
        colours: Optional text colour per title (e.g. red for a wrong prediction).
        cols: Tiles per row.
        tile_px: Side of a tile in pixels.
        font_px: Text height in pixels.
        pad: Pixels between tiles and around the panel.

    Returns:
        uint8 RGB ``[H, W, 3]``.
    """
    import cv2
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    n = len(tiles)
    if n == 0:
        return np.full((tile_px, tile_px, 3), 255, np.uint8)
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    lines = max(len(t.split("\n")) for t in titles)
    line_px = int(font_px * 1.35)
    title_px = lines * line_px + 4
    width = cols * tile_px + (cols + 1) * pad
    height = rows * (title_px + tile_px + pad) + pad
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    chars = max(4, int(tile_px / (0.6 * font_px)))
    for i, (tile, title) in enumerate(zip(tiles, titles, strict=True)):
        r, c = divmod(i, cols)
        x0 = pad + c * (tile_px + pad)
        top = pad + r * (title_px + tile_px + pad)
        img = to_uint8(tile)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        scale = tile_px / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        if scale < 1:
            interp = cv2.INTER_AREA
        else:  # pixel-exact enlargement where it is whole, smooth otherwise
            interp = cv2.INTER_NEAREST if float(scale).is_integer() else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
        square = np.full((tile_px, tile_px, 3), 255, np.uint8)
        oy, ox = (tile_px - nh) // 2, (tile_px - nw) // 2
        square[oy : oy + nh, ox : ox + nw] = img[:, :, :3]
        # figimage counts from the bottom-left corner of the figure, in pixels.
        fig.figimage(square, xo=x0, yo=height - top - title_px - tile_px, origin="upper")
        text = "\n".join(shorten(line, chars) for line in title.split("\n"))
        fig.text(
            x0 / width,
            1 - (top + 2) / height,
            text,
            ha="left",
            va="top",
            fontsize=font_px * 72 / dpi,
            linespacing=1.2,
            color=(colours[i] if colours else "black"),
        )
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
