"""The explanation engine (:mod:`tfcam.explain.engine`): compiled functions that never retrace,
constant maps, an untouched model, logit or probability scores, targets, binary models, layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcam.errors import UserError
from tfcam.explain.cams import explain_cam
from tfcam.explain.engine import Explainer
from tfcam.explain.gradients import explain_gradients
from tfcam.explain.methods import CAM_METHODS, GRADIENT_METHODS


def test_no_retracing_across_batches(small):
    model, x = small
    ex = Explainer(model, batch_size=4)
    many = np.concatenate([x, x, x[:3]])  # 4 + 4 + 3 images: two full batches and a short one
    explain_cam(ex, many, "gradcam")
    explain_gradients(ex, many, "saliency")
    counts = ex.trace_counts()
    for _ in range(3):
        explain_cam(ex, many, "gradcam")
        explain_gradients(ex, many, "saliency")
    assert ex.trace_counts() == counts
    assert all(n == 1 for n in counts.values()), counts


def test_constant_maps_are_zeros_with_a_warning():
    inp = keras.Input((8, 8, 3))
    dead = keras.layers.Conv2D(
        4, 3, padding="same", kernel_initializer="zeros", bias_initializer="zeros", name="dead"
    )(inp)
    dead = keras.layers.ReLU(name="dead_relu")(dead)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(
        keras.layers.GlobalAveragePooling2D()(dead)
    )
    model = keras.Model(inp, out)
    x = np.ones((2, 8, 8, 3), "float32")
    for method in ("gradcam", "scorecam", "eigencam", "layercam"):
        with pytest.warns(UserWarning, match="constant"):
            e = explain_cam(Explainer(model), x, method, layers="dead_relu")
        assert np.isfinite(e.heatmap).all() and (e.heatmap == 0).all()
        assert e.constant["dead_relu"].all()


def test_model_is_never_modified(small):
    model, x = small
    before = [w.copy() for w in model.get_weights()]
    pred = model.predict(x, verbose=0)
    layers = [id(layer) for layer in model.layers]
    ex = Explainer(model)
    for method in CAM_METHODS:
        explain_cam(ex, x[:1], method, max_n=4)
    for method in GRADIENT_METHODS:
        explain_gradients(ex, x[:1], method, samples=2, steps=4)
    assert [id(layer) for layer in model.layers] == layers
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(model.predict(x, verbose=0), pred, rtol=1e-6)


def test_scores_are_logits_unless_probability_is_asked(small):
    model, x = small
    probs = model.predict(x, verbose=0)
    logits = Explainer(model).forward_logits(x)
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), probs, rtol=1e-5, atol=1e-6)
    e = explain_cam(Explainer(model), x, "gradcam", targets=1)
    np.testing.assert_allclose(e.scores, logits[:, 1], rtol=1e-5)
    e = explain_cam(Explainer(model, score="probability"), x, "gradcam", targets=1)
    np.testing.assert_allclose(e.scores, probs[:, 1], rtol=1e-5)


def test_targets_by_name_per_image_and_errors(small):
    # The method-name checks of parse_methods live in test_methods.py.
    model, x = small
    ex = Explainer(model, class_names=["ant", "bee", "cat", "dog"])
    e = explain_cam(ex, x, "gradcam", targets=["bee", 3, "ant", "2"])
    np.testing.assert_array_equal(e.targets, [1, 3, 0, 2])
    with pytest.raises(
        UserError, match="Unknown class 'bea'. Did you mean 'bee'.*ant, bee, cat, dog"
    ):
        explain_cam(ex, x, "gradcam", targets="bea")
    with pytest.raises(UserError, match="out of range"):
        explain_cam(ex, x, "gradcam", targets=7)
    with pytest.raises(UserError, match="Unknown layer 'block9_relu'.*block4_relu"):
        explain_cam(ex, x, "gradcam", layers="block9_relu")
    with pytest.raises(UserError, match="no spatial"):
        explain_cam(ex, x, "gradcam", layers="head_pool")
    with pytest.raises(UserError, match="Unknown CAM method 'gradcan'. Did you mean 'gradcam'"):
        explain_cam(ex, x, "gradcan")


def test_binary_model_positive_and_negative_class(tiny_classifier):
    model = tiny_classifier(num_classes=2, image_size=32, binary=True, seed=1)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    ex = Explainer(model)
    pos = explain_cam(ex, x, "hirescam", targets=1)
    neg = explain_cam(ex, x, "hirescam", targets=0)
    np.testing.assert_allclose(pos.scores, -neg.scores, rtol=1e-6)
    # The same element-wise map with opposite sign, before the ReLU: the two never overlap.
    raw_pos, raw_neg = pos.raw["block4_relu"], neg.raw["block4_relu"]
    assert (np.minimum(raw_pos, raw_neg) <= 1e-7).all()
    p = model.predict(x, verbose=0)[:, 0]
    np.testing.assert_allclose(pos.probabilities[:, 1], p, rtol=1e-5)


def test_multiple_layers_and_eigen_smooth(small):
    model, x = small
    ex = Explainer(model)
    e = explain_cam(ex, x, "gradcam", layers=["block2_relu", "block4_relu"], eigen_smooth=True)
    assert e.raw["block2_relu"].shape == (4, 24, 24) and e.raw["block4_relu"].shape == (4, 6, 6)
    assert set(e.heatmaps) == {"block2_relu", "block4_relu"}
