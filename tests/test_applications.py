"""Every ``keras.applications`` backbone (issue 16, acceptance 1 and 2): registered as a row of
data, built flat inside the classifier with random weights, explained with Grad-CAM at its
default and early layers, and preprocessed exactly once."""

from __future__ import annotations

import importlib
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcam.explain.cams import explain_cam
from tfcam.explain.engine import Explainer
from tfcam.models import BACKBONES
from tfcam.models.applications import FAMILIES, MODELS
from tfcam.models.build import backbone_layers, build_classifier, set_backbone_trainable

APPLICATIONS = sorted(n for n, bb in BACKBONES.items() if bb.source == "keras.applications")

#: The slowest to build and trace (most parameters or layers): still run, marked ``large``.
LARGE = {
    "convnext_base",
    "convnext_large",
    "convnext_xlarge",
    "efficientnet_b5",
    "efficientnet_b6",
    "efficientnet_b7",
    "efficientnet_v2_m",
    "efficientnet_v2_l",
    "inception_resnet_v2",
    "nasnet_large",
    "resnet152",
    "resnet152_v2",
}

#: Layers that rescale or normalise pixels: inside a tfcam model only the ``preprocess`` layer
#: does, except where the network cannot be built without its own (EfficientNet V1: mode none).
_PIXEL_LAYERS = (keras.layers.Rescaling, keras.layers.Normalization)


#: Grad-CAM runs compiled (tfcam's default) on the smallest row of each family; on the others it
#: runs eagerly: the same model to the same layers, without the 5–20 s of tracing a deep network's
#: gradient graph, which the family's smallest row has already shown to work.
COMPILED = {
    min(
        (n for n in APPLICATIONS if BACKBONES[n].family == family),
        key=lambda n: BACKBONES[n].params,
    )
    for family in {BACKBONES[n].family for n in APPLICATIONS}
}


def _param(name):
    marks = [pytest.mark.large] if name in LARGE else []
    return pytest.param(name, marks=marks, id=name)


def test_every_keras_application_is_a_row():
    constructors = {n for n in dir(keras.applications) if n[0].isupper()}
    rows = {BACKBONES[n].constructor.split(":")[1] for n in APPLICATIONS}
    assert rows == constructors
    assert len(APPLICATIONS) >= 40 and len(MODELS) == len(APPLICATIONS)
    assert {row[2] for row in MODELS} == set(FAMILIES)
    for name in APPLICATIONS:  # snake case, with the names tfcam always had
        assert name == name.lower() and " " not in name
    for old in ("vgg16", "resnet50", "mobilenet_v2", "mobilenet", "efficientnet_b0",
                "inception_v3", "xception", "densenet121", "resnet18_cifar", "simple_cnn"):  # fmt: skip
        assert old in BACKBONES


@pytest.mark.parametrize("name", [_param(n) for n in APPLICATIONS])
def test_backbone_builds_flat_explains_at_both_layers_and_preprocesses_once(name):
    bb = BACKBONES[name]
    size = max(bb.min_size, 32)
    keras.utils.set_random_seed(0)
    model = build_classifier(backbone=name, num_classes=3, image_size=size, weights=None)
    try:
        # Flat: no nested model, every layer the registry names reachable from the outer model.
        assert not any(isinstance(layer, keras.Model) for layer in model.layers)
        names = {layer.name for layer in model.layers}
        assert {bb.cam_layer, bb.early_layer, bb.last_stage} <= names
        # Preprocessing exactly once: in tfcam's layer, or (mode none) in the network alone.
        inner = [layer for layer in model.layers if isinstance(layer, _PIXEL_LAYERS)]
        assert model.get_layer("preprocess").mode == bb.preprocess
        assert bool(inner) == (bb.preprocess == "none"), [layer.name for layer in inner]
        # The stored parameter count is the network's without top.
        features = model.get_layer("head_pool").input
        assert keras.Model(model.inputs, features).count_params() == bb.params
        x = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
        for layer in (bb.cam_layer, bb.early_layer):  # no "Graph disconnected"
            assert len(keras.Model(model.inputs, model.get_layer(layer).output).output.shape) == 4
        assert (
            model.get_layer(bb.cam_layer).output.shape[1]
            <= model.get_layer(bb.early_layer).output.shape[1]
        )
        # Grad-CAM runs one graph from the outer input to both layers and the logits.
        ex = Explainer(model, batch_size=1)
        assert ex.resolve_layers(None) == (bb.cam_layer,)
        tf.config.run_functions_eagerly(name not in COMPILED)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # random weights may give constant maps
                e = explain_cam(ex, x, "gradcam", layers=[bb.cam_layer, bb.early_layer])
        finally:
            tf.config.run_functions_eagerly(False)
        for layer in (bb.cam_layer, bb.early_layer):
            h = e.heatmaps[layer]
            assert h.shape == (1, size, size) and np.isfinite(h).all()
            assert h.min() >= 0 and h.max() <= 1
        # Fine-tuning from the last stage unfreezes the top of the network, not all of it.
        n = set_backbone_trainable(model, True, from_layer=bb.last_stage)
        assert 0 < n < len(backbone_layers(model))
    finally:
        del model
        keras.backend.clear_session()


def _copy_weights(source: keras.Model, target: keras.Model, rename=None) -> None:
    """Weights by layer name, walking into nested ``Sequential`` blocks of ``target``."""
    rename = rename or {}
    by_name = {layer.name: layer for layer in source.layers}
    stack = list(target.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
        elif layer.weights:
            twin = by_name.get(rename.get(layer.name, layer.name))
            if twin is None:  # unnamed (EfficientNet's normalization_<n>): the one of its kind
                (twin,) = [t for t in source.layers if type(t) is type(layer)]
            layer.set_weights(twin.get_weights())


@pytest.mark.parametrize(
    ("name", "module", "probe", "their_probe"),
    [
        ("convnext_tiny", "convnext", "convnext_tiny_stem_layernorm", "convnext_tiny_stem"),
        ("efficientnet_v2_b0", "efficientnet_v2", "stem_conv", "stem_conv"),
        ("efficientnet_v2_s", "efficientnet_v2", "stem_conv", "stem_conv"),
        ("mobilenet_v3_small", "mobilenet_v3", "conv", "conv"),
        ("efficientnet_b0", "efficientnet", "stem_conv", "stem_conv"),
    ],
)
def test_preprocessing_is_applied_exactly_once(name, module, probe, their_probe):
    """The classifier equals Keras's own network (its preprocessing layers on, the same weights)
    fed raw pixels, which is what the family's ``preprocess_input`` (a pass-through in Keras 3)
    asks for: tfcam's ``preprocess`` layer does what the switched-off layers did, once. Compared
    at the first layer after the pixels (random deep networks fade to nearly zero) and at the
    features the head pools."""
    bb = BACKBONES[name]
    size = 64
    keras.utils.set_random_seed(1)
    model = build_classifier(backbone=name, num_classes=3, image_size=size, weights=None)
    ctor = getattr(keras.applications, bb.constructor.split(":")[1])
    reference = ctor(include_top=False, weights=None, input_shape=(size, size, 3))
    assert any(  # Keras's network normalises by itself …
        isinstance(layer, _PIXEL_LAYERS) for layer in reference.layers
    ), name
    rename = {reference.layers[-1].name: bb.output_name} if bb.output_name else {}
    _copy_weights(model, reference, rename)
    x = np.random.default_rng(2).uniform(0, 255, (2, size, size, 3)).astype("float32")
    family = importlib.import_module(f"keras.applications.{module}")
    np.testing.assert_array_equal(np.asarray(family.preprocess_input(x.copy())), x)
    ours = keras.Model(
        model.inputs, [model.get_layer(probe).output, model.get_layer("head_pool").input]
    )
    theirs = keras.Model(
        reference.inputs, [reference.get_layer(their_probe).output, reference.output]
    )
    (a, f), (b, g) = ours(x), theirs(x)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    scale = float(np.abs(np.asarray(g)).max())
    np.testing.assert_allclose(np.asarray(f), np.asarray(g), rtol=1e-3, atol=1e-4 * scale)
    # … and tfcam's preprocessing on top of it would be a second one, which shows.
    twice, _ = theirs(np.asarray(model.get_layer("preprocess")(x)))
    if bb.preprocess != "none":
        assert not np.allclose(np.asarray(twice), np.asarray(a), atol=1e-2)
    keras.backend.clear_session()


@pytest.mark.parametrize("name", ["convnext_tiny", "efficientnet_v2_b0"])
def test_mixed_precision_builds_and_explains(name):
    """Under ``train.mixed_precision`` (Keras's mixed_float16 policy) the backbone computes in
    float16 after tfcam's preprocessing, the output stays float32, and Grad-CAM runs."""
    bb = BACKBONES[name]
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = build_classifier(backbone=name, num_classes=2, image_size=32, weights=None)
        assert model.get_layer("preprocess").compute_dtype == "float16"
        assert model.get_layer(bb.cam_layer).compute_dtype == "float16"
        assert model.output.dtype == "float32"
        x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = explain_cam(Explainer(model), x, "gradcam")
        assert np.isfinite(e.heatmap).all() and e.heatmap.shape == (2, 32, 32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def test_nasnet_refuses_images_of_any_size_in_one_line():
    from tfcam.config import load_experiment
    from tfcam.errors import UserError

    with pytest.raises(UserError, match="nasnet_mobile needs a fixed input size"):
        load_experiment("shapes", ["model.backbone=nasnet_mobile", "data.resize=native"])
    with pytest.raises(UserError, match="'nasnet_large' needs a fixed input size"):
        build_classifier(backbone="nasnet_large", num_classes=2, image_size=64, variable_size=True)
    # Transformers registered by tfcam.models.hub (when another test imported it first) have
    # fixed position-embedding grids too; among the CNNs only NASNet is fixed.
    assert [n for n, bb in BACKBONES.items() if not bb.any_size and not bb.transformer] == [
        "nasnet_mobile",
        "nasnet_large",
    ]
