"""Graph helpers (:mod:`tfcam.models.graph`): nested models flattened so inner layers can be
explained, and batch normalisation folded into convolutions."""

from __future__ import annotations

import keras
import numpy as np

from tfcam.explain.cams import explain_cam
from tfcam.explain.engine import Explainer
from tfcam.explain.gradients import explain_gradients


def test_nested_models_are_explained_at_inner_layers():
    # The classic transfer-learning shape that breaks peer tools: a backbone model nested in a
    # Sequential classifier. Inner layers must be reachable, with the same maps as a flat build.
    keras.utils.set_random_seed(5)
    inp = keras.Input((24, 24, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c2")(h)
    h = keras.layers.ReLU(name="r2")(h)
    base = keras.Model(inp, h, name="base")
    nested = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax", name="predictions"),
        ]
    )
    flat_in = keras.Input((24, 24, 3))
    f = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(flat_in)
    f = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="c2")(f)
    f = keras.layers.ReLU(name="r2")(f)
    f = keras.layers.Dense(3, activation="softmax", name="predictions")(
        keras.layers.GlobalAveragePooling2D()(f)
    )
    flat = keras.Model(flat_in, f)
    for name in ("c1", "c2"):
        flat.get_layer(name).set_weights(base.get_layer(name).get_weights())
    flat.get_layer("predictions").set_weights(nested.get_layer("predictions").get_weights())

    x = np.random.default_rng(0).uniform(0, 255, (2, 24, 24, 3)).astype("float32")
    ex = Explainer(nested)
    assert ex.resolve_layers(None) == ("r2",)
    for method in ("gradcam", "scorecam"):
        ours = explain_cam(ex, x, method, layers=["c1", "r2"])
        ref = explain_cam(Explainer(flat), x, method, layers=["c1", "r2"])
        for layer in ("c1", "r2"):
            np.testing.assert_allclose(ours.raw[layer], ref.raw[layer], rtol=1e-4, atol=1e-6)
    sal = explain_gradients(ex, x, "guided_backprop").raw["guided_backprop"]
    np.testing.assert_allclose(
        sal,
        explain_gradients(Explainer(flat), x, "guided_backprop").raw["guided_backprop"],
        rtol=1e-4,
        atol=1e-7,
    )
    assert nested.layers[0] is base and len(nested.layers) == 3  # the user's model is untouched


def test_fold_batchnorm_keeps_outputs_and_leaves_the_model_alone():
    from tfcam.models.graph import fold_batchnorm

    keras.utils.set_random_seed(3)
    inp = keras.Input((20, 20, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", name="c1")(inp)
    a = keras.layers.BatchNormalization(name="bn1")(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw", use_bias=False)(a)
    b = keras.layers.BatchNormalization(name="bn2")(b)
    c = keras.layers.Conv2D(12, 1, name="shared")(b)  # used twice: must not be folded
    d = keras.layers.BatchNormalization(name="bn3")(c)
    e = keras.layers.Add()([c, d])
    out = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D(name="gap")(e))
    model = keras.Model(inp, out)
    for layer in model.layers:  # non-trivial statistics, so folding has something to do
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, n),
                    rng.normal(0, 1, n),
                    rng.normal(0, 1, n),
                    rng.uniform(0.5, 3, n),
                ]
            )
    x = np.random.default_rng(0).uniform(0, 255, (3, 20, 20, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    folded = fold_batchnorm(model, ["gap"])
    names = {layer.name for layer in folded.layers}
    assert "bn1" not in names and "bn2" not in names and "bn3" in names
    want = keras.Model(inp, model.get_layer("gap").output)(x).numpy()
    np.testing.assert_allclose(folded(x).numpy(), want, rtol=1e-4, atol=1e-4)
    # The user's model: same weights, and every layer still has one unambiguous output.
    for w0, w1 in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers)


def test_flatten_model_inlines_sub_models_and_renames_clashes():
    from tfcam.models.graph import flatten_model, is_nested, walk

    keras.utils.set_random_seed(2)
    inp = keras.Input((10, 10, 3))
    inner = keras.layers.Conv2D(4, 3, name="conv")(inp)
    base = keras.Model(inp, keras.layers.ReLU(name="relu")(inner), name="base")
    nested = keras.Sequential(
        [
            keras.Input((10, 10, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(2, name="conv"),  # the same name as a layer inside `base`
        ]
    )
    assert is_nested(nested) and not is_nested(base)
    assert flatten_model(base) is base  # nothing to inline
    flat = flatten_model(nested)
    assert not is_nested(flat)
    assert [layer.name for layer in flat.layers[1:]] == ["conv", "relu", "pool", "conv_2"]
    np.testing.assert_array_equal(
        flat.get_layer("conv").get_weights()[0], base.get_layer("conv").get_weights()[0]
    )
    x = np.random.default_rng(1).normal(size=(2, 10, 10, 3)).astype("float32")
    np.testing.assert_allclose(flat(x).numpy(), nested(x).numpy(), rtol=1e-5, atol=1e-6)
    # walk() sees the innermost layers of the nested model, in order.
    seen = []

    def record(op):
        seen.append(op.name)
        return op

    out = walk(nested, keras.ops.convert_to_tensor(x), record)
    assert seen == ["conv", "relu", "pool", "conv"]
    np.testing.assert_allclose(np.asarray(out), nested(x).numpy(), rtol=1e-5, atol=1e-6)
    assert nested.layers[0] is base and len(nested.layers) == 3  # the user's model is untouched


def test_operations_between_layers_are_copied_too():
    """ConvNeXt adds its residuals with ``a + b`` (a Keras operation, not a layer, with no
    weights) and builds its stem as a ``Sequential``: flattening and folding keep the outputs."""
    from tfcam.models.graph import flatten_model, fold_batchnorm, is_nested

    keras.utils.set_random_seed(2)
    inp = keras.Input((16, 16, 3))
    stem = keras.Sequential(
        [keras.layers.Conv2D(4, 2, strides=2, name="stem_conv"), keras.layers.BatchNormalization()],
        name="stem",
    )
    h = stem(inp)
    h = h + keras.layers.Conv2D(4, 3, padding="same", name="branch")(h)
    out = keras.layers.Dense(2, activation="softmax", name="predictions")(
        keras.layers.GlobalAveragePooling2D(name="pool")(h)
    )
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    flat = flatten_model(model)
    assert not is_nested(flat) and flat.get_layer("stem_conv")
    np.testing.assert_allclose(flat(x), model(x), rtol=1e-5, atol=1e-6)
    pooled = keras.Model(flat.inputs, flat.get_layer("pool").output)(x)
    np.testing.assert_allclose(fold_batchnorm(flat, ["pool"])(x), pooled, rtol=1e-4, atol=1e-5)
