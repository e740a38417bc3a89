"""Figures drawn from arrays and tables (matplotlib, headless; no TensorFlow here)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def learning_curves(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, train vs validation, with the fine-tuning boundary marked.

    Args:
        history: The run's ``history.csv`` (columns ``epoch``, ``phase``, ``loss``, ``accuracy``,
            ``val_loss``, ``val_accuracy``).

    Returns:
        A figure with two panels, titled "Loss" and "Accuracy".
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        for col, label, style in ((metric, "train", "-"), (f"val_{metric}", "validation", "--")):
            if col in history:
                ax.plot(history["epoch"], history[col], style, marker="o", ms=3, label=label)
        if "phase" in history and (history["phase"] == 2).any():
            boundary = history.loc[history["phase"] == 2, "epoch"].min() - 0.5
            ax.axvline(boundary, color="grey", lw=1, ls=":")
            ax.text(
                boundary,
                0.98,
                " fine-tuning",
                transform=ax.get_xaxis_transform(),
                va="top",
                fontsize=8,
                color="grey",
            )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def effective_field_plot(
    erf,
    centre: tuple[float, float],
    radius95: float,
    theoretical_box: tuple[int, int, int, int],
    title: str = "",
    colorbar_label: str = "share of gradient magnitude",
) -> Figure:
    """The effective receptive field map with the theoretical box and the 95%-mass square.

    Args:
        erf: ``[H, W]`` map (normalised gradient magnitude).
        centre: ``(y, x)`` of the unit's field centre in input pixels.
        radius95: Half-width of the square holding 95% of the mass.
        theoretical_box: The analytic field, ``(top, left, bottom, right)`` inclusive, clipped.
        title: Figure title.
    """
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(5, 4.6), layout="constrained")
    im = ax.imshow(erf, cmap="magma", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, label=colorbar_label)
    t, left, b, r = theoretical_box
    ax.add_patch(
        Rectangle(
            (left - 0.5, t - 0.5),
            r - left + 1,
            b - t + 1,
            fill=False,
            ec="cyan",
            lw=1.5,
            label=f"theoretical {b - t + 1}×{r - left + 1}",
        )
    )
    cy, cx = centre
    side = 2 * radius95 + 1
    ax.add_patch(
        Rectangle(
            (cx - radius95 - 0.5, cy - radius95 - 0.5),
            side,
            side,
            fill=False,
            ec="lime",
            lw=1.5,
            ls="--",
            label=f"95% of mass {side:.0f}×{side:.0f}",
        )
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def field_growth_plot(table: pd.DataFrame, title: str = "") -> Figure:
    """Receptive-field size and stride per layer (local layers of a ``fields_table``)."""
    rows = table[table["R_y"] != "-"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
    ax.plot(rows.index, rows["R_y"].astype(int), label="size R", marker=".", ms=3)
    ax.plot(rows.index, rows["S_y"].astype(int), label="stride S", marker=".", ms=3)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("layer (graph order)")
    ax.set_ylabel("pixels (y axis)")
    step = max(1, len(rows) // 12)
    ax.set_xticks(rows.index[::step], rows["layer"][::step], rotation=60, ha="right", fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (and closes it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
