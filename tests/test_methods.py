"""The method table (:mod:`tfcam.explain.methods`): TensorFlow-free, tied to the registries of
the passes, names and aliases checked, and a new gradient-weighted CAM is one function."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfcam.errors import UserError
from tfcam.explain import methods
from tfcam.explain.methods import (
    ATTENTION,
    CAM,
    GRADIENT,
    GRADIENT_CAM,
    METHODS,
    TABLE,
    parse_methods,
)


def test_the_table_imports_without_tensorflow():
    code = (
        "import sys\n"
        "from tfcam.explain.methods import method_lines, parse_methods\n"
        "assert parse_methods(['gradcam,ig', 'Grad-CAM++']) == "
        "['gradcam', 'integrated_gradients', 'gradcam++']\n"
        "lines = method_lines()\n"
        "assert lines[0].startswith('gradcam ') and 'Selvaraju et al. 2017' in lines[0], lines\n"
        "assert 'tensorflow' not in sys.modules, 'the method table imported TensorFlow'\n"
        "assert 'keras' not in sys.modules, 'the method table imported Keras'\n"
        "print(len(lines))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(len(TABLE))


def test_method_lines_are_aligned_rows_of_the_table():
    lines = methods.method_lines()
    assert [line.split()[0] for line in lines] == list(METHODS)
    width = max(map(len, METHODS))
    for line, (name, m) in zip(lines, TABLE.items(), strict=True):
        assert line == f"{name:<{width}}  {m.summary} [{m.paper}]"


def test_every_row_has_its_computation_and_every_registry_entry_a_row():
    from tfcam.explain.attention import RULES
    from tfcam.explain.cams import PASSES
    from tfcam.explain.gradients import ATTRIBUTIONS

    kinds = {name: m.kind for name, m in TABLE.items()}
    assert set(kinds.values()) == {GRADIENT_CAM, CAM, GRADIENT, ATTENTION}
    for name, m in TABLE.items():
        if m.kind == CAM:
            assert name in PASSES, f"{name}: no @cam_pass in tfcam.explain.cams"
        elif m.kind == GRADIENT:
            assert name in ATTRIBUTIONS, f"{name}: no @attribution in tfcam.explain.gradients"
        elif m.kind == ATTENTION:
            assert name in RULES, f"{name}: no @rule in tfcam.explain.attention"
            assert not m.uses_layer, name
        else:
            assert callable(m.weights), f"{name}: a gradient CAM without a weighting rule"
            assert name not in PASSES and name not in ATTRIBUTIONS
        if m.kind != GRADIENT_CAM:
            assert m.weights is None, name
    # No registry holds a method the table (and so the CLI, --list-methods, the report) lacks.
    assert set(PASSES) == {n for n, k in kinds.items() if k == CAM}
    assert set(ATTRIBUTIONS) == {n for n, k in kinds.items() if k == GRADIENT}
    assert set(RULES) == {n for n, k in kinds.items() if k == ATTENTION}
    # The derived tuples are views of the table.
    assert tuple(n for n, k in kinds.items() if k in (GRADIENT_CAM, CAM)) == methods.CAM_METHODS
    assert tuple(n for n, k in kinds.items() if k == ATTENTION) == methods.ATTENTION_METHODS
    assert tuple(n for n, k in kinds.items() if k == GRADIENT) == methods.GRADIENT_METHODS
    assert (*methods.CAM_METHODS, "guided_gradcam") == methods.LAYER_METHODS


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("gradcamplusplus", "gradcam++"),
        ("ig", "integrated_gradients"),
        ("vanilla", "saliency"),
        ("Guided-Backprop", "guided_backprop"),
        ("GuidedBackpropagation", "guided_backprop"),
        ("Grad-CAM", "gradcam"),
        (" Integrated Gradients ", "integrated_gradients"),
    ],
)
def test_aliases_and_spellings_parse(given, name):
    assert parse_methods([given]) == [name]


def test_parse_methods_splits_dedupes_and_rejects_unknown_names():
    assert parse_methods(["gradcam, Grad-CAM++", "ig"]) == [
        "gradcam",
        "gradcam++",
        "integrated_gradients",
    ]
    assert parse_methods(["gradcam,,gradcam", "GradCAM"]) == ["gradcam"]
    with pytest.raises(UserError, match="Unknown method 'nope'"):
        parse_methods(["gradcam,nope"])
    with pytest.raises(UserError) as info:
        parse_methods(["scorcam"])
    message = str(info.value)
    assert message.startswith("Unknown method 'scorcam'. Did you mean 'scorecam'")
    assert message.split("Choose from: ", 1)[1].split(", ") == list(METHODS)


def _hand_abs_gradcam(model, layer: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rule ``A · mean|∂y/∂A|`` from a tape of our own: raw maps ``[N, h, w]`` and the
    heatmaps ``[N, H, W]`` (bilinear, half-pixel centres, then min-max), in NumPy."""
    import keras

    head = model.get_layer("predictions")
    probe = keras.Model(model.inputs[0], [model.get_layer(layer).output, head.input])
    kernel, bias = (w.numpy() for w in (head.kernel, head.bias))
    with tf.GradientTape() as tape:
        acts, pooled = probe(tf.constant(x), training=False)
        logits = tf.matmul(pooled, kernel) + bias  # the logits: the softmax's input
        target = tf.argmax(logits, axis=1)
        score = tf.gather(logits, target, axis=1, batch_dims=1)
    grads = tape.gradient(score, acts).numpy().astype(np.float64)
    acts = acts.numpy().astype(np.float64)
    raw = np.maximum((acts * np.abs(grads).mean(axis=(1, 2), keepdims=True)).sum(-1), 0)

    def resize_axis(a, size, axis):
        n = a.shape[axis]
        src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        frac = (src - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
        return np.take(a, lo, axis=axis) * (1 - frac) + np.take(a, hi, axis=axis) * frac

    up = resize_axis(resize_axis(raw, x.shape[1], 1), x.shape[2], 2)
    lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
    return raw, (up - lo) / (hi - lo)


def test_a_new_gradient_cam_is_one_decorated_function(small):
    from tfcam.explain.api import explain
    from tfcam.explain.engine import Explainer

    model, x = small
    try:

        @methods.gradient_cam("test_abs_gradcam", "mean |gradient| channel weights", "Test 2026")
        def abs_gradcam(tf, acts, grads):
            return acts * tf.reduce_mean(tf.abs(grads), axis=[1, 2], keepdims=True)

        assert TABLE["test_abs_gradcam"].weights is abs_gradcam
        assert parse_methods(["test_abs_gradcam"]) == ["test_abs_gradcam"]
        e = explain(Explainer(model), x, "test_abs_gradcam")
        raw, heat = _hand_abs_gradcam(model, "block4_relu", x)
        assert list(e.heatmaps) == ["block4_relu"]  # the default layer of simple_cnn
        np.testing.assert_allclose(e.raw["block4_relu"], raw, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(e.heatmap, heat, atol=1e-5)
        # Not Grad-CAM under another name: |g| weights give another map.
        assert not np.allclose(e.heatmap, explain(Explainer(model), x, "gradcam").heatmap)
    finally:
        # The derived tuples (METHODS, CAM_METHODS, …) were computed at import and never listed
        # the new row; only the table itself needs restoring.
        methods.TABLE.pop("test_abs_gradcam", None)
    assert "test_abs_gradcam" not in METHODS
    with pytest.raises(UserError, match="Unknown method 'test_abs_gradcam'"):
        parse_methods(["test_abs_gradcam"])
