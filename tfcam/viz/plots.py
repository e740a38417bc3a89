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


def to_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (and closes it)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
