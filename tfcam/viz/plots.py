"""Figures drawn from arrays and tables (matplotlib, headless; no TensorFlow here)."""

from __future__ import annotations

import io

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from tfcam.viz import plain_text, subplots


@plain_text
def learning_curves(history: pd.DataFrame) -> Figure:
    """Loss and accuracy per epoch, train vs validation, with the fine-tuning boundary marked.

    Args:
        history: The run's ``history.csv`` (columns ``epoch``, ``phase``, ``loss``, ``accuracy``,
            ``val_loss``, ``val_accuracy``).

    Returns:
        A figure with two panels, titled "Loss" and "Accuracy".
    """
    fig, axes = subplots(1, 2, figsize=(10, 3.6), layout="constrained")
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


@plain_text
def batch_loss_curve(batches: pd.DataFrame) -> Figure:
    """Training loss of each batch, with a moving average over about an epoch's batches drawn
    over it, and the first batch of each epoch marked.

    Args:
        batches: ``batch_history.csv``: columns ``step`` (global batch index), ``epoch``, ``loss``
            (each batch's own loss, see :class:`tfcam.train.callbacks.BatchHistoryCSV`).
    """
    fig, ax = subplots(figsize=(10, 3.2), layout="constrained")
    ax.plot(batches["step"], batches["loss"], lw=0.8, alpha=0.45, label="batch")
    per_epoch = batches.groupby("epoch")["step"].count()
    window = int(max(3, min(50, per_epoch.median() if len(per_epoch) else 3)))
    if len(batches) > window:
        smooth = batches["loss"].rolling(window, min_periods=1, center=True).mean()
        ax.plot(batches["step"], smooth, lw=1.6, label=f"moving average of {window} batches")
    for _, first in batches.groupby("epoch")["step"].min().items():
        ax.axvline(first, color="grey", lw=0.5, alpha=0.4)
    ax.set_title("Training loss per batch")
    ax.set_xlabel("batch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


@plain_text
def class_distribution(counts: pd.DataFrame) -> Figure:
    """Images per class and split as grouped bars.

    Args:
        counts: One column per split (``train``, ``val``, ``test``), one row per class.
    """
    import numpy as np

    classes = list(counts.index)
    splits = list(counts.columns)
    width = 0.8 / max(len(splits), 1)
    fig, ax = subplots(figsize=(max(6, 0.9 * len(classes) + 2), 3.6), layout="constrained")
    x = np.arange(len(classes))
    for i, split in enumerate(splits):
        values = counts[split].fillna(0).to_numpy()
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, values, width, label=split)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(
        x,
        classes,
        rotation=30 if len(classes) > 6 else 0,
        ha="right" if len(classes) > 6 else "center",
    )
    ax.set_ylabel("images")
    ax.set_title("Class distribution")
    ax.legend(fontsize=8)
    return fig


@plain_text
def confusion_matrix_figure(confusion, class_names, title: str = "Confusion matrix") -> Figure:
    """Counts and row-normalised (recall per true class) side by side, numbers in the cells.

    Args:
        confusion: ``[C, C]`` counts, rows = true class, columns = predicted class.
        class_names: The C names (axis labels).
    """
    import numpy as np

    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(class_names)
    side = max(3.5, 0.55 * n + 1.5)
    # Room for the full names (8-pt text is about 0.07 inch a character; x labels run at 45°),
    # so long names widen the figure instead of squeezing the matrix.
    label = min(4.0, 0.07 * max((len(str(c)) for c in class_names), default=0))
    fig, axes = subplots(
        1, 2, figsize=(2 * (side + label) + 1, side + 0.7 * label), layout="constrained"
    )
    for ax, data, sub, fmt in (
        (axes[0], cm, "counts", "{:.0f}"),
        (axes[1], norm, "row-normalised", "{:.2f}"),
    ):
        ax.imshow(data if sub == "row-normalised" else norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{title} ({sub})", fontsize=10)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        fmt.format(data[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    return fig


@plain_text
def lr_finder_curve(df: pd.DataFrame, suggestion: float | None = None) -> Figure:
    """Loss against learning rate (log scale) from a learning-rate range test.

    Args:
        df: Columns ``lr`` and ``loss`` (optionally ``smoothed``).
        suggestion: A learning rate to mark.
    """
    fig, ax = subplots(figsize=(6, 3.6), layout="constrained")
    ax.plot(df["lr"], df["loss"], alpha=0.4, label="loss")
    if "smoothed" in df:
        ax.plot(df["lr"], df["smoothed"], label="smoothed")
    if suggestion:
        ax.axvline(suggestion, color="red", ls="--", lw=1, label=f"suggested {suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("Learning-rate finder")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


@plain_text
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

    fig, ax = subplots(figsize=(5, 4.6), layout="constrained")
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


@plain_text
def field_growth_plot(table: pd.DataFrame, title: str = "") -> Figure:
    """Receptive-field size and stride per layer (local layers of a ``fields_table``)."""
    rows = table[table["R_y"] != "-"].reset_index(drop=True)
    fig, ax = subplots(figsize=(9, 3.8), layout="constrained")
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
    return buf.getvalue()


def figure_array(fig: Figure, dpi: int = 100):
    """The figure as a uint8 RGB array ``[H, W, 3]`` (and closes it), e.g. for
    ``tf.summary.image``."""
    import numpy as np

    fig.set_dpi(dpi)
    fig.canvas.draw()
    out = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    return out


@plain_text
def deletion_insertion_plot(curves: dict, references=("random", "center")) -> Figure:
    """Mean deletion and insertion curves per method (areas in the legend).

    Args:
        curves: ``{method: (deletion, insertion)}`` of :class:`tfcam.explain.metrics.Curves`.
        references: Methods drawn dashed (maps that know nothing about the model).
    """
    fig, axes = subplots(1, 2, figsize=(10, 4), layout="constrained")
    for method, (dele, ins) in curves.items():
        style = "--" if method in references else "-"
        for ax, c in ((axes[0], dele), (axes[1], ins)):
            ax.plot(c.fractions, c.scores.mean(0), style, label=f"{method} ({c.auc.mean():.3f})")
    for ax, title, xlabel in (
        (axes[0], "Deletion (lower area is better)", "share of pixels removed"),
        (axes[1], "Insertion (higher area is better)", "share of pixels revealed"),
    ):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("probability of the target class")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return fig


@plain_text
def sanity_plot(counts, down_to, spearman: dict) -> Figure:
    """Spearman correlation with the trained model's maps as more top layers are randomised."""
    fig, ax = subplots(figsize=(8, 4), layout="constrained")
    x = list(range(len(counts)))
    for method, ys in spearman.items():
        ax.plot(x, ys, "o-", label=method)
    ax.set_xticks(x, [f"{c}\n{n}" for c, n in zip(counts, down_to, strict=True)], fontsize=7)
    ax.set_xlabel("top layers randomised (down to)")
    ax.set_ylabel("Spearman correlation with trained maps")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylim(-0.2, 1.02)
    ax.set_title("Sanity check: cascading randomisation (Adebayo et al. 2018)", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


@plain_text
def overlaid_learning_curves(histories: dict) -> Figure:
    """Validation accuracy and loss per epoch of several runs on shared axes, one colour per
    run (training loss dashed in the same colour).

    Args:
        histories: ``{run name: history.csv as a DataFrame}``.
    """
    fig, axes = subplots(1, 2, figsize=(11, 4), layout="constrained")
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, h) in enumerate(histories.items()):
        c = colours[i % len(colours)]
        x = h["epoch"] if "epoch" in h else range(1, len(h) + 1)
        if "val_accuracy" in h:
            axes[0].plot(x, h["val_accuracy"], "-o", ms=3, color=c, label=name)
        if "val_loss" in h:
            axes[1].plot(x, h["val_loss"], "-o", ms=3, color=c, label=name)
        if "loss" in h:
            axes[1].plot(x, h["loss"], "--", color=c, alpha=0.6)
    axes[0].set_title("Validation accuracy", fontsize=10)
    axes[1].set_title("Loss (validation solid, training dashed)", fontsize=10)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if histories:
        axes[0].legend(fontsize=7)
    return fig
