"""An explanation that knows its images: overlays, a matplotlib grid, and HTML for Jupyter.

:class:`Explanation` extends the engine's result (:class:`tfcam.explain.engine.Explanation`:
heatmaps per layer, targets, scores, probabilities) with the images as the model saw them, where
they came from and the class names, which is what a notebook shows. Figures are drawn with
matplotlib's object-oriented API (no pyplot state, so nothing leaks when explaining in a loop).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np

from tfcam.explain.engine import Explanation as _Arrays
from tfcam.explain.images import Batch
from tfcam.report.safe import esc

#: Tiles of :meth:`Explanation._repr_html_` are drawn at least this wide (CSS pixels).
HTML_TILE_PX = 192


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _execution_count() -> int | None:
    """The IPython cell being run, or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else shell.execution_count


def _grid_figure_class():
    from matplotlib.figure import Figure

    class GridFigure(Figure):
        """A figure that :meth:`Explanation.show` has displayed in this cell already (Jupyter
        would otherwise draw the returned figure a second time)."""

        shown_in: int | None = None

        def _ipython_display_(self):
            if self.shown_in is not None and self.shown_in == _execution_count():
                return
            from IPython.display import Image, display

            buf = io.BytesIO()
            self.savefig(buf, format="png")
            display(Image(buf.getvalue()))
            self.shown_in = _execution_count()

    return GridFigure


@dataclass
class Explanation(_Arrays):
    """Heatmaps of a batch of images, with the images.

    Attributes:
        heatmap: ``[N, H, W]`` float32 in [0, 1], of the first (usually only) layer.
        heatmaps: ``{layer or method: [N, H, W]}``.
        images: float32 ``[N, H, W, 3]``, pixels 0–255 as the model saw them.
        paths: The file of each image, or None for an image given in memory.
        class_names: The model's classes (``"0"``, ``"1"``, … when it has none).
        predicted: The predicted class index per image; :attr:`predicted_names` their names.
        targets: The explained class index per image; probabilities ``[N, C]``.
    """

    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 3), np.float32))
    paths: list[str | None] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, arrays: _Arrays, batch: Batch, class_names) -> Explanation:
        """The engine's result with the batch it explained."""
        n = int(arrays.probabilities.shape[1])
        names = list(class_names) if class_names else [str(i) for i in range(n)]
        return cls(
            heatmaps=arrays.heatmaps,
            raw=arrays.raw,
            targets=arrays.targets,
            scores=arrays.scores,
            probabilities=arrays.probabilities,
            constant=arrays.constant,
            method=arrays.method,
            images=batch.images,
            paths=list(batch.paths),
            class_names=names,
        )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def names(self) -> list[str]:
        """A label per image: its file name, or ``#i`` for an image given in memory."""
        return Batch(self.images, self.paths).names()

    @property
    def predicted_names(self) -> list[str]:
        return [self.class_names[i] for i in self.predicted]

    def _map(self, layer: str | None) -> np.ndarray:
        if layer is None:
            return self.heatmap
        if layer not in self.heatmaps:
            from tfcam.errors import choices_message

            raise KeyError(choices_message("layer", layer, list(self.heatmaps)))
        return self.heatmaps[layer]

    def overlays(self, layer: str | None = None, alpha: float = 0.4, cmap: str = "jet"):
        """Each heatmap blended over its image: uint8 ``[N, H, W, 3]``.

        Args:
            layer: Which layer's maps (default: the first).
            alpha: Weight of the coloured map.
            cmap: A matplotlib colormap name.
        """
        from tfcam.viz.overlay import overlay

        maps = self._map(layer)
        out = [
            overlay(img, m, alpha=alpha, cmap=cmap)
            for img, m in zip(self.images, maps, strict=True)
        ]
        return np.stack(out) if out else np.zeros((0, *self.images.shape[1:]), np.uint8)

    def titles(self) -> list[str]:
        """``name`` / ``predicted (probability)`` [/ ``target``] per image."""
        out = []
        for i, name in enumerate(self.names):
            p = int(self.predicted[i])
            line = f"{name}\n{self.class_names[p]} ({self.probabilities[i, p]:.2f})"
            if int(self.targets[i]) != p:
                line += f"\nexplains {self.class_names[int(self.targets[i])]}"
            out.append(line)
        return out

    def show(self, columns: int = 4, layer: str | None = None, alpha: float = 0.4):
        """A grid of overlays titled with file, prediction and probability.

        In Jupyter the grid is displayed at once (and once); elsewhere save it with
        ``fig.savefig(path)``.

        Returns:
            The ``matplotlib.figure.Figure``.
        """
        from tfcam.io import printable

        tiles = self.overlays(layer, alpha)
        n = len(tiles)
        cols = max(1, min(columns, n))
        rows = max(1, -(-n // cols))
        fig = _grid_figure_class()(figsize=(2.6 * cols, 3.0 * rows), layout="constrained")
        for i, title in enumerate(self.titles()):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.imshow(tiles[i])
            ax.set_title(printable(title), fontsize=9, parse_math=False)
            ax.axis("off")
        fig.suptitle(f"{self.method} · {layer or next(iter(self.heatmaps), '')}", fontsize=10)
        if _execution_count() is not None:
            fig._ipython_display_()
        return fig

    def _repr_html_(self) -> str:
        tiles = self.overlays()
        cells = []
        for i, title in enumerate(self.titles()):
            src = "data:image/png;base64," + base64.b64encode(_png(tiles[i])).decode("ascii")
            caption = "<br>".join(esc(line) for line in title.split("\n"))
            cells.append(
                f'<figure style="margin:4px;display:inline-block;vertical-align:top;'
                f'width:{HTML_TILE_PX}px"><img src="{src}" alt="{esc(self.names[i])}" '
                f'style="width:{HTML_TILE_PX}px;image-rendering:auto">'
                f'<figcaption style="font-size:12px;overflow-wrap:anywhere">{caption}'
                "</figcaption></figure>"
            )
        head = esc(f"{self.method} · {next(iter(self.heatmaps), '')} · {len(self)} images")
        return f"<div><div><b>{head}</b></div>{''.join(cells)}</div>"

    def __repr__(self) -> str:
        layers = ", ".join(self.heatmaps)
        return (
            f"Explanation(method={self.method!r}, layers=[{layers}], "
            f"heatmap={tuple(self.heatmap.shape) if self.heatmaps else ()})"
        )
