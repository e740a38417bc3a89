"""Gradient methods (:mod:`tfcam.explain.gradients`): guided backpropagation and deconvnet by
hand, Integrated Gradients' completeness, guided Grad-CAM, SmoothGrad."""

from __future__ import annotations

import keras
import numpy as np

from tfcam.explain.cams import explain_cam
from tfcam.explain.engine import Explainer
from tfcam.explain.gradients import explain_gradients


def _sign_model():
    # h = ReLU(x · [1, -1]) (two channels); logit_0 = mean(h_0 - h_1) = -logit_1.
    inp = keras.Input((2, 3, 1))
    h = keras.layers.Conv2D(2, 1, use_bias=False, name="split")(inp)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.Conv2D(1, 1, use_bias=False, name="diff")(h)
    out = keras.layers.Dense(2, use_bias=False, name="predictions")(
        keras.layers.GlobalAveragePooling2D()(h)
    )
    model = keras.Model(inp, out)
    model.get_layer("split").set_weights([np.array([[[[1.0, -1.0]]]], "float32")])
    model.get_layer("diff").set_weights([np.array([[[[1.0], [-1.0]]]], "float32")])
    model.get_layer("predictions").set_weights([np.array([[1.0, -1.0]], "float32")])
    return model


def test_guided_backprop_passes_only_positive_gradients_through_positive_inputs():
    model = _sign_model()
    x = np.array([[[[2.0], [-1.0], [3.0]], [[-4.0], [0.5], [-0.5]]]], "float32")
    ex = Explainer(model)
    plain = explain_gradients(ex, x, "saliency", targets=0).raw["saliency"][..., 0]
    guided = explain_gradients(ex, x, "guided_backprop", targets=0).raw["guided_backprop"][..., 0]
    deconv = explain_gradients(ex, x, "deconvnet", targets=0).raw["deconvnet"][..., 0]
    # Plain gradient: both channels route 1/6 back to every pixel (one through each ReLU branch).
    np.testing.assert_allclose(plain, np.full((1, 2, 3), 1 / 6), atol=1e-6)
    # Guided: channel 1's gradient is negative and stopped; channel 0 passes only where x > 0.
    np.testing.assert_allclose(guided, np.where(x[..., 0] > 0, 1 / 6, 0.0), atol=1e-6)
    assert (guided >= 0).all()
    # Deconvnet: positive gradients pass whatever the forward sign.
    np.testing.assert_allclose(deconv, np.full((1, 2, 3), 1 / 6), atol=1e-6)
    # The user's model is untouched: same layer objects, plain gradients still.
    assert isinstance(model.get_layer("relu"), keras.layers.ReLU)
    again = explain_gradients(Explainer(model), x, "saliency", targets=0).raw["saliency"][..., 0]
    np.testing.assert_allclose(again, plain)


def test_integrated_gradients_completeness(small):
    model, x = small
    ex = Explainer(model)
    e = explain_gradients(ex, x, "integrated_gradients", steps=64, baseline="black")
    logits = ex.forward_logits(x)
    base = ex.forward_logits(np.zeros_like(x))
    idx = np.arange(len(x))
    delta = logits[idx, e.targets] - base[idx, e.targets]
    total = e.raw["integrated_gradients"].sum(axis=(1, 2, 3))
    assert np.all(np.abs(total - delta) <= 0.02 * np.abs(delta)), (total, delta)


def test_guided_gradcam_is_the_product(small):
    model, x = small
    ex = Explainer(model)
    gg = explain_gradients(ex, x, "guided_gradcam").raw["guided_gradcam"]
    guided = explain_gradients(ex, x, "guided_backprop").raw["guided_backprop"]
    cam = explain_cam(ex, x, "gradcam").heatmap
    np.testing.assert_allclose(gg, guided * cam[..., None], rtol=1e-5, atol=1e-8)


def test_smoothgrad_without_noise_is_saliency_and_with_noise_differs(small):
    model, x = small
    ex = Explainer(model)
    sal = explain_gradients(ex, x, "saliency").raw["saliency"]
    sg0 = explain_gradients(ex, x, "smoothgrad", noise=0.0, samples=4).raw["smoothgrad"]
    np.testing.assert_allclose(sg0, np.abs(sal), rtol=1e-5, atol=1e-9)
    sg = explain_gradients(ex, x, "smoothgrad", noise=0.2, samples=4, seed=1).raw["smoothgrad"]
    assert not np.allclose(sg, sg0)
