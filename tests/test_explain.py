"""The explanation engine: formulas by hand, agreement with tf-keras-vis, gradient rules, the engine."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcam.errors import UserError
from tfcam.explain.cams import explain_cam, first_component, gradcam
from tfcam.explain.engine import Explainer
from tfcam.explain.features import feature_maps, select_channels
from tfcam.explain.gradients import explain_gradients
from tfcam.explain.methods import CAM_METHODS, GRADIENT_METHODS, parse_methods
from tfcam.models import BACKBONES
from tfcam.models.build import build_classifier


def pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(3)
    model = build_classifier(backbone="simple_cnn", num_classes=4, image_size=48, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32")
    return model, x


# --------------------------------------------------------------------------------------------
# Formulas by hand


def _hand_model():
    inp = keras.Input((6, 6, 3))
    conv = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inp)
    act = keras.layers.ReLU(name="act")(conv)
    pooled = keras.layers.GlobalAveragePooling2D()(act)
    out = keras.layers.Dense(3, activation="softmax", name="predictions")(pooled)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(7)
    k = rng.normal(size=(3, 3, 3, 2)).astype("float32")
    b = np.array([0.1, -0.2], "float32")
    w = np.array([[1.0, -2.0, 0.5], [-1.5, 1.0, 2.0]], "float32")
    bd = np.array([0.0, 0.3, -0.1], "float32")
    model.get_layer("conv").set_weights([k, b])
    model.get_layer("predictions").set_weights([w, bd])
    return model, k, b, w, bd


def test_gradcam_equals_the_papers_formula_in_numpy():
    model, k, b, w, bd = _hand_model()
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 3)).astype("float32")
    # Activations by hand: 3x3 "same" convolution, then ReLU.
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((2, 6, 6, 2), np.float64)
    for i in range(6):
        for j in range(6):
            conv[:, i, j] = (
                np.tensordot(padded[:, i : i + 3, j : j + 3, :], k, axes=([1, 2, 3], [0, 1, 2])) + b
            )
    act = np.maximum(conv, 0)
    logits = act.mean(axis=(1, 2)) @ w + bd
    target = logits.argmax(axis=1)
    # d logit_t / d A_k(i, j) = w[k, t] / 36 wherever the ReLU passes (it is applied before A).
    grads = w[:, target].T[:, None, None, :] / 36.0 * np.ones_like(act)
    alpha = grads.mean(axis=(1, 2), keepdims=True)
    want = np.maximum((alpha * act).sum(axis=-1), 0)

    e = explain_cam(Explainer(model), x, "gradcam", layers="act")
    np.testing.assert_array_equal(e.targets, target)
    assert np.abs(e.raw["act"] - want).max() <= 1e-5
    np.testing.assert_allclose(e.scores, logits[np.arange(2), target], atol=1e-5)
    norm = (want - want.min(axis=(1, 2), keepdims=True)) / np.ptp(want, axis=(1, 2), keepdims=True)
    assert np.abs(e.heatmap - norm).max() <= 1e-5  # same size: upsampling is the identity


def test_other_cam_weightings_by_hand():
    model, _k, _b, w, _bd = _hand_model()
    x = np.random.default_rng(2).normal(size=(1, 6, 6, 3)).astype("float32")
    ex = Explainer(model)
    act = feature_maps(ex, x, "act")["act"].astype(np.float64)
    t = 1
    g = w[:, t][None, None, None, :] / 36.0 * np.ones_like(act)
    sum_a = act.sum(axis=(1, 2), keepdims=True)
    expected = {
        "hirescam": np.maximum((g * act).sum(-1), 0),
        "layercam": np.maximum((np.maximum(g, 0) * act).sum(-1), 0),
        "xgradcam": np.maximum(
            ((g * act).sum(axis=(1, 2), keepdims=True) / (sum_a + 1e-7) * act).sum(-1), 0
        ),
    }
    g2, g3 = g**2, g**3
    alpha = np.where(g != 0, g2 / (2 * g2 + sum_a * g3), 0)
    expected["gradcam++"] = np.maximum(
        ((alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True) * act).sum(-1), 0
    )
    for method, want in expected.items():
        got = explain_cam(ex, x, method, layers="act", targets=t).raw["act"]
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=method)


def test_eigencam_is_the_first_principal_component():
    rng = np.random.default_rng(0)
    acts = rng.gamma(2.0, 1.0, (2, 5, 4, 6)).astype("float32")
    got = first_component(tf.constant(acts)).numpy()
    for i in range(2):
        m = acts[i].reshape(-1, 6).astype(np.float64)
        mc = m - m.mean(axis=0)
        v0 = np.linalg.svd(mc, full_matrices=False)[2][0]
        proj = mc @ v0
        ref = m.sum(axis=1) - m.sum(axis=1).mean()
        proj *= np.sign(proj @ ref)
        np.testing.assert_allclose(got[i].ravel(), proj, rtol=1e-4, atol=1e-4)


def test_ablationcam_weights_are_score_drops():
    model, _k, _b, w, bd = _hand_model()
    x = np.random.default_rng(4).normal(size=(1, 6, 6, 3)).astype("float32")
    ex = Explainer(model)
    act = feature_maps(ex, x, "act")["act"][0].astype(np.float64)
    t = 2
    score = act.mean(axis=(0, 1)) @ w[:, t] + bd[t]
    drops = np.array([act[..., c].mean() * w[c, t] for c in range(2)])  # zeroing channel c
    want = np.maximum((act * (drops / abs(score))).sum(-1), 0)
    got = explain_cam(ex, x, "ablationcam", layers="act", targets=t).raw["act"][0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Agreement with tf-keras-vis


def _tfkv_maps(model, x, targets, layer, method, **kwargs):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    cls = {
        "gradcam": Gradcam,
        "gradcam++": GradcamPlusPlus,
        "layercam": Layercam,
        "scorecam": Scorecam,
        "saliency": Saliency,
        "smoothgrad": Saliency,
    }[method]
    vis = cls(model, model_modifier=ReplaceToLinear(), clone=True)
    score = CategoricalScore([int(t) for t in targets])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method in ("saliency", "smoothgrad"):
            return np.asarray(vis(score, x, **kwargs))
        # tf-keras-vis walks back from a non-convolutional layer to the previous convolution
        # unless told not to; we name the exact layer on both sides.
        return np.asarray(
            vis(score, x, penultimate_layer=layer, seek_penultimate_conv_layer=False, **kwargs)
        )


def _agreement(model, x, layer, methods, *, max_n=None):
    # Both configured alike: logit scores (tf-keras-vis's ReplaceToLinear), the same layer, the
    # same targets, and maps upsampled with corner alignment (tf-keras-vis uses scipy zoom).
    ex = Explainer(model, align_corners=True, batch_size=8)
    targets = explain_cam(ex, x, "gradcam", layers=layer).targets
    results = {}
    for method in methods:
        if method in ("saliency", "smoothgrad"):
            opts = {"noise": 0.0, "samples": 3} if method == "smoothgrad" else {}
            ours = explain_gradients(ex, x, method, targets=targets, **opts).heatmap
            kw = {"smooth_samples": 3, "smooth_noise": 0.0} if method == "smoothgrad" else {}
        else:
            ours = explain_cam(ex, x, method, layers=layer, targets=targets, max_n=max_n).heatmap
            kw = {"max_N": max_n} if method == "scorecam" and max_n else {}
        theirs = _tfkv_maps(model, x, targets, layer, method, **kw)
        results[method] = [pearson(a, b) for a, b in zip(ours, theirs, strict=True)]
    return results


def test_agreement_with_tf_keras_vis_on_a_small_cnn(small):
    model, x = small
    results = _agreement(
        model,
        x,
        "block4_relu",
        ["gradcam", "gradcam++", "scorecam", "layercam", "saliency", "smoothgrad"],
    )
    for method, rs in results.items():
        assert min(rs) >= 0.99, (method, rs)


@pytest.mark.slow
def test_agreement_with_tf_keras_vis_on_mobilenet_v2_imagenet(shared):
    from tfcam.data.pipeline import read_images

    keras.utils.set_random_seed(0)
    model = build_classifier(
        backbone="mobilenet_v2",
        num_classes=5,
        image_size=224,
        weights=shared / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5",
    )
    files = [str(shared / "cam-examples" / f) for f in ("both.png", "cat.jpg", "goldfish.jpg")]
    x = read_images(files, 224)
    results = _agreement(
        model, x, "out_relu", ["gradcam", "gradcam++", "layercam", "saliency", "smoothgrad"]
    )
    # Score-CAM one image at a time: tf-keras-vis pools the max_N channels over the whole batch.
    results["scorecam"] = [
        _agreement(model, x[i : i + 1], "out_relu", ["scorecam"], max_n=32)["scorecam"][0]
        for i in range(len(x))
    ]
    for method, rs in results.items():
        assert min(rs) >= 0.99, (method, rs)


# --------------------------------------------------------------------------------------------
# Gradient rules


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


# --------------------------------------------------------------------------------------------
# Engine behaviour


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_gradcam_reaches_every_backbones_default_and_early_layer(name):
    bb = BACKBONES[name]
    size = max(bb.min_size, 32)
    model = build_classifier(backbone=name, num_classes=3, image_size=size, weights=None)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights may give constant maps
        e = explain_cam(Explainer(model), x, "gradcam", layers=[bb.cam_layer, bb.early_layer])
    for layer in (bb.cam_layer, bb.early_layer):
        h = e.heatmaps[layer]
        assert h.shape == (2, size, size) and h.dtype == np.float32
        assert np.isfinite(h).all() and h.min() >= 0 and h.max() <= 1
    assert Explainer(model).resolve_layers(None) == (bb.cam_layer,)


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


def test_functional_api_reuses_one_explainer(small):
    from tfcam.explain.engine import explainer_for

    model, x = small
    h1 = gradcam(model, x)
    ex = explainer_for(model)
    fns = dict(ex._fns)
    h2 = gradcam(model, x)
    np.testing.assert_array_equal(h1, h2)
    assert explainer_for(model) is ex and ex._fns.keys() == fns.keys()


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
    with pytest.raises(UserError, match="Unknown method 'nope'"):
        parse_methods(["gradcam,nope"])
    assert parse_methods(["gradcam, Grad-CAM++", "ig"]) == [
        "gradcam",
        "gradcam++",
        "integrated_gradients",
    ]


def test_binary_model_positive_and_negative_class():
    keras.utils.set_random_seed(1)
    model = build_classifier(
        backbone="simple_cnn", num_classes=2, image_size=32, binary=True, weights=None
    )
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


def test_ablation_on_a_bypassed_layer_says_so():
    keras.utils.set_random_seed(0)
    model = build_classifier(backbone="resnet18_cifar", num_classes=3, image_size=32, weights=None)
    x = np.zeros((1, 32, 32, 3), "float32")
    with pytest.raises(UserError, match="Ablation-CAM needs a layer.*bypassed"):
        explain_cam(Explainer(model), x, "ablationcam", layers="layer4_block1_1_relu")
    e = explain_cam(Explainer(model), x + 100, "ablationcam", layers="layer4_block1_out")
    assert e.heatmap.shape == (1, 32, 32)


def test_aug_smooth_is_flip_equivariant(small):
    model, x = small
    ex = Explainer(model)
    t = explain_cam(ex, x, "gradcam").targets
    a = explain_cam(ex, x, "gradcam", aug_smooth=True, targets=t).heatmap
    b = explain_cam(ex, x[:, :, ::-1], "gradcam", aug_smooth=True, targets=t).heatmap
    np.testing.assert_allclose(a, b[:, :, ::-1], atol=1e-4)
    assert not np.allclose(a, explain_cam(ex, x, "gradcam", targets=t).heatmap)


def test_multiple_layers_and_eigen_smooth(small):
    model, x = small
    ex = Explainer(model)
    e = explain_cam(ex, x, "gradcam", layers=["block2_relu", "block4_relu"], eigen_smooth=True)
    assert e.raw["block2_relu"].shape == (4, 24, 24) and e.raw["block4_relu"].shape == (4, 6, 6)
    assert set(e.heatmaps) == {"block2_relu", "block4_relu"}


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
    from tfcam.explain.engine import fold_batchnorm

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
