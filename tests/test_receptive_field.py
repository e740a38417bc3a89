"""Receptive fields: published values, hand-derived networks, the empirical check, the ERF."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcam.errors import UserError
from tfcam.explain.receptive_field import (
    GLOBAL,
    LOCAL,
    UNSUPPORTED,
    effective_receptive_field,
    fields_table,
    mass_radius,
    receptive_field,
    receptive_fields,
    verify,
)


def rsp(field):
    """(R, S, P) when both axes agree."""
    assert field.kind == LOCAL, field
    assert field.size[0] == field.size[1] and field.stride[0] == field.stride[1]
    assert field.padding[0] == field.padding[1]
    return field.size[0], field.stride[0], field.padding[0]


# google-research/receptive_field, README table (224 px input).
PUBLISHED = {
    "vgg16": {
        "block1_pool": (6, 2, 2),
        "block3_conv1": (24, 4, 10),
        "block5_conv2": (164, 16, 74),
        "block5_pool": (212, 32, 90),
    },
    "mobilenet": {"conv_pw_1_relu": (7, 2, 2), "conv_pw_13_relu": (315, 32, 126)},
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_values_on_keras_applications(name):
    ctor = {"vgg16": keras.applications.VGG16, "mobilenet": keras.applications.MobileNet}[name]
    model = ctor(weights=None, include_top=False, input_shape=(224, 224, 3))
    fields = receptive_fields(model)
    for layer, want in PUBLISHED[name].items():
        assert rsp(fields[layer]) == want, layer
    # The same backbone inside a tfcam classifier (preprocessing layer in front, head behind).
    from tfcam.models.build import build_classifier

    clf = build_classifier(backbone=name, num_classes=3, image_size=224)
    fields = receptive_fields(clf)
    for layer, want in PUBLISHED[name].items():
        assert rsp(fields[layer]) == want, layer
    assert fields["head_pool"].kind == GLOBAL and fields["predictions"].kind == GLOBAL


def _check_shapes(model, fields):
    """The calculator's spatial sizes agree with Keras's own output shapes."""
    for layer in model.layers:
        f = fields.get(layer.name)
        if f is not None and f.kind == LOCAL:
            assert f.shape == tuple(layer.output.shape[1:3]), layer.name


def test_stride_two_chain():
    inp = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(2, 3, strides=2, name="a")(inp)
    x = keras.layers.Conv2D(2, 3, strides=2, name="b")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    model = keras.Model(inp, x)
    f = receptive_fields(model)
    # a: R=3, S=2. b: R = 3 + (3-1)·2 = 7, S = 4. pool: R = 7 + (2-1)·4 = 11, S = 8. No padding.
    assert [rsp(f[n]) for n in ("a", "b", "pool")] == [(3, 2, 0), (7, 4, 0), (11, 8, 0)]
    _check_shapes(model, f)
    # Unit (1, 2) of "b" sees rows 4..10, columns 8..14.
    assert f["b"].box(1, 2) == (4, 8, 10, 14)
    # Valid windows with strides leave pixels unread: "a" (15 units) reads 0..30 of 32; "pool"
    # (3 units of 7) drops b's last unit and reads 0..26. Clipped boxes stop there.
    assert f["a"].extent == ((0, 30), (0, 30)) and f["pool"].extent == ((0, 26), (0, 26))
    assert f["pool"].box(2, 2, clip=False) == (16, 16, 26, 26)
    assert f["b"].centre(1, 2) == (7.0, 11.0)


def test_dilated_chain():
    inp = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(2, 3, dilation_rate=2, padding="same", name="d2")(inp)
    x = keras.layers.Conv2D(2, 3, dilation_rate=4, padding="same", name="d4")(x)
    x = keras.layers.Conv2D(2, 3, dilation_rate=(1, 3), name="d13")(x)
    model = keras.Model(inp, x)
    f = receptive_fields(model)
    # Effective kernels 5 and 9: R = 5, 13; "same" pads (k_eff-1)/2 = 2, then 4 more.
    assert rsp(f["d2"]) == (5, 1, 2) and rsp(f["d4"]) == (13, 1, 6)
    # Anisotropic dilation: y adds 2, x adds 6, no padding.
    assert f["d13"].size == (15, 19) and f["d13"].padding == (6, 6)
    _check_shapes(model, f)


def test_residual_block_with_different_branches():
    inp = keras.Input((32, 32, 1))
    # Branch a sees [x-2, x] (padded on top/left only), branch b sees [x-1, x+1].
    a = keras.layers.ZeroPadding2D(((2, 0), (2, 0)), name="pad")(inp)
    a = keras.layers.Conv2D(2, 3, name="a")(a)
    b = keras.layers.Conv2D(2, 3, padding="same", name="b")(inp)
    s = keras.layers.Add(name="sum")([a, b])
    c = keras.layers.Concatenate(name="cat")([s, inp])
    model = keras.Model(inp, c)
    f = receptive_fields(model)
    assert rsp(f["a"]) == (3, 1, 2) and rsp(f["b"]) == (3, 1, 1)
    # The union [x-2, x+1]: 4 pixels starting 2 before the unit.
    assert rsp(f["sum"]) == (4, 1, 2)
    assert rsp(f["cat"]) == (4, 1, 2)
    assert f["sum"].box(0, 0, clip=False) == (-2, -2, 1, 1)
    assert f["sum"].box(0, 0) == (0, 0, 1, 1)
    _check_shapes(model, f)


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "pad_before", "out"),
    [
        (32, 3, 2, 0, 16),  # total padding (16-1)·2 + 3 - 32 = 1: all of it after
        (33, 3, 2, 1, 17),  # (17-1)·2 + 3 - 33 = 2: one before
        (32, 4, 2, 1, 16),  # (16-1)·2 + 4 - 32 = 2: one before
        (33, 2, 2, 0, 17),  # (17-1)·2 + 2 - 33 = 1: after
        (7, 5, 1, 2, 7),
    ],
)
def test_same_padding_depends_on_input_size(size, kernel, stride, pad_before, out):
    inp = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(1, kernel, strides=stride, padding="same", name="c")(inp)
    model = keras.Model(inp, x)
    f = receptive_field(model, "c")
    assert rsp(f) == (kernel, stride, pad_before) and f.shape == (out, out)
    assert tuple(model.output.shape[1:3]) == (out, out)
    # The calculator agrees with what the convolution computes: a one-hot kernel tap (top-left)
    # makes output (0, 0) equal to input (-P, -P) (zero when that is padding).
    w = np.zeros((kernel, kernel, 1, 1), "float32")
    w[0, 0] = 1
    model.get_layer("c").set_weights([w, np.zeros(1, "float32")])
    img = np.arange(1, size * size + 1, dtype="float32").reshape(1, size, size, 1)
    y = model(img).numpy()[0, :, :, 0]
    first = -pad_before + 2 * stride  # unit (2, 2): its first tap is at -P + 2·S
    assert y[2, 2] == img[0, first, first, 0]


def test_input_size_is_a_parameter_when_the_model_does_not_fix_it():
    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="c")(inp)
    model = keras.Model(inp, x)
    with pytest.raises(UserError, match="input size is not fixed"):
        receptive_fields(model)
    assert receptive_field(model, "c", input_size=33).padding == (1, 1)
    assert receptive_field(model, "c", input_size=32).padding == (0, 0)


def test_global_and_unsupported_layers_say_so():
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="c")(inp)
    up = keras.layers.UpSampling2D(name="up")(x)
    after = keras.layers.Conv2D(4, 3, name="after_up")(up)
    g = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    d = keras.layers.Dense(2, name="dense")(g)
    model = keras.Model(inp, [after, d])
    f = receptive_fields(model)
    assert f["up"].kind == UNSUPPORTED and "upsampling" in f["up"].reason
    assert f["after_up"].kind == UNSUPPORTED and "'up'" in f["after_up"].reason
    assert f["gap"].kind == GLOBAL and f["dense"].kind == GLOBAL
    with pytest.raises(UserError, match="no box per unit"):
        f["gap"].box(0, 0)
    d = f["up"].as_dict()
    assert d["size"] is None and d["kind"] == UNSUPPORTED
    table = fields_table(f)
    assert list(table["layer"]) == list(f)
    assert "upsampling" in table.set_index("layer").loc["up", "note"]


def test_squeeze_excitation_is_local_with_global_context():
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c")(inp)
    se = keras.layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    se = keras.layers.Conv2D(4, 1, activation="sigmoid", name="excite")(se)
    y = keras.layers.Multiply(name="scale")([x, se])
    model = keras.Model(inp, y)
    f = receptive_fields(model)
    assert f["squeeze"].kind == GLOBAL and f["excite"].kind == GLOBAL
    assert rsp(f["scale"]) == (3, 1, 1) and f["scale"].global_context
    assert f["scale"].as_dict()["global_context"] is True


def test_unknown_layer_names_nearby_layers():
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
    with pytest.raises(UserError) as e:
        receptive_field(model, "block5_pol")
    msg = str(e.value)
    assert "Unknown layer 'block5_pol'" in msg and "block5_pool" in msg and "\n" not in msg


def test_nested_and_sequential_models():
    base = keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras.layers.Conv2D(2, 3, strides=2, name="s1"),
            keras.layers.Conv2D(2, 3, name="s2"),
        ],
        name="base",
    )
    inp = keras.Input((24, 24, 3))
    out = keras.layers.Flatten(name="flat")(base(inp))
    model = keras.Model(inp, out)
    f = receptive_fields(model)
    assert rsp(f["s1"]) == (3, 2, 0) and rsp(f["s2"]) == (7, 2, 0) and f["flat"].kind == GLOBAL


# ---------------------------------------------------------------------------------------------
# Empirical check


def _hand_models():
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)
    a = keras.layers.Conv2D(4, 3, dilation_rate=2, padding="same", name="dil")(x)
    b = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    s = keras.layers.Add(name="sum")([a, b])
    s = keras.layers.SeparableConv2D(4, 3, padding="same", name="sep")(s)
    return keras.Model(inp, s)


def test_verify_agrees_with_the_analytic_box_on_a_hand_model():
    model = _hand_models()
    fields = receptive_fields(model)
    for layer in ("c1", "pool", "dil", "sum", "sep"):
        v = verify(model, layer, fields=fields)
        assert v.ok, v
        assert v.support == v.analytic
    # A unit at the border: the box is clipped and the support still matches it.
    v = verify(model, "sep", unit=(0, 0), fields=fields)
    assert v.ok and v.analytic[:2] == (0, 0)


def test_verify_catches_a_wrong_field():
    model = _hand_models()
    wrong = receptive_fields(model, identity_layers=["dil"])  # pretends the dilated conv is 1×1
    v = verify(model, "sum", fields=wrong)
    assert not v.inside and not v.ok
    # The probe does not touch the user's model.
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers)


@pytest.mark.slow
def test_verify_every_registered_backbone_at_two_layers():
    from tfcam.models import BACKBONES
    from tfcam.models.build import build_classifier

    # One CNN of each family (its members share their layer types): 40 networks at 224 px
    # and more would take most of an hour. Transformers' blocks are global fields
    # (tests/test_vit_reports.py checks them).
    first_of_family = {
        bb.family: name for name, bb in reversed(BACKBONES.items()) if not bb.transformer
    }
    for name in sorted({*first_of_family.values(), "resnet18_cifar", "simple_cnn"}):
        bb = BACKBONES[name]
        size = max(bb.min_size, 224) if bb.applications else max(bb.min_size, 32)
        model = build_classifier(backbone=name, num_classes=2, image_size=size)
        fields = receptive_fields(model)
        for layer in (bb.early_layer, bb.cam_layer):
            assert fields[layer].kind == LOCAL, (name, layer, fields[layer])
            v = verify(model, layer, fields=fields)
            assert v.ok, (name, layer, v)
        del model
        keras.backend.clear_session()


# ---------------------------------------------------------------------------------------------
# Effective receptive field


def test_mass_radius_by_hand():
    erf = np.zeros((11, 11))
    erf[5, 5] = 0.5
    erf[5, 7] = 0.45  # distance 2
    erf[0, 0] = 0.05  # distance 5
    assert mass_radius(erf, (5, 5), 0.5) == 0
    assert mass_radius(erf, (5, 5), 0.95) == 2
    assert mass_radius(erf, (5, 5), 0.99) == 5


def test_effective_field_is_inside_the_theoretical_one_and_peaks_at_the_centre():
    keras.utils.set_random_seed(0)
    inp = keras.Input((48, 48, 3))
    x = inp
    for i in range(4):
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name=f"c{i}")(x)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    erf = effective_receptive_field(model, "c3", n_random=4)
    assert erf.theoretical == (9, 9)
    assert erf.map.shape == (48, 48) and abs(erf.map.sum() - 1) < 1e-5
    cy, cx = erf.centre
    assert (cy, cx) == (24.0, 24.0)
    # Outside the 9×9 theoretical field the gradient is exactly zero.
    inside = np.zeros_like(erf.map, bool)
    inside[20:29, 20:29] = True
    assert erf.map[~inside].max() == 0
    assert 0 < erf.radius95 <= 4
    assert erf.map[24, 24] >= erf.map[20, 20]


@pytest.mark.slow
def test_effective_field_of_imagenet_mobilenet_v2_is_smaller_than_theory_and_grows_with_training():
    """Luo et al. (2016): the ERF is a fraction of the theoretical field, and training enlarges it."""
    from conftest import shared_data

    from tfcam.data.pipeline import read_images
    from tfcam.models.build import build_classifier

    weights = shared_data() / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5"
    bees = sorted((shared_data() / "hymenoptera" / "val" / "bees").glob("*.jpg"))[:8]
    if not weights.is_file() or len(bees) < 8:
        pytest.skip(f"needs {weights} and hymenoptera photos")
    images = read_images([str(p) for p in bees], 224)
    sizes = {}
    for label, w in (("random", None), ("imagenet", weights)):
        keras.utils.set_random_seed(0)
        model = build_classifier(backbone="mobilenet_v2", num_classes=2, image_size=224, weights=w)
        erf = effective_receptive_field(model, "out_relu", images)
        assert erf.theoretical == (491, 491)
        sizes[label] = 2 * erf.radius95 + 1
    assert sizes["imagenet"] < 0.75 * 491
    assert sizes["imagenet"] > 1.2 * sizes["random"]
