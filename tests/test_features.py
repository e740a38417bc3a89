"""Feature maps (:mod:`tfcam.explain.features`): activations of any layer, and which channels
to show."""

from __future__ import annotations

import keras
import numpy as np

from tfcam.explain.engine import Explainer
from tfcam.explain.features import feature_maps, select_channels


def test_feature_maps_and_channel_choice(small):
    model, x = small
    ex = Explainer(model)
    fm = feature_maps(ex, x, ["block1_relu", "block3_relu"])
    ref = keras.Model(model.input, model.get_layer("block3_relu").output).predict(x, verbose=0)
    np.testing.assert_allclose(fm["block3_relu"], ref, rtol=1e-5, atol=1e-5)
    a = fm["block1_relu"][0]
    order = select_channels(a, 5, "most_active")
    means = a.reshape(-1, a.shape[-1]).mean(axis=0)
    assert list(order) == list(np.argsort(-means)[:5])
    assert list(select_channels(a, 3, "first")) == [0, 1, 2]
