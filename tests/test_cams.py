"""Class activation maps (:mod:`tfcam.explain.cams`): the formulas by hand, Eigen-CAM and
Ablation-CAM, agreement with tf-keras-vis, every backbone's layers, and aug_smooth."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcam.errors import UserError
from tfcam.explain.cams import explain_cam, first_component
from tfcam.explain.engine import Explainer
from tfcam.explain.features import feature_maps
from tfcam.explain.gradients import explain_gradients
from tfcam.models import BACKBONES

#: tfcam's own networks; the keras.applications rows are built and explained at both layers in
#: tests/test_applications.py (once: 40 networks are worth building only once per test run).
#: tfcam's own CNNs (keras.applications: tests/test_applications.py; keras-hub transformers:
#: tests/test_vit_explain.py).
OWN_BACKBONES = sorted(n for n, bb in BACKBONES.items() if bb.source == "tfcam")


def pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


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


def test_ablation_on_a_bypassed_layer_says_so(tiny_classifier):
    model = tiny_classifier("resnet18_cifar", num_classes=3, image_size=32, seed=0)
    x = np.zeros((1, 32, 32, 3), "float32")
    with pytest.raises(UserError, match="Ablation-CAM needs a layer.*bypassed"):
        explain_cam(Explainer(model), x, "ablationcam", layers="layer4_block1_1_relu")
    e = explain_cam(Explainer(model), x + 100, "ablationcam", layers="layer4_block1_out")
    assert e.heatmap.shape == (1, 32, 32)


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
    from tfcam.models.build import build_classifier

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
# Every backbone, and test-time augmentation


@pytest.mark.parametrize("name", OWN_BACKBONES)
def test_gradcam_reaches_every_backbones_default_and_early_layer(name, tiny_classifier):
    bb = BACKBONES[name]
    size = max(bb.min_size, 32)
    model = tiny_classifier(name, num_classes=3, image_size=size)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights may give constant maps
        e = explain_cam(Explainer(model), x, "gradcam", layers=[bb.cam_layer, bb.early_layer])
    for layer in (bb.cam_layer, bb.early_layer):
        h = e.heatmaps[layer]
        assert h.shape == (2, size, size) and h.dtype == np.float32
        assert np.isfinite(h).all() and h.min() >= 0 and h.max() <= 1
    assert Explainer(model).resolve_layers(None) == (bb.cam_layer,)


def test_aug_smooth_is_flip_equivariant(small):
    model, x = small
    ex = Explainer(model)
    t = explain_cam(ex, x, "gradcam").targets
    a = explain_cam(ex, x, "gradcam", aug_smooth=True, targets=t).heatmap
    b = explain_cam(ex, x[:, :, ::-1], "gradcam", aug_smooth=True, targets=t).heatmap
    np.testing.assert_allclose(a, b[:, :, ::-1], atol=1e-4)
    assert not np.allclose(a, explain_cam(ex, x, "gradcam", targets=t).heatmap)
