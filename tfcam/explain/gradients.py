"""Gradient methods: attributions in input space.

* **Saliency** — Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising
  Image Classification Models and Saliency Maps", ICLR workshop 2014. ``max_c |∂y/∂x|``.
* **SmoothGrad** — Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017. The mean of
  ``|∂y/∂x|`` over ``samples`` noisy copies (Gaussian, σ = ``noise`` × the image's value range).
* **Guided backpropagation** — Springenberg et al., "Striving for Simplicity: The All
  Convolutional Net", ICLR workshop 2015. Through every ReLU only positive gradients pass, and only
  where the forward input was positive.
* **Deconvnet** — Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV
  2014. Through every ReLU only positive gradients pass, whatever the forward input.
* **Guided Grad-CAM** — Selvaraju et al., ICCV 2017: guided backpropagation multiplied by the
  (upsampled) Grad-CAM map.
* **Integrated Gradients** — Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks",
  ICML 2017. ``(x - x₀) ⊙ ∫₀¹ ∂y/∂x(x₀ + α(x - x₀)) dα`` by the trapezoidal rule over ``steps``
  intervals, so the attributions sum to ``y(x) - y(x₀)`` (completeness).

Guided backpropagation and deconvnet run on a copy of the model whose ReLUs carry the modified
gradient (built once, weights copied); the user's model is untouched.

**Transformers and other GELU networks.** A ViT has no ReLU: its gates are the GELUs of the MLPs
(keras-hub's ``Dense(activation="gelu")`` inside each block). Guided backpropagation is adapted
rather than refused, by reading its rule as "at every gate, the gate's own derivative applied to
the positive part of the incoming gradient": for a ReLU that is exactly Springenberg et al.'s rule
(``1[x > 0] · ReLU(dy)``), for a GELU it is ``GELU'(x) · ReLU(dy)`` (deconvnet: ``ReLU(dy)``).
Attention, softmax and layer norms back-propagate unchanged, as max-pooling and batch norm do in
the original. Without the adaptation the method would silently equal the plain gradient on these
models; with it, it keeps its character (positive evidence only), and it keeps its weakness too:
Adebayo et al.'s sanity check applies (``tfcam evaluate-cams`` runs it). Gates nested inside
layers (keras-hub blocks, which cannot be re-created from their configs) get the rule while the
compiled function is traced, and are restored right after, so the model is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcam.errors import UserError, choices_message
from tfcam.explain.engine import (
    Explainer,
    Explanation,
    normalize_maps,
    predicted_classes,
    warn_constant,
)
from tfcam.explain.methods import GRADIENT, TABLE, registrar

BASELINES = ("black", "white", "blur", "uniform")


@dataclass(frozen=True)
class GradientOptions:
    """Options of the gradient methods (each reads what it needs; see :func:`explain_gradients`)."""

    samples: int = 20
    noise: float = 0.2
    steps: int = 64
    baseline: Any = "black"
    layers: Any = None
    seed: int = 0


#: ``{name: fn(explainer, images, targets, options)}`` → ``(attributions [N, H, W, 3], targets,
#: scores, probabilities)``, one small function per method of the table's ``gradient`` kind.
ATTRIBUTIONS: dict[str, Callable] = {}
#: ``@attribution("saliency")`` files a method under the name of its row in the method table.
attribution = registrar(ATTRIBUTIONS)


# --------------------------------------------------------------------------------------------
# Modified ReLUs for guided backpropagation and deconvnet


def _relu_with_rule(rule: str, max_value=None, negative_slope: float = 0.0, threshold: float = 0.0):
    """A ReLU (with Keras's ReLU options) whose gradient follows ``rule``: guided or deconvnet."""

    plain = negative_slope == 0.0 and threshold == 0.0 and max_value in (None, 6.0)

    @tf.custom_gradient
    def f(x):
        if plain:  # the fused kernels of the common cases
            y = tf.nn.relu(x) if max_value is None else tf.nn.relu6(x)
        else:
            y = keras.activations.relu(
                x, negative_slope=negative_slope, max_value=max_value, threshold=threshold
            )

        def grad(dy):
            if rule == "deconvnet":
                return tf.nn.relu(dy)
            passes = x > threshold
            if max_value is not None:
                passes = tf.logical_and(passes, x < max_value)
            return tf.where(tf.logical_and(passes, dy > 0), dy, tf.zeros_like(dy))

        return y, grad

    return f


@keras.saving.register_keras_serializable(package="tfcam")
class RuleReLU(keras.layers.Layer):
    """A ReLU layer whose backward pass follows the guided-backpropagation or deconvnet rule."""

    def __init__(
        self, rule: str = "guided", max_value=None, negative_slope=0.0, threshold=0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.rule, self.max_value, self.negative_slope, self.threshold = (
            rule,
            max_value,
            negative_slope,
            threshold,
        )
        self._fn = _relu_with_rule(rule, max_value, negative_slope, threshold)

    def call(self, x):
        return self._fn(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rule": self.rule,
            "max_value": self.max_value,
            "negative_slope": self.negative_slope,
            "threshold": self.threshold,
        }


_RELU_NAMES = {"relu": None, "relu6": 6.0}
#: Smooth gates that follow the guided (or deconvnet) rule: their derivative times ReLU(dy).
GATES = ("gelu",)


def _gate_with_rule(fn: Callable, rule: str) -> Callable:
    """A smooth gate ``fn`` (GELU) whose backward pass is ``fn'(x) · ReLU(dy)`` (guided) or
    ``ReLU(dy)`` (deconvnet); forward unchanged."""

    @tf.custom_gradient
    def f(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)

        def grad(dy):
            positive = tf.nn.relu(dy)
            return positive if rule == "deconvnet" else tape.gradient(y, x, positive)

        return y, grad

    return f


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", "").lower()


def has_relu_layers(model: keras.Model) -> bool:
    """Whether :func:`with_relu_rule` has anything to replace among the model's own layers."""
    return any(
        isinstance(la, keras.layers.ReLU)
        or _activation_name(getattr(la, "activation", None)) in _RELU_NAMES
        for la in model.layers
    )


@contextlib.contextmanager
def gates_with_rule(model: keras.Model, rule: str):
    """Within the block, every GELU gate of the model and of the layers inside its layers follows
    ``rule``; restored on exit. Used while a compiled function is traced."""
    swapped = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        act = getattr(layer, "activation", None)
        if callable(act) and _activation_name(act) in GATES:
            swapped.append((layer, act))
            layer.activation = _gate_with_rule(act, rule)
    try:
        yield len(swapped)
    finally:
        for layer, act in swapped:
            layer.activation = act


def with_relu_rule(model: keras.Model, rule: str) -> keras.Model:
    """A copy of ``model`` whose ReLUs follow ``rule`` in the backward pass (forward unchanged).

    ReLU layers, ``Activation("relu"/"relu6")`` layers and layers with a ReLU ``activation``
    argument are all replaced; weights are copied.
    """

    def clone(layer):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.ReLU):
            mv = cfg.get("max_value")
            return RuleReLU(
                rule,
                None if mv is None else float(mv),
                cfg.get("negative_slope", 0.0),
                cfg.get("threshold", 0.0),
                name=layer.name,
            )
        act = getattr(layer, "activation", None)
        act_name = getattr(act, "__name__", None)
        if act_name in _RELU_NAMES:
            cfg["activation"] = _relu_with_rule(rule, _RELU_NAMES[act_name])
        return layer.__class__.from_config(cfg)

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if layer.weights:
            copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy


# --------------------------------------------------------------------------------------------
# Compiled input gradients


def _input_grad_fn(explainer: Explainer, rule: str | None):
    """Compiled: (images, targets) → (∂score/∂images, resolved targets, scores, probabilities)."""

    def make_body():
        # Input gradients need no intermediate outputs, so the graph is the copy with batch
        # normalisation folded into the convolutions (cheaper forward and backward passes).
        graph = explainer.folded_head_graph()
        if rule is not None and has_relu_layers(graph):
            folded = graph
            graph = explainer.copy_with(f"{rule}_folded", lambda m: with_relu_rule(folded, rule))

        def body(images, targets):
            gates = gates_with_rule(graph, rule) if rule else contextlib.nullcontext()
            with gates, tf.GradientTape() as tape:
                tape.watch(images)
                _, targets, scores, probs = explainer.run_graph(graph, images, targets)
            return tape.gradient(scores, images), targets, scores, probs

        return body

    return explainer.compiled_batch(("input_grad", rule), make_body)


def _grads(explainer, images, targets, rule=None):
    """Input gradients for all images, in the explainer's batches; targets must be resolved."""
    fn = _input_grad_fn(explainer, rule)
    out = [
        fn(tf.constant(b), tf.constant(targets[s : s + len(b)]))
        for s, b in explainer.batches(images)
    ]
    return [np.concatenate([np.asarray(o[i]) for o in out]) for i in range(4)]


def _to_heatmap(attributions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max_c |a|`` per pixel, normalised: heatmaps ``[N, H, W]`` and constant flags."""
    h, c = normalize_maps(tf.constant(np.abs(attributions).max(axis=-1).astype(np.float32)))
    return h.numpy(), c.numpy()


def _baseline(images: np.ndarray, baseline, seed: int) -> np.ndarray:
    if isinstance(baseline, (int, float)):
        return np.full_like(images, float(baseline))
    if isinstance(baseline, np.ndarray):
        return np.broadcast_to(baseline.astype(np.float32), images.shape).copy()
    if baseline == "black":
        return np.zeros_like(images)
    if baseline == "white":
        return np.full_like(images, 255.0)
    if baseline == "uniform":
        return np.random.default_rng(seed).uniform(0, 255, images.shape).astype(np.float32)
    if baseline == "blur":
        import cv2

        k = max(3, (min(images.shape[1:3]) // 8) | 1)
        return np.stack([cv2.GaussianBlur(im, (k, k), 0) for im in images]).astype(np.float32)
    raise UserError(choices_message("baseline", baseline, BASELINES))


def explain_gradients(
    explainer: Explainer,
    images: np.ndarray,
    method: str = "saliency",
    *,
    targets=None,
    samples: int = 20,
    noise: float = 0.2,
    steps: int = 64,
    baseline="black",
    layers=None,
    seed: int = 0,
) -> Explanation:
    """Input-space attributions with any method of :data:`GRADIENT_METHODS`.

    Args:
        explainer: The model's :class:`~tfcam.explain.engine.Explainer`.
        images: ``[N, H, W, 3]`` as the model takes them.
        method: One of :data:`GRADIENT_METHODS`.
        targets: None (predicted class), a class index or name, or one per image.
        samples: SmoothGrad: number of noisy copies.
        noise: SmoothGrad: noise σ as a fraction of each image's value range (0 disables noise).
        steps: Integrated Gradients: intervals of the path integral.
        baseline: Integrated Gradients: ``black``, ``white``, ``blur``, ``uniform``, a number, or
            an array broadcastable to the images.
        layers: Guided Grad-CAM: the Grad-CAM layer (default from the registry).
        seed: Seed of the noise (SmoothGrad) and of a uniform baseline.

    Returns:
        An :class:`~tfcam.explain.engine.Explanation` keyed by the method name: ``heatmaps``
        ``[N, H, W]`` in [0, 1] and ``raw`` attributions ``[N, H, W, 3]``.
    """
    if method not in TABLE or TABLE[method].kind != GRADIENT:
        names = [n for n, m in TABLE.items() if m.kind == GRADIENT]
        raise UserError(choices_message("gradient method", method, names))
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    requested = explainer.resolve_targets(targets, len(images))
    # Resolve "predicted" once, on the clean images (noise or paths must not change the target).
    if (requested < 0).any():
        logits = explainer.forward_logits(images)
        predicted = np.asarray(predicted_classes(tf.constant(logits)))
        requested = np.where(requested < 0, predicted, requested).astype(np.int32)

    options = GradientOptions(samples, noise, steps, baseline, layers, seed)
    raw, t, scores, probs = ATTRIBUTIONS[method](explainer, images, requested, options)
    heat, const = _to_heatmap(raw)
    warn_constant({method: const}, method)
    return Explanation(
        {method: heat},
        {method: raw.astype(np.float32)},
        t.astype(np.int32),
        scores.astype(np.float32),
        probs.astype(np.float32),
        {method: const},
        method,
    )


# --------------------------------------------------------------------------------------------
# The methods: one small function each (papers in the module docstring)


@attribution("saliency")
def _saliency(explainer, images, targets, o: GradientOptions):
    return _grads(explainer, images, targets)


@attribution("guided_backprop")
def _guided_backprop(explainer, images, targets, o: GradientOptions):
    return _grads(explainer, images, targets, "guided")


@attribution("deconvnet")
def _deconvnet(explainer, images, targets, o: GradientOptions):
    return _grads(explainer, images, targets, "deconvnet")


@attribution("guided_gradcam")
def _guided_gradcam(explainer, images, targets, o: GradientOptions):
    from tfcam.explain.cams import explain_cam

    guided, t, scores, probs = _grads(explainer, images, targets, "guided")
    cam = explain_cam(explainer, images, "gradcam", layers=o.layers, targets=targets)
    return guided * cam.heatmap[..., None], t, scores, probs


@attribution("smoothgrad")
def _smoothgrad(explainer, images, targets, o: GradientOptions):
    _, t, scores, probs = _grads(explainer, images, targets)
    raw = _smoothgrad_sum(explainer, images, targets, o.samples, o.noise, o.seed)
    return raw, t, scores, probs


@attribution("integrated_gradients")
def _integrated_gradients(explainer, images, targets, o: GradientOptions):
    baseline = _baseline(images, o.baseline, o.seed)
    return _path_integral(explainer, images, targets, o.steps, baseline)


def _smoothgrad_sum(explainer, images, targets, samples, noise, seed) -> np.ndarray:
    # Mean of |gradient| over noisy copies. Copies of several samples share one batch, so a small
    # batch of images still fills the compiled call (batch_size images per forward/backward).
    rng = np.random.default_rng(seed)
    n = len(images)
    span = images.max(axis=(1, 2, 3), keepdims=True) - images.min(axis=(1, 2, 3), keepdims=True)
    sigma = noise * span
    total = np.zeros_like(images)
    per_call = max(1, explainer.batch_size // n)
    for start in range(0, samples, per_call):
        k = min(per_call, samples - start)
        noisy = np.concatenate(
            [
                images + rng.normal(0.0, 1.0, images.shape).astype(np.float32) * sigma
                for _ in range(k)
            ]
        )
        grads = _grads(explainer, noisy, np.tile(targets, k))[0]
        total += np.abs(grads).reshape(k, *images.shape).sum(axis=0)
    return total / max(samples, 1)


def _path_integral(explainer, images, targets, steps, baseline):
    if steps < 1:
        raise UserError(f"Invalid value for steps: {steps} (must be at least 1)")
    n = len(images)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    weights = np.full(steps + 1, 1.0 / steps, np.float32)
    weights[[0, -1]] *= 0.5  # trapezoidal rule
    total = np.zeros_like(images)
    per_call = max(1, explainer.batch_size // n)
    last = None
    for start in range(0, len(alphas), per_call):
        a = alphas[start : start + per_call]
        points = np.concatenate([baseline + ai * (images - baseline) for ai in a])
        grads, t, s, p = _grads(explainer, points, np.tile(targets, len(a)))
        total += np.tensordot(
            weights[start : start + len(a)], grads.reshape(len(a), *images.shape), axes=1
        )
        last = (t[-n:], s[-n:], p[-n:])  # the final point is the image itself (alpha = 1)
    return (images - baseline) * total, *last
