"""The notebook face (:mod:`tfcam.notebook`, ``tfcam/__init__.py``): ``import tfcam`` registers the
layers and keeps TensorFlow quiet without importing it, ``tfcam.load_run`` opens a run, and
``predict`` / ``explain`` take paths, folders, Pillow images, arrays and tensors read the way
training reads them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from tfcam.errors import UserError

PY = sys.executable


def _python(code: str, **env) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter importing this worktree's tfcam; TensorFlow's own log
    settings are left to tfcam (the test session's ``TF_CPP_MIN_LOG_LEVEL`` is not passed on)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    environ.update(PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [PY, "-c", code], capture_output=True, text=True, env=environ, cwd=REPO, timeout=300
    )


@pytest.fixture(scope="module")
def val_paths(tiny_run):
    import pandas as pd

    splits = pd.read_csv(tiny_run / "splits.csv")
    return [str(p) for p in splits[splits.split == "val"].path[:3]]


# import tfcam ------------------------------------------------------------------------------


def test_keras_load_model_opens_a_tfcam_model_after_import_tfcam(tiny_run):
    # Before the fix: "Could not locate class 'Preprocess'" (tfcam's layers were not registered).
    code = (
        "import sys, tfcam, keras, numpy as np\n"
        f"m = keras.saving.load_model({str(tiny_run / 'model.keras')!r})\n"
        "print(type(m.get_layer('preprocess')).__module__, m.output.shape[-1])\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["tfcam.models.layers", "3"]


def test_layers_are_registered_when_keras_was_imported_first(tiny_run):
    code = (
        "import keras, tfcam\n"
        "assert 'tfcam>Preprocess' in keras.saving.get_custom_objects()\n"
        f"keras.saving.load_model({str(tiny_run / 'model.keras')!r})\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]


def test_import_tfcam_loads_no_tensorflow_and_leaves_import_machinery_as_it_was():
    code = (
        "import sys, tfcam\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "print(tfcam.__version__, 'load_run' in dir(tfcam))\n"
        "import tensorflow as tf\n"
        "assert not any(type(f).__module__ == 'tfcam.startup' for f in sys.meta_path)\n"
        "assert type(tf.__spec__.loader).__module__ != 'tfcam.startup'\n"
        "assert type(sys.modules['keras'].__loader__).__module__ != 'tfcam.startup'\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[1] == "True"


def test_the_native_noise_filter_drops_the_onednn_type_notices_and_keeps_real_errors():
    from tfcam.startup import NATIVE_NOISE

    # Printed once per process by ViTs (DT_INT32: position ids) and uint8 transposes (DT_UINT8)
    # on CPUs without AVX-512: a performance note, not an error. DT_INT32 came through before.
    for dtype in ("DT_UINT8", "DT_INT32", "DT_BFLOAT16"):
        line = (
            f"E0000 00:00:1796297829.482825     403 util.cc:131] oneDNN supports {dtype} only "
            "on platforms with AVX-512. Falling back to the default Eigen-based implementation"
        )
        assert NATIVE_NOISE.match(line.encode()), dtype
    for kept in (
        "E0000 00:00:1796297829.482825     403 util.cc:131] oneDNN failed to allocate memory",
        "ValueError: oneDNN supports DT_INT32 only",
        "Traceback (most recent call last):",
    ):
        assert not NATIVE_NOISE.match(kept.encode()), kept


def test_no_tensorflow_native_lines_after_import_tfcam(tiny_run, val_paths):
    # Before the fix: the absl banner, the oneDNN and CUDA lines were printed to stderr even
    # with TF_CPP_MIN_LOG_LEVEL=2 (they come before TensorFlow's logging is set up).
    code = (
        "import tfcam\n"
        f"run = tfcam.load_run({str(tiny_run)!r})\n"
        f"print(run.explain({val_paths[:2]!r}, 'gradcam').heatmap.shape)\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(2, 32, 32)"
    noise = [
        line
        for line in done.stderr.splitlines()
        if line.startswith(("I0", "W0", "E0", "WARNING: All log messages", "To enable"))
    ]
    assert not noise, noise
    # The user's own choice of TensorFlow logs still wins.
    kept = _python("import tfcam, tensorflow", TFCAM_TF_LOGS="1", TF_CPP_MIN_LOG_LEVEL="0")
    assert "I0" in kept.stderr or "WARNING: All log messages" in kept.stderr


# load_run ----------------------------------------------------------------------------------


def test_load_run_gives_model_class_names_config_splits_and_metrics(tiny_run):
    import json

    import pandas as pd

    import tfcam

    run = tfcam.load_run(tiny_run)
    assert run.class_names == json.loads((tiny_run / "class_names.json").read_text())
    assert run.config.data.image_size == 32 and run.config.model.backbone == "simple_cnn"
    assert run.metrics == json.loads((tiny_run / "metrics.json").read_text())
    pd.testing.assert_frame_equal(run.splits, pd.read_csv(tiny_run / "splits.csv"))
    assert list(run.history.epoch) == [1, 2]
    assert run.model.output.shape[-1] == len(run.class_names)
    assert "simple_cnn" in repr(run)


def test_load_run_of_a_folder_that_is_no_run_names_it(tmp_path):
    import tfcam

    with pytest.raises(UserError, match="not a tfcam run directory"):
        tfcam.load_run(tmp_path)
    with pytest.raises(UserError, match="Run directory not found"):
        tfcam.load_run(tmp_path / "nope")


# explain -----------------------------------------------------------------------------------


def test_explain_three_paths_gives_n_h_w_heatmaps_equal_to_the_engine(tiny_run, val_paths):
    import tfcam
    from tfcam.data.pipeline import read_images
    from tfcam.explain.api import explain
    from tfcam.explain.engine import Explainer
    from tfcam.models.build import load_model

    e = tfcam.load_run(tiny_run).explain(val_paths, "gradcam")
    assert e.heatmap.shape == (3, 32, 32) and e.heatmap.dtype == np.float32
    assert e.heatmap.min() >= 0.0 and e.heatmap.max() <= 1.0
    # The 15 lines of before, done by hand: the same numbers.
    x = read_images(val_paths, 32, "stretch")
    want = explain(Explainer(load_model(tiny_run / "model.keras")), x, "gradcam")
    np.testing.assert_allclose(e.heatmap, want.heatmap, atol=1e-5)
    np.testing.assert_array_equal(e.images, x)
    assert e.paths == val_paths and e.names == [Path(p).name for p in val_paths]
    np.testing.assert_array_equal(e.predicted, want.probabilities.argmax(1))


def test_every_kind_of_input_is_read_the_way_training_reads_it(tiny_run, val_paths):
    import tensorflow as tf
    from PIL import Image

    import tfcam

    run = tfcam.load_run(tiny_run)
    by_path = run.explain(val_paths, "gradcam").heatmap
    pil = Image.open(val_paths[0])
    uint8 = np.asarray(Image.open(val_paths[1]).convert("RGB"))
    tensor = tf.constant(np.asarray(Image.open(val_paths[2]).convert("RGB")), tf.float32)
    mixed = run.explain([pil, uint8, tensor], "gradcam")
    np.testing.assert_allclose(mixed.heatmap, by_path, atol=1e-5)
    assert mixed.paths == [None, None, None] and mixed.names == ["#0", "#1", "#2"]
    # A 4-D array is a batch; a folder is every image in it (sorted, recursively).
    batch = run.explain(np.stack([uint8, uint8]), "gradcam")
    assert batch.heatmap.shape == (2, 32, 32)
    folder = Path(val_paths[0]).parent
    files = sorted(str(p) for p in folder.rglob("*.png"))
    assert run.explain(folder, "gradcam").paths == files


def test_images_of_another_size_are_resized_in_the_runs_mode(tiny_run, tmp_path, val_paths):
    from PIL import Image

    import tfcam
    from tfcam.data.pipeline import read_images

    big = np.asarray(Image.open(val_paths[0]).convert("RGB").resize((80, 56)))
    path = tmp_path / "big.png"
    Image.fromarray(big).save(path)
    run = tfcam.load_run(tiny_run)
    e = run.explain([big, path], "gradcam")
    np.testing.assert_allclose(e.images[0], read_images([str(path)], 32, "stretch")[0], atol=1e-3)
    np.testing.assert_allclose(e.heatmap[0], e.heatmap[1], atol=1e-4)


def test_layer_and_target_reach_the_engine(tiny_run, val_paths):
    import tfcam

    run = tfcam.load_run(tiny_run)
    e = run.explain(val_paths, "gradcam", layer="block2_relu", target="triangle")
    assert list(e.heatmaps) == ["block2_relu"]
    assert list(e.targets) == [run.class_names.index("triangle")] * 3
    with pytest.raises(UserError, match="Unknown layer 'nope'"):
        run.explain(val_paths, layer="nope")
    with pytest.raises(UserError, match="Unknown class 'tri'"):
        run.explain(val_paths, target="tri")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["missing.png"], "Image not found: 'missing.png'"),
        ([], "No images given"),
        (np.zeros((4, 5, 2), np.uint8), r"shape \(4, 5, 2\)"),
        ([object()], "Cannot use image 0 of type object"),
        (np.full((32, 32, 3), np.nan, np.float32), "NaN or infinite"),
    ],
)
def test_bad_inputs_are_refused_with_one_clear_message(tiny_run, bad, message):
    import tfcam

    with pytest.raises(UserError, match=message):
        tfcam.load_run(tiny_run).explain(bad)


def test_float_images_in_unit_range_warn_instead_of_being_rescaled(tiny_run, val_paths):
    from PIL import Image

    import tfcam

    unit = np.asarray(Image.open(val_paths[0]).convert("RGB"), np.float32) / 255
    with pytest.warns(UserWarning, match=r"lie in \[0, 1\].*multiply them by 255"):
        e = tfcam.load_run(tiny_run).explain(unit)
    np.testing.assert_array_equal(e.images[0], unit)


# what a notebook shows ---------------------------------------------------------------------


def test_overlays_blend_each_map_over_its_image(tiny_run, val_paths):
    import tfcam
    from tfcam.viz.overlay import colorize

    e = tfcam.load_run(tiny_run).explain(val_paths)
    over = e.overlays(alpha=0.5)
    assert over.shape == (3, 32, 32, 3) and over.dtype == np.uint8
    want = 0.5 * e.images[1] + 0.5 * colorize(e.heatmap[1]).astype(np.float32)
    assert np.abs(over[1].astype(np.float32) - want).max() <= 0.51


def test_show_draws_one_titled_tile_per_image(tiny_run, val_paths):
    from matplotlib.figure import Figure

    import tfcam

    run = tfcam.load_run(tiny_run)
    e = run.explain(val_paths, target="circle")
    fig = e.show(columns=2)
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.images]
    assert len(axes) == 3
    title = axes[0].get_title()
    p = e.probabilities[0, e.predicted[0]]
    assert Path(val_paths[0]).name in title and f"({p:.2f})" in title
    if e.predicted[0] != run.class_names.index("circle"):
        assert "explains circle" in title


def test_repr_html_inlines_png_tiles_and_escapes_names(tiny_run, val_paths, tmp_path):
    import base64
    import io
    import shutil

    from PIL import Image

    import tfcam

    hostile = tmp_path / "<img src=x onerror=alert(1)>.png"
    shutil.copy(val_paths[0], hostile)
    e = tfcam.load_run(tiny_run).explain([hostile, val_paths[1]])
    page = e._repr_html_()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.png" in page
    sources = page.split('src="data:image/png;base64,')[1:]
    assert len(sources) == 2
    tile = np.asarray(Image.open(io.BytesIO(base64.b64decode(sources[1].split('"')[0]))))
    np.testing.assert_array_equal(tile, e.overlays()[1])


# any Keras classifier ----------------------------------------------------------------------


def test_explainer_of_any_keras_model_infers_its_size_and_returns_an_explanation(tmp_path):
    import keras
    from PIL import Image

    import tfcam
    from tfcam.explain.api import gradcam

    keras.utils.set_random_seed(0)
    inputs = keras.Input((40, 40, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    ex = tfcam.Explainer(model, class_names=["cat", "dog"])
    assert ex.input_size == (40, 40)
    e = ex.explain([tmp_path / "photo.png"], "gradcam")
    assert isinstance(e, tfcam.Explanation) and e.heatmap.shape == (1, 40, 40)
    assert e.predicted_names[0] in ("cat", "dog")
    # The functional shortcut takes the same inputs and gives the same map.
    np.testing.assert_allclose(gradcam(model, [tmp_path / "photo.png"]), e.heatmap, atol=1e-5)
    table = ex.predict(tmp_path)
    assert list(table.columns) == ["path", "predicted", "probability", "top_k"]
    assert table.path[0] == str(tmp_path / "photo.png")
    np.testing.assert_allclose(table.probability[0], e.probabilities[0].max(), rtol=1e-5)


def test_predict_takes_a_folder_and_matches_tfcam_predict(tiny_run, val_paths):
    import tfcam
    from tfcam.train.evaluate import predict_images

    run = tfcam.load_run(tiny_run)
    folder = Path(val_paths[0]).parent
    table = run.predict(folder, top_k=2)
    files = sorted(str(p) for p in folder.rglob("*.png"))
    assert list(table.path) == files
    want = predict_images(tiny_run, files, top_k=2)
    assert list(table.predicted) == [w["predicted"] for w in want]
    np.testing.assert_allclose(table.probability, [w["confidence"] for w in want], rtol=1e-4)
    assert [len(k) for k in table.top_k] == [2] * len(files)
    with pytest.raises(UserError, match="top_k"):
        run.predict(folder, top_k=0)


# the example notebook ----------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    """``examples/quickstart.ipynb`` runs top to bottom in a Jupyter kernel (nbclient), shows its
    explanation inline and prints no TensorFlow start-up lines."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")

    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    assert (tmp_path / "runs" / "quickstart" / "model.keras").is_file()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert "absl::InitializeLog" not in stderr and "oneDNN custom operations" not in stderr
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("data:image/png;base64," in h for h in html)  # the explanation, inline
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1  # show() displays its grid once
    assert "(6, 32, 32)" in "".join(o.get("text", "") for o in outputs)
