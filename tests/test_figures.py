"""Figure functions: what each one drew, read back from the returned matplotlib figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from tfcam.viz import gallery, overlay, patches, plots


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_learning_curves_two_panels_with_the_fine_tune_boundary():
    h = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "phase": [1, 1, 2, 2],
            "loss": [1.0, 0.8, 0.6, 0.5],
            "accuracy": [0.5, 0.6, 0.7, 0.8],
            "val_loss": [1.1, 0.9, 0.7, 0.6],
            "val_accuracy": [0.4, 0.5, 0.6, 0.7],
        }
    )
    fig = plots.learning_curves(h)
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["Loss", "Accuracy"]
    for ax, col in zip(axes, ("loss", "accuracy"), strict=True):
        lines = [ln for ln in ax.get_lines() if ln.get_label() in ("train", "validation")]
        assert [ln.get_label() for ln in lines] == ["train", "validation"]
        np.testing.assert_allclose(lines[0].get_ydata(), h[col])
        vlines = [ln for ln in ax.get_lines() if ln.get_label().startswith("_")]
        assert any(np.allclose(ln.get_xdata(), 2.5) for ln in vlines)  # between epochs 2 and 3
        assert " fine-tuning" in texts(ax)


def test_batch_loss_curve():
    b = pd.DataFrame(
        {"step": range(6), "epoch": [0, 0, 0, 1, 1, 1], "loss": [3, 2, 1.5, 1.2, 1, 0.9]}
    )
    ax = plots.batch_loss_curve(b).axes[0]
    assert ax.get_title() == "Training loss per batch"
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), b["loss"])
    # A centred moving average over about an epoch's batches (3 here), then the epoch starts.
    want = b["loss"].rolling(3, min_periods=1, center=True).mean()
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), want)
    assert sorted(ln.get_xdata()[0] for ln in ax.get_lines()[2:]) == [0, 3]


def test_class_distribution_bars_and_labels():
    counts = pd.DataFrame({"train": [10, 20], "val": [3, 4]}, index=["ants", "bees"])
    ax = plots.class_distribution(counts).axes[0]
    heights = [p.get_height() for p in ax.patches]
    assert heights == [10, 20, 3, 4]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["ants", "bees"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val"]
    assert sorted(texts(ax)) == sorted(["10", "20", "3", "4"])


def test_confusion_matrix_counts_and_row_normalised():
    cm = [[5, 1, 0], [2, 6, 2], [0, 0, 4]]
    names = ["cat", "dog", "fox"]
    fig = plots.confusion_matrix_figure(cm, names, title="CM")
    left, right = fig.axes
    assert left.get_title() == "CM (counts)" and right.get_title() == "CM (row-normalised)"
    for ax in (left, right):
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert texts(left) == [str(v) for row in cm for v in row]
    want = [f"{v / sum(row):.2f}" for row in cm for v in row]
    assert texts(right) == want


def test_lr_finder_curve():
    df = pd.DataFrame({"lr": [1e-5, 1e-4, 1e-3, 1e-2], "loss": [2.0, 1.5, 1.0, 3.0]})
    ax = plots.lr_finder_curve(df, suggestion=1e-3).axes[0]
    assert ax.get_xscale() == "log" and ax.get_title() == "Learning-rate finder"
    assert "suggested 0.001" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_image_grid_class_cams_and_layer_grid():
    imgs = [np.full((8, 8, 3), i * 20, np.uint8) for i in range(5)]
    fig = gallery.image_grid(imgs, [f"t{i}" for i in range(5)], cols=3, suptitle="S")
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 5 and [ax.get_title() for ax in shown] == [f"t{i}" for i in range(5)]
    assert len(fig.axes) == 6 and fig._suptitle.get_text() == "S"
    np.testing.assert_array_equal(shown[2].images[0].get_array(), imgs[2])

    fig = gallery.class_cams(imgs[0], imgs[1:4], ["a", "b", "c"], [0.2, 0.7, 0.1], true="b")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["image\n(true: b)", "a\np=0.20", "b\np=0.70 ★", "c\np=0.10"]

    fig = gallery.layer_grid(imgs[:2], {"l1": imgs[2:4], "l2": imgs[3:5]}, row_titles=["x", "y"])
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "l1", "l2"]
    np.testing.assert_array_equal(fig.axes[5].images[0].get_array(), imgs[4])


def test_feature_grid_and_panel_and_patch_grid():
    acts = np.random.default_rng(0).random((6, 6, 10)).astype("float32")
    fig = overlay.feature_grid(acts, [3, 7, 1], title="T")
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title().split()[0] for ax in shown] == ["#3", "#7", "#1"]
    np.testing.assert_allclose(shown[1].images[0].get_array().max(), 1.0)  # each channel to [0, 1]

    tiles = [np.zeros((4, 4, 3), np.uint8)] * 3
    fig = overlay.panel(tiles, ["a", "b", "c"], suptitle="P")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]

    fig = patches.patch_grid(tiles[:2], ["p1", "p2"], suptitle="G")
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["p1", "p2"]


def test_effective_field_and_growth_plots():
    erf = np.zeros((20, 20))
    erf[8:12, 8:12] = 1 / 16
    ax = plots.effective_field_plot(erf, (9.5, 9.5), 1.5, (5, 5, 14, 14), title="E").axes[0]
    rects = [p for p in ax.patches]
    assert (rects[0].get_x(), rects[0].get_y(), rects[0].get_width()) == (4.5, 4.5, 10)
    assert (rects[1].get_x(), rects[1].get_width()) == (7.5, 4.0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["theoretical 10×10", "95% of mass 4×4"]
    table = pd.DataFrame({"layer": ["a", "b", "g"], "R_y": [3, 5, "-"], "S_y": [1, 2, "-"]})
    ax = plots.field_growth_plot(table).axes[0]
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [3, 5])


def test_gradient_image_scales_by_a_high_percentile():
    a = np.zeros((10, 10, 3))
    a[0, 0, 0] = 100.0  # one outlier
    a[1:, :, :] = 0.5
    a[1, 1, 1] = -0.5
    img = overlay.gradient_image(a)
    assert img[0, 0, 0] == 255  # clipped
    assert img[5, 5, 0] == 255 and img[1, 1, 1] == 0  # the bulk uses the full range
    assert (overlay.gradient_image(np.zeros((2, 2, 3))) == 128).all()


def test_confusion_matrix_figure_shows_full_class_names():
    names = ["a_rather_long_class_name_one", "another_long_class_name_two", "c"]
    fig = plots.confusion_matrix_figure(np.eye(3, dtype=int) * 4, names)
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        assert [t.get_text() for t in ax.get_yticklabels()] == names
    short = plots.figure_array(plots.confusion_matrix_figure(np.eye(3) * 4, ["a", "b", "c"]), 80)
    long = plots.figure_array(plots.confusion_matrix_figure(np.eye(3) * 4, names), 80)
    assert long.shape[0] > short.shape[0] and long.dtype == np.uint8  # room for the names


def test_labelled_tiles_are_exactly_tile_px_under_their_title():
    from tfcam.viz.gallery import labelled_tiles

    colours = [(10 + 40 * i, 200 - 40 * i, 77) for i in range(5)]  # no text pixel has these
    tiles = [np.broadcast_to(np.array(c, np.uint8), (32, 48, 3)) for c in colours]
    img = labelled_tiles(
        tiles,
        ["true: a\npred: b 0.90"] * 5,
        colours=["crimson"] + ["black"] * 4,
        cols=4,
        tile_px=200,
        pad=8,
    )
    assert img.dtype == np.uint8 and img.shape[1] == 4 * 200 + 5 * 8

    # First tile: its grey fills 200 columns (the 48-px side scaled to 200), 133 rows.
    def where(c):
        return np.all(img == np.array(c, np.uint8), axis=2)

    rows, cols = np.nonzero(where(colours[0]))
    assert cols.max() - cols.min() + 1 == 200 and rows.max() - rows.min() + 1 == round(
        32 * 200 / 48
    )
    # Its title sits above it and is red; the second title is dark.
    title = img[8 : rows.min(), 8:208].astype(int)
    red = (title[..., 0] > 150) & (title[..., 1] < 100)
    assert red.sum() > 20
    second = img[8 : rows.min(), 216:416].astype(int)
    assert (second.sum(axis=2) < 200).sum() > 20 and not (
        (second[..., 0] > 150) & (second[..., 1] < 100)
    ).any()
    # Five tiles in rows of four: a second row below the first.
    assert where(colours[4]).any(axis=1).nonzero()[0].min() > rows.max()


def test_gallery_grid_writes_file_names_under_the_tiles():
    from tfcam.viz.gallery import image_grid

    names = ["val_circle_00001.png", "a" * 80 + ".jpg"]
    fig = image_grid([np.zeros((8, 8, 3))] * 2, ["t1", "t2"], captions=names, cell=2.0)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts[0] == names[0]
    assert texts[1].startswith("aaa") and texts[1].endswith("a.jpg") and "…" in texts[1]
    for t in (t for ax in fig.axes for t in ax.texts):
        assert t.get_position()[1] < 0  # under the image, not over it


DOLLAR_NAMES = [r"a$\x$b", "cost $5 and $6", r"$\frac{1}{0}$"]


def test_user_named_text_with_dollars_draws_as_plain_text():
    """Class and file names reach titles and tick labels; with mathtext on, ``a$\\x$b`` made the
    figure fail to draw and ``cost $5 and $6`` rendered as maths (issue 14, item 12)."""
    tile = np.zeros((8, 8, 3), np.uint8)
    figures = [
        gallery.image_grid([tile] * 3, DOLLAR_NAMES, suptitle=DOLLAR_NAMES[0]),
        overlay.panel([tile] * 3, DOLLAR_NAMES, suptitle=DOLLAR_NAMES[1]),
        plots.confusion_matrix_figure(np.eye(3, dtype=int), DOLLAR_NAMES),
    ]
    for fig in figures:
        assert plots.to_png(fig)[:4] == b"\x89PNG"
        shown = {t.get_text() for t in fig.findobj(matplotlib.text.Text)}
        assert set(DOLLAR_NAMES) <= shown
        for t in fig.findobj(matplotlib.text.Text):
            if "$" in t.get_text():
                assert not t._parse_math, t.get_text()  # drawn literally, not as maths
    # The decorator leaves the user's own matplotlib settings alone.
    assert matplotlib.rcParams["text.parse_math"] is True


def test_drawing_never_touches_pyplot_or_the_backend(tmp_path):
    """A notebook user's own pyplot figures keep their inline backend: before, importing
    tfcam.viz called ``matplotlib.use("Agg")`` and drew through pyplot (which also keeps every
    figure until it is closed)."""
    import subprocess
    import sys

    from conftest import REPO

    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "import numpy as np, pandas as pd\n"
        "from tfcam.viz import gallery, overlay, patches, plots\n"
        "h = pd.DataFrame({'epoch': [1, 2], 'phase': [1, 2], 'loss': [1.0, 0.5],\n"
        "                  'accuracy': [0.5, 0.9], 'val_loss': [1.1, 0.6], 'val_accuracy': [0.4, 0.8]})\n"
        "png = plots.to_png(plots.learning_curves(h))\n"
        "arr = plots.figure_array(overlay.feature_grid(np.random.rand(6, 6, 4), [0, 1, 2]))\n"
        "print(png[:4] == b'\\x89PNG', arr.ndim, matplotlib.get_backend(),\n"
        "      'matplotlib.pyplot' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "3", "svg", "False"]
