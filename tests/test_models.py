"""Backbone registry and transfer models: flat graphs, preprocessing, freezing, weights files."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcam.errors import UserError
from tfcam.models import BACKBONES
from tfcam.models.build import backbone_layers, build_classifier, load_model, set_backbone_trainable
from tfcam.models.layers import Preprocess

#: tfcam's own CNNs (keras.applications: tests/test_applications.py; keras-hub transformers, whose
#: layers are token sequences: tests/test_hub_backbones.py).
OWN_BACKBONES = sorted(n for n, bb in BACKBONES.items() if bb.source == "tfcam")

REQUIRED = {
    "vgg16",
    "vgg19",
    "resnet50",
    "mobilenet_v2",
    "mobilenet",
    "efficientnet_b0",
    "inception_v3",
    "xception",
    "densenet121",
    "resnet18_cifar",
}


def test_registry_has_the_required_backbones():
    assert set(BACKBONES) >= REQUIRED


@pytest.mark.parametrize("name", OWN_BACKBONES)
def test_backbone_builds_flat_and_exposes_its_layers(name):
    bb = BACKBONES[name]
    size = max(bb.min_size, 32)
    model = build_classifier(backbone=name, num_classes=3, image_size=size, weights=None)
    # No nested models: every layer is reachable by name from the outer model.
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.get_layer("predictions").output.shape[-1] == 3
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    for layer_name in (bb.cam_layer, bb.early_layer):
        layer = model.get_layer(layer_name)
        sub = keras.Model(model.input, [layer.output, model.output])  # no "Graph disconnected"
        feats, probs = sub(x)
        assert len(feats.shape) == 4 and feats.shape[0] == 2
        np.testing.assert_allclose(np.asarray(probs).sum(axis=1), 1.0, rtol=1e-5)
    # The CAM layer is the last 4-D feature map before the head.
    assert (
        model.get_layer(bb.cam_layer).output.shape[1]
        <= model.get_layer(bb.early_layer).output.shape[1]
    )


def test_resnet18_cifar_has_the_pytorch_parameter_count():
    model = build_classifier(backbone="resnet18_cifar", num_classes=10, image_size=32, weights=None)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 11_173_962
    assert model.get_layer("layer4_block2_out").output.shape[1:] == (4, 4, 512)
    # Stride-2 convolutions pad one pixel on every side, as PyTorch does.
    assert model.get_layer("layer2_block1_1_pad").padding == ((1, 1), (1, 1))


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("tf", "keras.applications.mobilenet_v2"),
        ("caffe", "keras.applications.vgg16"),
        ("torch", "keras.applications.densenet"),
    ],
)
def test_preprocess_matches_keras_applications(mode, reference):
    import importlib

    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 5, 3)).astype("float32")
    ours = np.asarray(Preprocess(mode)(x))
    theirs = importlib.import_module(reference).preprocess_input(x.copy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_preprocess_cifar_and_unit_by_hand():
    x = np.array([[[[255.0, 0.0, 127.5]]]], "float32")
    np.testing.assert_allclose(np.asarray(Preprocess("unit")(x)), x / 255, rtol=1e-6)
    want = (x / 255 - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2023, 0.1994, 0.2010])
    np.testing.assert_allclose(np.asarray(Preprocess("cifar")(x)), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(Preprocess("tf128")(x)), x / 128 - 1, rtol=1e-6)


def test_binary_head_and_hidden_layer():
    model = build_classifier(
        backbone="simple_cnn",
        num_classes=2,
        image_size=32,
        binary=True,
        hidden_units=7,
        dropout=0.3,
        head="flatten",
    )
    assert model.output.shape[-1] == 1
    assert model.get_layer("predictions").activation.__name__ == "sigmoid"
    assert model.get_layer("head_dense").units == 7
    assert model.get_layer("head_dropout").rate == pytest.approx(0.3)
    with pytest.raises(UserError, match="exactly 2 classes"):
        build_classifier(backbone="simple_cnn", num_classes=3, image_size=32, binary=True)


def test_freezing_and_unfreezing_the_top():
    model = build_classifier(backbone="mobilenet_v2", num_classes=2, image_size=32, weights=None)
    bl = backbone_layers(model)
    assert set_backbone_trainable(model, False) == 0
    assert all(not layer.trainable for layer in bl)
    assert model.get_layer("predictions").trainable
    n = set_backbone_trainable(model, True, from_layer="block_16_expand")
    names = [layer.name for layer in bl]
    on = {layer.name for layer in bl if layer.trainable}
    top = names[names.index("block_16_expand") :]
    assert on == {
        n for n in top if not isinstance(model.get_layer(n), keras.layers.BatchNormalization)
    }
    assert n == len(on) > 0
    set_backbone_trainable(model, True, top=5, train_batchnorm=True)
    assert [layer.trainable for layer in bl[-6:]] == [False, True, True, True, True, True]
    with pytest.raises(UserError, match="Unknown layer 'block_99'.*block_16_project"):
        set_backbone_trainable(model, True, from_layer="block_99")


def test_saved_model_round_trip(tmp_path):
    model = build_classifier(backbone="simple_cnn", num_classes=3, image_size=32)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(
        again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(UserError, match="Model file not found"):
        load_model(tmp_path / "none.keras")


def test_bad_weights_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="Weights file not found"):
        build_classifier(
            backbone="mobilenet_v2", num_classes=2, image_size=32, weights=tmp_path / "x.h5"
        )
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_classifier(backbone="simple_cnn", num_classes=2, image_size=32, weights="imagenet")
    with pytest.raises(UserError, match="Unknown backbone 'resnet5'"):
        build_classifier(backbone="resnet5", num_classes=2, image_size=32)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backbone", "options", "file"),
    [
        ("mobilenet_v2", {"alpha": 1.0}, "mobilenet_v2_1.0_224_no_top.weights.h5"),
        ("mobilenet_v2", {"alpha": 0.35}, "mobilenet_v2_0.35_224_no_top.weights.h5"),
        ("mobilenet", {"alpha": 0.25}, "mobilenet_0.25_224_no_top.h5"),
    ],
)
def test_weights_file_loads_into_the_flat_model(shared, backbone, options, file):
    path = shared / "weights" / file
    model = build_classifier(
        backbone=backbone, num_classes=2, image_size=224, weights=path, options=options
    )
    ctor = (
        keras.applications.MobileNetV2
        if backbone == "mobilenet_v2"
        else keras.applications.MobileNet
    )
    ref = ctor(include_top=False, weights=str(path), input_shape=(224, 224, 3), **options)
    for layer in ref.layers:
        if layer.weights:
            for a, b in zip(
                layer.get_weights(), model.get_layer(layer.name).get_weights(), strict=True
            ):
                np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_weights_that_do_not_fit_say_so(shared):
    path = shared / "weights" / "mobilenet_v2_0.35_224_no_top.weights.h5"
    with pytest.raises(UserError, match="does not fit backbone 'mobilenet_v2'"):
        build_classifier(
            backbone="mobilenet_v2",
            num_classes=2,
            image_size=224,
            weights=path,
            options={"alpha": 1.0},
        )
