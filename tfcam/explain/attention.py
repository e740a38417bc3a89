"""Attention methods for vision transformers, read from the attention of the model itself.

Each encoder block's forward is recomputed from the block's own sublayers, with its multi-head
attention asked for its probabilities (``return_attention_scores=True``), in one compiled
function with the rest of the network and the logits: the attention read is the attention the
prediction was made with (a test checks that the recomputed block outputs equal the model's).
One small function per block type (:data:`BLOCK_FORWARDS`) follows that type's ``call``; one small
function per method (:data:`RULES`) turns a block's attention ``A`` ``[N, heads, T, T]`` (and for
the gradient method ``∂score/∂A``) into the block's matrix ``M_l`` ``[N, T, T]``. The relevance of
the patches is then one row of ``M_L ··· M_1``: the class token's row over the patch tokens. For a
head pooling the patch tokens (and a model without a class token), the mean of the patch tokens'
rows: the pooled token's relevance, since the head reads their mean. Only that row is formed (a vector
times each matrix, from the last block down), never the whole product.

* **Attention rollout** — Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
* **Gradient-weighted attention** — Chefer, Gur & Wolf, "Generic Attention-model Explainability
  for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021.

Methods that need attention are refused on a model without known attention blocks
(:func:`attention_path`), before any image is read.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
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
    predicted_classes,
    probabilities_from_logits,
    upsample,
    warn_constant,
)
from tfcam.explain.methods import ATTENTION, TABLE, registrar
from tfcam.explain.tokens import reads_class_token

#: ``{block class name: fn(block, x) → (output, attention [N, heads, T, T])}``.
BLOCK_FORWARDS: dict[str, Callable] = {}
block_forward = registrar(BLOCK_FORWARDS)
#: ``{method: fn(attention, gradient) → the block's matrix [N, T, T]}``.
RULES: dict[str, Callable] = {}
rule = registrar(RULES)
#: Methods whose rule reads ``∂score/∂A``.
NEEDS_GRADIENTS = {"gradient_attention"}


# --------------------------------------------------------------------------------------------
# Block forwards: each follows its block's ``call``, asking the attention for its probabilities


@block_forward("ViTEncoderBlock")
def _vit_block(block, x):
    """keras-hub ``ViTEncoderBlock``: ln_1 → mha → dropout → + x → ln_2 → mlp → +."""
    h = block.layer_norm_1(x)
    h, attention = block.mha(h, h, return_attention_scores=True, training=False)
    x = block.dropout(h, training=False) + x
    return x + block.mlp(block.layer_norm_2(x)), attention


@block_forward("DINOV2Layer")
def _dinov2_layer(block, x):
    """keras-hub ``DINOV2Layer``: norm1 → attention → layer_scale1 → drop_path → + x → norm2 → mlp
    → layer_scale2 → drop_path → +."""
    h = block.norm1(x, training=False)
    mha = block.attention
    h, attention = mha.attention(
        query=h, value=h, key=h, return_attention_scores=True, training=False
    )
    h = block.layer_scale1(mha.dropout(h, training=False))
    x = block.drop_path(h, training=False) + x
    h = block.layer_scale2(block.mlp(block.norm2(x, training=False), training=False))
    return block.drop_path(h, training=False) + x, attention


# --------------------------------------------------------------------------------------------
# The methods: one block matrix each


@rule("attention_rollout")
def attention_rollout(attention, gradient):
    """Attention rollout — Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL
    2020: heads averaged, the identity added for the residual connection, rows normalised:
    ``M = rownorm(E_h[A] + I)``; relevance is the product of the blocks' ``M``."""
    mean = tf.reduce_mean(attention, axis=1)
    m = mean + tf.eye(tf.shape(mean)[-1], dtype=mean.dtype)
    return m / tf.reduce_sum(m, axis=-1, keepdims=True)


@rule("gradient_attention")
def gradient_attention(attention, gradient):
    """Gradient-weighted attention — Chefer, Gur & Wolf, "Generic Attention-model Explainability
    for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021:
    ``Ā = E_h[(∇A ⊙ A)⁺]`` and ``R ← R + Ā·R`` from ``R = I``, so ``M = I + Ā``."""
    mean = tf.reduce_mean(tf.nn.relu(gradient * attention), axis=1)
    return mean + tf.eye(tf.shape(mean)[-1], dtype=mean.dtype)


# --------------------------------------------------------------------------------------------
# The path through the blocks


@dataclass
class AttentionPath:
    """The model cut around its attention blocks: ``pre`` (input → first block's input), the
    blocks, and ``post`` (last block's output → the head tensor)."""

    blocks: list
    pre: keras.Model
    post: keras.Model
    #: The head reads the class token (else it pools the patch tokens).
    class_row: bool = True

    def forward(self, images: tf.Tensor):
        """``(block outputs, attentions, head values)``, recomputed block by block."""
        x = self.pre(images, training=False)
        outputs, attentions = [], []
        for block in self.blocks:
            x, a = BLOCK_FORWARDS[block_type(block)](block, x)
            outputs.append(x)
            attentions.append(a)
        return outputs, attentions, self.post(x, training=False)


def block_type(layer) -> str | None:
    """The name under which :data:`BLOCK_FORWARDS` knows the layer's class or a base class (a
    subclass of keras-hub's block, e.g. one that fixes its config, is the same block)."""
    return next((c.__name__ for c in type(layer).__mro__ if c.__name__ in BLOCK_FORWARDS), None)


def attention_blocks(model: keras.Model) -> list:
    """The model's own layers with a known block forward (:data:`BLOCK_FORWARDS`), in order."""
    return [la for la in model.layers if block_type(la)]


def attention_path(explainer: Explainer, method: str = "attention_rollout") -> AttentionPath:
    """The explainer's :class:`AttentionPath`, built once.

    Raises:
        UserError: The model has no attention blocks tfcam can read (a CNN), or they are not one
            chain of blocks from the patch tokens to the head.
    """
    model = explainer.model
    blocks = attention_blocks(model)
    if not blocks or explainer.tokens is None:
        raise UserError(
            f"Method '{method}' reads the attention of transformer blocks, and model "
            f"'{model.name}' has none (known blocks: {', '.join(BLOCK_FORWARDS)}); use a CAM "
            "method such as gradcam"
        )
    for before, block in itertools.pairwise(blocks):
        if block.input is not before.output:
            raise UserError(
                f"Method '{method}' needs the transformer blocks to follow each other; in model "
                f"'{model.name}', '{block.name}' does not take the output of '{before.name}'"
            )

    def factory(m):
        pre = keras.Model(m.inputs[0], blocks[0].input, name="tfcam_tokens")
        post = keras.Model(blocks[-1].output, explainer.head.tensor, name="tfcam_after_blocks")
        post.input_spec = None  # DINOv2's static lengths assume square inputs
        return AttentionPath(blocks, pre, post, reads_class_token(m, explainer.tokens))

    return explainer.copy_with("attention_path", factory)


def _relevant_row(matrices, explainer: Explainer, class_row: bool) -> tf.Tensor:
    """The class token's row of ``M_L ··· M_1`` over the patches (for a head that pools the patch
    tokens: the mean of their rows), as ``[N, gh, gw]``."""
    grid = explainer.tokens
    n, t = tf.shape(matrices[0])[0], tf.shape(matrices[0])[-1]
    if class_row:
        start = tf.one_hot(tf.zeros([n], tf.int32), t, dtype=matrices[0].dtype)
    else:
        start = tf.tile(grid.patch_mask()[None] / float(grid.rows * grid.cols), [n, 1])
    row = start[:, None, :]  # [N, 1, T]
    for m in reversed(matrices):
        row = tf.matmul(row, m)
    return tf.reshape(row[:, 0, grid.prefix :], [-1, grid.rows, grid.cols])


def _attention_fn(explainer: Explainer, method: str):
    path = attention_path(explainer, method)
    needs_gradients = method in NEEDS_GRADIENTS

    def make_body():
        def body(images, targets):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                if needs_gradients:
                    tape.watch(images)
                _, attentions, head = path.forward(images)
                source, logits = explainer.score_from(head)
                targets = tf.where(targets < 0, predicted_classes(logits), targets)
                scores = gather_scores(source, targets)
            grads = tape.gradient(scores, attentions) if needs_gradients else attentions
            matrices = [RULES[method](a, g) for a, g in zip(attentions, grads, strict=True)]
            raw = _relevant_row(matrices, explainer, path.class_row)
            heat, const = normalize_maps(
                upsample(raw, explainer.input_size, explainer.align_corners)
            )
            return raw, heat, const, targets, scores, probabilities_from_logits(logits)

        return body

    return explainer.compiled_batch(("attention", method), make_body)


def check_applies(explainer: Explainer, method: str) -> None:
    """Raises the one-line :class:`UserError` of a method that cannot apply to the model (an
    attention method on a model without attention blocks); other methods pass."""
    if method in TABLE and TABLE[method].kind == ATTENTION:
        attention_path(explainer, method)


def explain_attention(
    explainer: Explainer, images: np.ndarray, method: str = "attention_rollout", *, targets=None
) -> Explanation:
    """Attention maps of a batch with a method of the table's ``attention`` kind.

    Args:
        explainer: The model's :class:`~tfcam.explain.engine.Explainer` (a transformer).
        images: ``[N, H, W, 3]`` as the model takes them.
        method: ``attention_rollout`` or ``gradient_attention``.
        targets: None (predicted class), a class index or name, or one per image. Rollout does
            not depend on it (the target's score is still reported).

    Returns:
        An :class:`~tfcam.explain.engine.Explanation` keyed by the method name: ``heatmaps``
        ``[N, H, W]`` in [0, 1] and ``raw`` patch relevance ``[N, gh, gw]``.

    Raises:
        UserError: Not an attention method, a model without attention blocks, an unknown class.
    """
    if method not in TABLE or TABLE[method].kind != ATTENTION:
        names = [n for n, m in TABLE.items() if m.kind == ATTENTION]
        raise UserError(choices_message("attention method", method, names))
    fn = _attention_fn(explainer, method)
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[None]
    ids = explainer.resolve_targets(targets, len(images))
    parts = [
        [np.asarray(v) for v in fn(tf.constant(b), tf.constant(ids[s : s + len(b)]))]
        for s, b in explainer.batches(images)
    ]
    raw, heat, const, t, scores, probs = (np.concatenate(p) for p in zip(*parts, strict=True))
    warn_constant({method: const}, method)
    return Explanation(
        {method: heat.astype(np.float32)},
        {method: raw.astype(np.float32)},
        t.astype(np.int32),
        scores.astype(np.float32),
        probs.astype(np.float32),
        {method: const.astype(bool)},
        method,
    )
