"""Class activation maps: the Grad-CAM family on one engine.

Every method turns the activations ``A`` of a layer (``[N, h, w, C]``) into a map ``[N, h, w]``.
The gradient-weighted CAMs (Grad-CAM, Grad-CAM++, XGrad-CAM, HiRes-CAM, Layer-CAM) are one
weighting rule each in :mod:`tfcam.explain.methods` and share one compiled pass here. The CAMs
with passes of their own are registered below with :func:`cam_pass`:

* **Score-CAM** — Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional
  Neural Networks", CVPR-W 2020. Each channel, upsampled and scaled to [0, 1], masks the input;
  its weight is the target's probability on the masked image. ``max_n`` keeps the channels of
  highest spatial standard deviation, as Faster-Score-CAM (Desai & Ramaswamy's follow-up in
  tf-keras-vis) does. Masked forward passes are batched.
* **Ablation-CAM** — Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep
  Convolutional Network via Gradient-free Localization", WACV 2020. A channel's weight is the
  drop of the target score when that channel is zeroed.
* **Eigen-CAM** — Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal
  Components", IJCNN 2020. The projection of the activations on their first principal component
  (its sign chosen to agree with the mean activation); no gradients, no target.

Options, as pytorch-grad-cam offers them: ``eigen_smooth`` replaces the channel sum of the
weighted activations by their first principal component; ``aug_smooth`` averages the maps over
test-time augmentations (horizontal flip × brightness 0.9/1.0/1.1), flipped back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from tfcam.errors import UserError, choices_message
from tfcam.explain.engine import (
    Explainer,
    Explanation,
    gather_scores,
    normalize_maps,
    probabilities_from_logits,
    upsample,
    warn_constant,
)
from tfcam.explain.methods import CAM, GRADIENT_CAM, TABLE, registrar

_EPS = 1e-7


@dataclass(frozen=True)
class CamOptions:
    """Options of the CAM passes (each pass reads what it needs)."""

    eigen_smooth: bool = False
    max_n: int | None = None
    chunk: int = 64


#: ``{name: pass(explainer, images, targets, layers, options)}`` for CAMs with passes of their own;
#: each returns ``(raw maps, heatmaps, constant flags, targets, scores, probabilities)``.
PASSES: dict[str, Callable] = {}
#: ``@cam_pass("scorecam")`` files a pass under the name of its row in the method table.
cam_pass = registrar(PASSES)


# --------------------------------------------------------------------------------------------
# Tensor helpers (used inside compiled code)


def weighted_activations(method: str, acts: tf.Tensor, grads: tf.Tensor) -> tf.Tensor:
    """``[N, h, w, C]`` weighted activations whose channel sum is the (pre-ReLU) map, by the
    method's weighting rule in :mod:`tfcam.explain.methods`."""
    return TABLE[method].weights(tf, acts, grads)


def first_component(weighted: tf.Tensor) -> tf.Tensor:
    """Projection of ``[N, h, w, C]`` on its first principal component (over the h·w rows): ``[N, h, w]``.

    SVD leaves the sign open; it is chosen so the projection correlates positively with the
    channel sum, so that "more activation" stays "hotter".
    """
    n, h, w, c = tf.unstack(tf.shape(weighted))
    x = tf.reshape(weighted, [n, h * w, c])
    xc = x - tf.reduce_mean(x, axis=1, keepdims=True)
    _, _, v = tf.linalg.svd(xc, full_matrices=False)
    proj = tf.linalg.matvec(xc, v[:, :, 0])  # [N, hw]
    reference = tf.reduce_sum(x, axis=2)
    reference = reference - tf.reduce_mean(reference, axis=1, keepdims=True)
    sign = tf.sign(tf.reduce_sum(proj * reference, axis=1, keepdims=True))
    sign = tf.where(sign == 0, tf.ones_like(sign), sign)
    return tf.reshape(proj * sign, [n, h, w])


def combine(weighted: tf.Tensor, eigen_smooth: bool) -> tf.Tensor:
    """Channel sum (or first component), then ReLU: the raw map ``[N, h, w]``."""
    cam = first_component(weighted) if eigen_smooth else tf.reduce_sum(weighted, axis=-1)
    return tf.nn.relu(cam)


def _finish(explainer: Explainer, raws):
    """Upsample and normalise each raw map; returns (heatmaps, constant) lists."""
    heat, const = [], []
    for raw in raws:
        h, c = normalize_maps(upsample(raw, explainer.input_size, explainer.align_corners))
        heat.append(h)
        const.append(c)
    return heat, const


# --------------------------------------------------------------------------------------------
# Compiled passes


def _gradient_cam_fn(
    explainer: Explainer, method: str, layers: tuple[str, ...], eigen_smooth: bool
):
    """One compiled pass for every gradient-weighted CAM: activations and their gradients."""

    def make_body():
        graph = explainer.graph(layers)

        def body(images, targets):
            with tf.GradientTape() as tape:
                acts, targets, scores, probs = explainer.run_graph(graph, images, targets)
            grads = tape.gradient(scores, acts)
            cut = [n for n, g in zip(layers, grads, strict=True) if g is None]
            if cut:  # raised while tracing, so once, before any number is computed
                raise UserError(
                    f"Layer '{cut[0]}' is not on the path from the input to the prediction "
                    "(no gradient reaches it); choose a layer inside the network, e.g. "
                    f"'{explainer.resolve_layers(None)[0]}'"
                )
            # Token layers: gradients taken at the tokens (on the path to the score), then both
            # seen as patch grids.
            acts, grads = explainer.as_grids(layers, acts), explainer.as_grids(layers, grads)
            raws = [
                combine(weighted_activations(method, a, g), eigen_smooth)
                for a, g in zip(acts, grads, strict=True)
            ]
            heat, const = _finish(explainer, raws)
            return raws, heat, const, targets, scores, probs

        return body

    return explainer.compiled_batch(("cam", method, layers, eigen_smooth), make_body)


def _activations_fn(explainer: Explainer, layers: tuple[str, ...], grids: bool = True):
    """Compiled forward pass returning activations (token layers as patch grids unless
    ``grids`` is false), resolved targets, scores, probabilities."""

    def make_body():
        graph = explainer.graph(layers)

        def body(images, targets):
            acts, targets, scores, probs = explainer.run_graph(graph, images, targets)
            return (explainer.as_grids(layers, acts) if grids else acts), targets, scores, probs

        return body

    return explainer.compiled_batch(("acts", layers, grids), make_body)


@cam_pass("eigencam")
def _eigencam(explainer: Explainer, x, t, layers, options: CamOptions):
    def make_body():
        acts_fn = _activations_fn(explainer, layers)

        def body(images, targets):
            acts, targets, scores, probs = acts_fn(images, targets)
            raws = [tf.nn.relu(first_component(a)) for a in acts]
            heat, const = _finish(explainer, raws)
            return raws, heat, const, targets, scores, probs

        return body

    return explainer.compiled_batch(("cam", "eigencam", layers), make_body)(x, t)


def _target_probability(explainer: Explainer, head: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    probs = probabilities_from_logits(explainer.head.to_logits(head))
    return tf.gather(probs, targets, axis=1, batch_dims=1)


def _scorecam_masked_fn(explainer: Explainer):
    """Compiled: one image, its selected low-resolution channels ``[h, w, K]`` and its target →
    the target's probability on each of the K masked copies."""

    def build():
        # Only the head is needed, so batch normalisation can be folded into the convolutions:
        # the 64 masked forwards per image are most of Score-CAM's cost.
        graph = explainer.folded_head_graph()
        height, width = explainer.input_size

        @tf.function(
            input_signature=[
                tf.TensorSpec(
                    [*explainer.input_size, explainer.image_spec().shape[-1]], tf.float32
                ),
                tf.TensorSpec([None, None, None], tf.float32),
                tf.TensorSpec([], tf.int32),
            ],
            reduce_retracing=True,
        )
        def fn(image, channels, target):
            maps = tf.transpose(channels, [2, 0, 1])  # [K, h, w]
            masks, _ = normalize_maps(upsample(maps, (height, width), explainer.align_corners))
            masked = image[None] * masks[..., None]
            head = graph(masked, training=False)
            k = tf.shape(masks)[0]
            return _target_probability(explainer, head, tf.fill([k], target))

        return fn

    return explainer.compiled(("scorecam_masked",), build)


@cam_pass("scorecam")
def _scorecam(explainer: Explainer, x, t, layers, options: CamOptions):
    acts, targets, scores, probs = _activations_fn(explainer, layers)(x, t)
    masked_fn = _scorecam_masked_fn(explainer)
    max_n, chunk = options.max_n, options.chunk
    raws = []
    for a in acts:
        a = a.numpy()
        maps = []
        for i in range(len(a)):
            ai = a[i]
            if max_n is not None and 0 < max_n < ai.shape[-1]:
                std = ai.reshape(-1, ai.shape[-1]).std(axis=0)
                sel = np.sort(np.argsort(-std, kind="stable")[:max_n])
                ai = ai[..., sel]
            weights = np.concatenate(
                [
                    masked_fn(
                        tf.constant(x[i]), tf.constant(ai[..., s : s + chunk]), targets[i]
                    ).numpy()
                    for s in range(0, ai.shape[-1], chunk)
                ]
            )
            maps.append(np.maximum(ai @ weights, 0.0))
        raws.append(tf.constant(np.stack(maps).astype(np.float32)))
    heat, const = _finish(explainer, raws)
    return raws, heat, const, targets, scores, probs


def _ablation_rest(explainer: Explainer, layer: str) -> keras.Model:
    def factory(model):
        try:
            rest = keras.Model(model.get_layer(layer).output, explainer.head.tensor)
            if layer in explainer.token_layers:
                # keras-hub's DINOv2 gives square-input static lengths; the tensors know better.
                rest.input_spec = None
            return rest
        except ValueError as e:
            raise UserError(
                f"Ablation-CAM needs a layer whose output alone determines the prediction; "
                f"'{layer}' is bypassed by another path (a skip connection) ({str(e).splitlines()[0][:120]}). "
                "Try the default layer or a block output"
            ) from None

    return explainer.copy_with(f"ablation_rest:{layer}", factory)


def _ablation_fn(explainer: Explainer, layer: str):
    def build():
        rest = _ablation_rest(explainer, layer)
        tokens = layer in explainer.token_layers
        depth = explainer.model.get_layer(layer).output.shape[-1]

        @tf.function(
            input_signature=[
                tf.TensorSpec([None] * (1 if tokens else 2) + [depth], tf.float32),
                tf.TensorSpec([None], tf.int32),
                tf.TensorSpec([], tf.int32),
            ],
            reduce_retracing=True,
        )
        def fn(acts, channels, target):
            # acts: one image's activations [h, w, C] (or tokens [T, D]); zero channel
            # channels[i] in copy i (of a token layer: in the patch tokens only, so the class
            # token keeps what it carries past the map's cells).
            c = tf.shape(acts)[-1]
            drop = tf.one_hot(channels, c, dtype=acts.dtype)  # [K, C]
            if tokens:
                ablated = acts[None] * (
                    1.0 - explainer.tokens.patch_mask()[None, :, None] * drop[:, None, :]
                )
            else:
                ablated = acts[None] * (1.0 - drop)[:, None, None, :]
            source, _ = explainer.score_from(rest(ablated, training=False))
            return gather_scores(source, tf.fill([tf.shape(channels)[0]], target))

        return fn

    return explainer.compiled(("ablation", layer), build)


@cam_pass("ablationcam")
def _ablationcam(explainer: Explainer, x, t, layers, options: CamOptions):
    acts, targets, scores, probs = _activations_fn(explainer, layers, grids=False)(x, t)
    grids = explainer.as_grids(layers, acts)
    chunk = options.chunk
    raws = []
    for name, a, g in zip(layers, acts, grids, strict=True):
        fn = _ablation_fn(explainer, name)
        a, g = a.numpy(), g.numpy()
        weighted = []
        for i in range(len(a)):
            c = a.shape[-1]
            ablated = np.concatenate(
                [
                    fn(
                        tf.constant(a[i]),
                        tf.range(s, min(s + chunk, c), dtype=tf.int32),
                        targets[i],
                    ).numpy()
                    for s in range(0, c, chunk)
                ]
            )
            w = (float(scores[i]) - ablated) / (abs(float(scores[i])) + _EPS)
            weighted.append(g[i] * w)
        raws.append(
            combine(tf.constant(np.stack(weighted).astype(np.float32)), options.eigen_smooth)
        )
    heat, const = _finish(explainer, raws)
    return raws, heat, const, targets, scores, probs


# --------------------------------------------------------------------------------------------
# Public API


def explain_cam(
    explainer: Explainer,
    images: np.ndarray,
    method: str = "gradcam",
    *,
    layers: str | Sequence[str] | None = None,
    targets=None,
    eigen_smooth: bool = False,
    aug_smooth: bool = False,
    max_n: int | None = None,
    chunk: int = 64,
) -> Explanation:
    """CAMs of a batch of images with any CAM of the method table (:data:`CAM_METHODS`).

    Args:
        explainer: The model's :class:`~tfcam.explain.engine.Explainer`.
        images: ``[N, H, W, 3]`` as the model takes them (raw 0–255 for tfcam models).
        method: One of :data:`CAM_METHODS`.
        layers: Layer name(s); default from the backbone registry.
        targets: None (predicted class), a class index or name, or one per image.
        eigen_smooth: First principal component instead of the channel sum.
        aug_smooth: Average over test-time augmentations.
        max_n: Score-CAM: use only the ``max_n`` channels of highest spatial std per image.
        chunk: Score-CAM and Ablation-CAM: masked or ablated copies per forward pass.

    Returns:
        An :class:`~tfcam.explain.engine.Explanation` with one heatmap set per layer.

    Raises:
        UserError: Unknown method, layer or class.
    """
    if method not in TABLE or TABLE[method].kind not in (GRADIENT_CAM, CAM):
        cams = [n for n, m in TABLE.items() if m.kind in (GRADIENT_CAM, CAM)]
        raise UserError(choices_message("CAM method", method, cams))
    layers = explainer.resolve_layers(layers)
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    target_ids = explainer.resolve_targets(targets, len(images))
    options = CamOptions(eigen_smooth, max_n, chunk)
    if aug_smooth:
        return _aug_smooth(explainer, images, method, layers, target_ids, options)
    parts = []
    for start, batch in explainer.batches(images):
        t = tf.constant(target_ids[start : start + len(batch)])
        x = tf.constant(batch)
        if TABLE[method].kind == GRADIENT_CAM:
            parts.append(_gradient_cam_fn(explainer, method, layers, eigen_smooth)(x, t))
        else:
            parts.append(PASSES[method](explainer, x, t, layers, options))
    return _collect(parts, layers, method)


def _collect(parts, layers, method) -> Explanation:
    def cat(i, j=None):
        if j is None:
            return np.concatenate([np.asarray(p[i]) for p in parts])
        return np.concatenate([np.asarray(p[i][j]) for p in parts])

    raws = {name: cat(0, j).astype(np.float32) for j, name in enumerate(layers)}
    heat = {name: cat(1, j).astype(np.float32) for j, name in enumerate(layers)}
    const = {name: cat(2, j).astype(bool) for j, name in enumerate(layers)}
    warn_constant(const, method)
    return Explanation(
        heat,
        raws,
        cat(3).astype(np.int32),
        cat(4).astype(np.float32),
        cat(5).astype(np.float32),
        const,
        method,
    )


_AUGMENTATIONS = [(flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)]


def _aug_smooth(explainer, images, method, layers, target_ids, options: CamOptions) -> Explanation:
    kw = {"eigen_smooth": options.eigen_smooth, "max_n": options.max_n, "chunk": options.chunk}
    # Fix the targets on the original images, so every augmentation explains the same class.
    first = None if (target_ids < 0).all() else target_ids
    base = explain_cam(explainer, images, method, layers=layers, targets=first, **kw)
    fixed = base.targets
    heat_sum = {k: np.zeros_like(v) for k, v in base.heatmaps.items()}
    raw_sum = {k: np.zeros_like(v) for k, v in base.raw.items()}
    for flip, factor in _AUGMENTATIONS:
        x = np.clip(images * factor, 0, 255)
        if flip:
            x = x[:, :, ::-1]
        e = explain_cam(explainer, x, method, layers=layers, targets=fixed, **kw)
        for k in heat_sum:
            heat_sum[k] += e.heatmaps[k][:, :, ::-1] if flip else e.heatmaps[k]
            raw_sum[k] += e.raw[k][:, :, ::-1] if flip else e.raw[k]
    n = len(_AUGMENTATIONS)
    heat, const = {}, {}
    for k, v in heat_sum.items():
        h, c = normalize_maps(tf.constant(v / n))
        heat[k], const[k] = h.numpy(), c.numpy()
    return Explanation(
        heat,
        {k: v / n for k, v in raw_sum.items()},
        fixed,
        base.scores,
        base.probabilities,
        const,
        method,
    )
