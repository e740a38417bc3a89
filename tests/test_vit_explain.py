"""Explaining vision transformers: token layers as patch grids, default layers, every CAM and
gradient method, attention rollout and gradient-weighted attention against independent references,
and refusal on models they cannot apply to."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("keras_hub")

import tensorflow as tf
from conftest import run_cli, write_image
from tiny_vit import tiny_vit

from tfcam.errors import UserError
from tfcam.explain.api import explain
from tfcam.explain.engine import Explainer
from tfcam.explain.methods import ATTENTION, TABLE


def _images(explainer, n=3, seed=0):
    return (
        np.random.default_rng(seed).uniform(0, 255, (n, *explainer.input_size, 3)).astype("float32")
    )


@pytest.fixture(scope="module")
def vit():
    return Explainer(tiny_vit())


@pytest.fixture(scope="module")
def dinov2():
    """DINOv2 with two register tokens on a non-square 32×48 input: a 4×6 grid after 3 tokens."""
    return Explainer(tiny_vit(family="dinov2", image_size=(32, 48), registers=2))


# --------------------------------------------------------------------------------------------
# Token layout and layers


def test_token_grid_of_each_family(vit, dinov2):
    g = vit.tokens
    assert (g.prefix, g.rows, g.cols, g.class_token) == (1, 4, 4, True)
    g = dinov2.tokens
    assert (g.prefix, g.rows, g.cols, g.class_token) == (3, 4, 6, True)
    no_class = Explainer(tiny_vit(head="pool", class_token=False)).tokens
    assert (no_class.prefix, no_class.rows, no_class.cols, no_class.class_token) == (0, 4, 4, False)
    assert vit.token_layers == ("patch_embedding", "block_1", "block_2", "encoder_norm")


def test_default_layer_follows_the_head(vit):
    # Class-token head: the input of the last block (its patch tokens still reach the class token).
    assert vit.resolve_layers(None) == ("block_1",)
    assert Explainer(tiny_vit(blocks=1)).resolve_layers(None) == ("patch_embedding",)
    # Pooled head: the last block's patch tokens are read directly.
    assert Explainer(tiny_vit(head="pool")).resolve_layers(None) == ("block_2",)


def test_layers_whose_patches_cannot_reach_a_class_token_head_are_refused(vit):
    for name in ("block_2", "encoder_norm"):
        with pytest.raises(UserError, match="only the class token") as e:
            vit.resolve_layers(name)
        assert "\n" not in str(e.value) and "'block_1'" in str(e.value)


def test_list_layers_shows_token_layers():
    from tfcam.explain.files import layer_lines

    lines = layer_lines(tiny_vit(family="dinov2", image_size=(32, 48), registers=2))
    assert "block_1  (default)  (tokens as a 4×6 patch grid)" in lines
    assert any(line.startswith("block_2") and "not explainable" in line for line in lines)


def test_token_reshape_matches_a_hand_made_grad_cam(vit):
    """Grad-CAM at a token layer is pytorch-grad-cam's recipe done by hand: gradients at the
    tokens, class token dropped, both reshaped to the 4×4 grid."""
    import keras

    x = _images(vit)
    e = explain(vit, x, "gradcam", targets=1)
    graph = keras.Model(vit.model.input, [vit.model.get_layer("block_1").output, vit.head.tensor])
    with tf.GradientTape() as tape:
        acts, head = graph(x)
        score = vit.head.to_logits(head)[:, 1]
    grads = tape.gradient(score, acts).numpy()[:, 1:].reshape(3, 4, 4, -1)
    acts = acts.numpy()[:, 1:].reshape(3, 4, 4, -1)
    expected = np.maximum((acts * grads.mean(axis=(1, 2), keepdims=True)).sum(-1), 0)
    np.testing.assert_allclose(e.raw["block_1"], expected, rtol=1e-4, atol=1e-6)


def test_grad_cam_on_a_vit_is_one_compiled_pass(vit):
    x = _images(vit, n=5)
    explain(vit, x, "gradcam")
    explain(vit, x[:2], "gradcam")
    counts = {k: v for k, v in vit.trace_counts().items() if k[:2] == ("cam", "gradcam")}
    assert counts and all(v == 1 for v in counts.values())


# --------------------------------------------------------------------------------------------
# Every CAM and gradient method


@pytest.mark.parametrize("family", ["vit", "dinov2"])
def test_every_non_attention_method_runs(family, vit, dinov2):
    import warnings

    ex = vit if family == "vit" else dinov2
    x = _images(ex)
    h, w = ex.input_size
    for method, row in TABLE.items():
        if row.kind == ATTENTION:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = explain(ex, x, method, max_n=8, samples=2, steps=4)
        assert e.heatmap.shape == (3, h, w), method
        assert np.isfinite(e.heatmap).all() and e.heatmap.max() == 1.0, method
        raw = next(iter(e.raw.values()))
        if row.kind != "gradient":
            assert raw.shape == (3, ex.tokens.rows, ex.tokens.cols), method


def test_feature_maps_of_a_token_layer_are_the_patch_grid(dinov2):
    from tfcam.explain.features import feature_maps

    maps = feature_maps(dinov2, _images(dinov2, 2), "block_1")["block_1"]
    assert maps.shape == (2, 4, 6, 32)


def test_guided_backprop_follows_the_gelu_gates_and_leaves_the_model_alone(vit):
    x = _images(vit, 2)
    plain = explain(vit, x, "saliency").raw["saliency"]
    guided = explain(vit, x, "guided_backprop").raw["guided_backprop"]
    assert np.abs(guided - plain).max() > 1e-3 * np.abs(plain).max()
    gates = [
        la.activation.__name__
        for la in vit.model._flatten_layers(include_self=False, recursive=True)
        if callable(getattr(la, "activation", None))
    ]
    assert gates.count("gelu") == 2  # restored after tracing


def test_gelu_gate_rule_is_its_derivative_on_the_positive_gradient():
    import keras

    from tfcam.explain.gradients import _gate_with_rule

    x = tf.constant(np.linspace(-3, 3, 13, dtype="float32"))
    w = tf.constant(np.where(np.arange(13) % 2, 1.5, -2.0).astype("float32"))
    for rule in ("guided", "deconvnet"):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = tf.reduce_sum(_gate_with_rule(keras.activations.gelu, rule)(x) * w)
            y_plain = tf.reduce_sum(keras.activations.gelu(x) * w)
        got = tape.gradient(y, x).numpy()
        derivative = tape.gradient(y_plain, x).numpy() / w.numpy()
        want = np.maximum(w.numpy(), 0) * (derivative if rule == "guided" else 1.0)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(y.numpy(), y_plain.numpy(), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# The attention is the model's: recomputed blocks equal the model's blocks


@pytest.mark.parametrize("family", ["vit", "dinov2"])
def test_recomputed_blocks_equal_the_models_blocks(family, vit, dinov2):
    import keras

    from tfcam.explain.attention import attention_path

    ex = vit if family == "vit" else dinov2
    x = tf.constant(_images(ex))
    outputs, attentions, head = attention_path(ex).forward(x)
    names = ["block_1", "block_2"]
    model = keras.Model(ex.model.input, [ex.model.get_layer(n).output for n in names])
    for got, want in zip(outputs, model(x), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
    want_head = keras.Model(ex.model.input, ex.head.tensor)(x)
    np.testing.assert_allclose(head.numpy(), want_head.numpy(), atol=1e-5)
    t = ex.tokens.length
    assert [a.shape for a in attentions] == [(3, 2, t, t)] * 2
    np.testing.assert_allclose(tf.reduce_sum(attentions[0], -1).numpy(), 1.0, atol=1e-5)


def _layer_norm(x, eps=1e-6):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _hand_set_model(seed=5):
    """Two ViT blocks, 8 dims, 2 heads of 4, every block weight set by hand (layer norms plain)."""
    model = tiny_vit(dim=8, heads=2, mlp=16, blocks=2, seed=1)
    rng = np.random.default_rng(seed)
    weights = {}
    for b in (1, 2):
        block = model.get_layer(f"block_{b}")
        values = []
        for v in block.weights:
            short = v.path.split("/", 1)[1]
            if short.endswith("gamma"):
                val = np.ones(v.shape)
            elif short.endswith("beta"):
                val = np.zeros(v.shape)
            else:
                val = rng.normal(0, 0.6 if "mha" in short else 0.3, v.shape)
            values.append(val.astype("float32"))
            weights[(b, short)] = values[-1]
        block.set_weights(values)
    return model, weights


def _numpy_blocks(x, weights):
    """The two blocks in NumPy from the hand-set weights: per head softmax(QKᵀ/√d); GELU by erf.
    Returns the attention of each block, ``[N, heads, T, T]``."""
    from scipy.special import erf

    attentions = []
    for b in (1, 2):
        w = lambda k, b=b: weights[(b, k)]  # noqa: E731
        h = _layer_norm(x)
        q = (
            np.einsum("ntd,dhk->nhtk", h, w("mha/query/kernel"))
            + w("mha/query/bias")[None, :, None]
        )
        k = np.einsum("ntd,dhk->nhtk", h, w("mha/key/kernel")) + w("mha/key/bias")[None, :, None]
        v = (
            np.einsum("ntd,dhk->nhtk", h, w("mha/value/kernel"))
            + w("mha/value/bias")[None, :, None]
        )
        a = _softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]))
        attentions.append(a)
        out = np.einsum("nhtk,hkd->ntd", a @ v, w("mha/attention_output/kernel"))
        x = x + out + w("mha/attention_output/bias")
        z = _layer_norm(x) @ w("mlp/dense_1/kernel") + w("mlp/dense_1/bias")
        x = (
            x
            + (0.5 * z * (1 + erf(z / np.sqrt(2)))) @ w("mlp/dense_2/kernel")
            + w("mlp/dense_2/bias")
        )
    return attentions


def test_attention_rollout_equals_numpy_on_hand_set_weights():
    import keras

    model, weights = _hand_set_model()
    ex = Explainer(model)
    x = _images(ex, 2, seed=3)
    tokens = keras.Model(model.input, model.get_layer("patch_embedding").output)(x).numpy()
    attentions = _numpy_blocks(tokens.astype("float64"), weights)
    rollout = np.eye(17)[None]
    for a in attentions:
        m = a.mean(axis=1) + np.eye(17)
        rollout = (m / m.sum(-1, keepdims=True)) @ rollout
    expected = rollout[:, 0, 1:].reshape(2, 4, 4)
    got = explain(ex, x, "attention_rollout").raw["attention_rollout"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_gradient_attention_equals_an_independent_tape():
    """Chefer et al.'s rule against attention taken from the model's own MHA layers by a tape in
    this test: Ā = E_h[(∇A ⊙ A)⁺], R ← R + Ā·R from the identity, the class token's row."""
    import keras

    model, _ = _hand_set_model(seed=8)
    ex = Explainer(model)
    x = tf.constant(_images(ex, 2, seed=4))
    pre = keras.Model(model.input, model.get_layer("patch_embedding").output)
    with tf.GradientTape(persistent=True) as tape:
        h = pre(x)
        tape.watch(h)
        attentions = []
        for b in (1, 2):
            block = model.get_layer(f"block_{b}")
            n = block.layer_norm_1(h)
            out, a = block.mha(n, n, return_attention_scores=True)
            attentions.append(a)
            h = h + out
            h = h + block.mlp(block.layer_norm_2(h))
        logits = model.get_layer("predictions").kernel
        y = model.get_layer("encoder_norm")(h)[:, 0] @ logits + model.get_layer("predictions").bias
        score = tf.reduce_sum(y[:, 2])
    r = np.eye(17)[None].repeat(2, 0)
    for a in attentions:
        g = tape.gradient(score, a).numpy()
        bar = np.maximum(g * a.numpy(), 0).mean(axis=1)
        r = r + bar @ r
    expected = r[:, 0, 1:].reshape(2, 4, 4)
    got = explain(ex, x.numpy(), "gradient_attention", targets=2).raw["gradient_attention"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("class_token", [False, True])
def test_rollout_under_a_pooled_head_reads_the_mean_of_the_patch_rows(class_token):
    from tfcam.explain.attention import attention_path

    ex = Explainer(tiny_vit(head="pool", class_token=class_token))
    x = _images(ex, 2)
    _, attentions, _ = attention_path(ex).forward(tf.constant(x))
    p = int(class_token)
    t = 16 + p
    rollout = np.eye(t)[None]
    for a in attentions:
        m = a.numpy().mean(axis=1) + np.eye(t)
        rollout = (m / m.sum(-1, keepdims=True)) @ rollout
    expected = rollout[:, p:, p:].mean(axis=1).reshape(2, 4, 4)
    got = explain(ex, x, "attention_rollout").raw["attention_rollout"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_attention_methods_on_dinov2_with_registers(dinov2):
    for method in ("attention_rollout", "gradient_attention"):
        e = explain(dinov2, _images(dinov2), method)
        assert e.raw[method].shape == (3, 4, 6) and e.heatmap.shape == (3, 32, 48)


# --------------------------------------------------------------------------------------------
# Refusal


def test_attention_methods_are_refused_on_a_cnn(small):
    model, x = small
    ex = Explainer(model)
    for method in ("attention_rollout", "gradient_attention"):
        with pytest.raises(UserError, match="reads the attention of transformer blocks") as e:
            explain(ex, x, method)
        assert "\n" not in str(e.value)
    assert not ex.trace_counts()  # refused before anything was compiled


def test_cli_refuses_attention_on_a_cnn_with_exit_2_before_any_image(small, tmp_path):
    model, _ = small
    model.save(tmp_path / "cnn.keras")
    img = write_image(tmp_path / "in" / "a.png", np.full((48, 48, 3), 90, np.uint8))
    out = tmp_path / "out"
    r = run_cli("explain", "--model", tmp_path / "cnn.keras", img, "--method",
                "gradcam,attention_rollout", "--out", out)  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "attention_rollout" in lines[0] and "gradcam" in lines[0]
    assert not list(out.rglob("*.png")) if out.exists() else True


# --------------------------------------------------------------------------------------------
# The builder's classifiers (branch i16-vit): same layout, every method, the same attention


@pytest.mark.parametrize(
    ("kwargs", "grid", "default"),
    [
        ({"backbone": "vit_test", "head": "token", "image_size": 32}, (1, 4, 4), "block_1"),
        ({"backbone": "vit_test", "head": "gap", "image_size": 32}, (1, 4, 4), "block_2"),
        (
            {"backbone": "dinov2_test", "head": "token", "image_size": (32, 48),
             "options": {"num_register_tokens": 2}},
            (3, 4, 6),
            "block_1",
        ),
    ],
)  # fmt: skip
def test_builders_classifiers_are_explained_by_every_method(kwargs, grid, default):
    import warnings

    import keras

    from tfcam.explain.attention import attention_path
    from tfcam.models.build import build_classifier

    keras.utils.set_random_seed(2)
    model = build_classifier(num_classes=3, weights=None, **kwargs)
    ex = Explainer(model)
    assert (ex.tokens.prefix, ex.tokens.rows, ex.tokens.cols) == grid
    assert ex.resolve_layers(None) == (default,)
    x = _images(ex, 2)
    for method in TABLE:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            e = explain(ex, x, method, max_n=4, samples=2, steps=2)
        assert e.heatmap.shape == (2, *ex.input_size) and np.isfinite(e.heatmap).all(), method
    outputs, _, _ = attention_path(ex).forward(tf.constant(x))
    want = keras.Model(model.input, [model.get_layer(f"block_{i}").output for i in (1, 2)])(x)
    for got, w in zip(outputs, want, strict=True):
        np.testing.assert_allclose(got.numpy(), w.numpy(), atol=1e-5)
