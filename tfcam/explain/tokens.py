"""Token layers of vision transformers, seen as patch grids, and their default explanation layer.

A transformer layer outputs tokens ``[N, T, D]``: ``prefix`` tokens first (the class token, then
register tokens for DINOv2 with registers), then the ``gh·gw`` patch tokens in row-major order,
``gh = H / patch`` and ``gw = W / patch`` (non-square inputs too; after a convolutional stem
the patch counts the stem's cells: ``gh = H / (stride · patch)``). :class:`TokenGrid` drops the
prefix and reshapes the rest to ``[N, gh, gw, D]``, so every CAM of the engine sees a feature
map, as pytorch-grad-cam's ``reshape_transform`` does by hand. The reshape runs inside the
compiled functions: activations and their gradients are both taken at the token tensor (which
is on the path to the prediction) and reshaped afterwards.

The layout is read from the model alone: the patch-embedding layer's ``patch_size``,
``use_class_token`` and ``num_register_tokens`` attributes (keras-hub's
``ViTPatchingAndEmbedding`` and ``DINOV2Embedding``), or, for another embedding, inferred from
the first token layer's length and the input size (the smallest prefix that leaves a patch grid
of the image's aspect).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import keras
import tensorflow as tf

from tfcam.models.graph import outputs_of

#: The most prefix tokens (class + registers) the inference from lengths tries.
MAX_PREFIX = 8


@dataclass(frozen=True)
class TokenGrid:
    """Where the patch tokens are in a transformer's token sequence.

    Attributes:
        prefix: Tokens before the patches (class token and register tokens).
        rows: ``gh = H / patch height``.
        cols: ``gw = W / patch width``.
        class_token: Whether token 0 is a class token.
        embedding: Name of the layer that makes the tokens.
    """

    prefix: int
    rows: int
    cols: int
    class_token: bool
    embedding: str

    @property
    def length(self) -> int:
        return self.prefix + self.rows * self.cols

    def to_grid(self, tokens: tf.Tensor) -> tf.Tensor:
        """``[N, T, D]`` tokens → ``[N, gh, gw, D]`` patch grid (class and register tokens dropped)."""
        depth = tokens.shape[-1] if tokens.shape[-1] is not None else tf.shape(tokens)[-1]
        return tf.reshape(tokens[:, self.prefix :], [-1, self.rows, self.cols, depth])

    def patch_mask(self) -> tf.Tensor:
        """``float32 [T]``: 0 for the prefix tokens, 1 for the patch tokens."""
        return tf.concat([tf.zeros([self.prefix]), tf.ones([self.rows * self.cols])], axis=0)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _stem_stride(model: keras.Model, layer) -> tuple[int, int]:
    """How many input pixels one cell of the embedding's input spans: 1 when the embedding reads
    the image, the product of its strides after a convolutional stem (``model.options.stem``).
    Read from static shapes; 1 when either is unknown (variable-size inputs have no stem)."""
    try:
        inner, outer = layer.input.shape, model.inputs[0].shape
    except (AttributeError, ValueError, IndexError):
        return 1, 1
    if len(inner) != 4 or None in (inner[1], inner[2], outer[1], outer[2]):
        return 1, 1
    return max(outer[1] // inner[1], 1), max(outer[2] // inner[2], 1)


def _is_tokens(layer) -> bool:
    outs = outputs_of(layer)
    return len(outs) == 1 and len(outs[0].shape) == 3 and outs[0].shape[-1] is not None


def token_grid(model: keras.Model, input_size: tuple[int, int]) -> TokenGrid | None:
    """The token layout of a transformer classifier, or None for a model without token layers."""
    h, w = input_size
    layers = [la for la in model.layers if not isinstance(la, keras.layers.InputLayer)]
    for layer in layers:
        if _is_tokens(layer) and hasattr(layer, "patch_size"):
            ph, pw = _pair(layer.patch_size)
            has_class = bool(getattr(layer, "use_class_token", True))
            prefix = int(has_class) + int(getattr(layer, "num_register_tokens", 0) or 0)
            sh, sw = _stem_stride(model, layer)
            return TokenGrid(prefix, h // (sh * ph), w // (sw * pw), has_class, layer.name)
    first = next((la for la in layers if _is_tokens(la)), None)
    if first is None or first.output.shape[1] is None:
        return None
    length = int(first.output.shape[1])
    for prefix in range(MAX_PREFIX + 1):
        for rows in range(1, h + 1):
            n = length - prefix
            if n > 0 and n % rows == 0 and h % rows == 0:
                cols = n // rows
                if w % cols == 0 and h // rows == w // cols:
                    return TokenGrid(prefix, rows, cols, prefix > 0, first.name)
    return None


def token_layers(model: keras.Model, grid: TokenGrid | None) -> list[str]:
    """Layers with a token output ``[N, T, D]`` that holds the whole patch grid, in model order
    (from the embedding on; a static length that disagrees with the grid is kept only when it is
    the embedding's own, as DINOv2's static shapes assume a square input)."""
    if grid is None:
        return []
    names, started = [], False
    embedding_length = model.get_layer(grid.embedding).output.shape[1]
    for layer in model.layers:
        started = started or layer.name == grid.embedding
        if started and _is_tokens(layer):
            length = layer.output.shape[1]
            if length in (None, grid.length, embedding_length):
                names.append(layer.name)
    return names


def _block_number(name: str) -> int | None:
    m = re.fullmatch(r"block_(\d+)", name)
    return int(m[1]) if m else None


def reads_class_token(model: keras.Model, grid: TokenGrid) -> bool:
    """Whether the head reads the class token (tfcam's ``head_token``) rather than pooling the
    patch tokens (``head_pool``); a model with a class token and neither layer counts as reading it."""
    names = {la.name for la in model.layers}
    if "head_pool" in names:
        return False
    return "head_token" in names or grid.class_token


def transformer_default(model: keras.Model, grid: TokenGrid, tokens: list[str]) -> str:
    """The default CAM layer of a transformer: the input of the last block when the head reads the
    class token, else the last block's output.

    With a class-token head only token 0 of the last block's output reaches the prediction, so
    the patch tokens there have zero gradient and every CAM would be blank. The last place where
    patch tokens still matter is the input of the last block, which its attention mixes into the
    class token: pytorch-grad-cam's recommendation for ViT, ``model.blocks[-1].norm1``, is the
    layer norm of that same tensor. A pooled head reads every patch token of the last block, so
    its output is the layer closest to the prediction, as the last feature map is for a CNN.
    """
    blocks = sorted((n for n in tokens if _block_number(n) is not None), key=_block_number)
    last = blocks[-1] if blocks else tokens[-1]
    if not reads_class_token(model, grid):
        return last
    before = [n for n in tokens[: tokens.index(last)]]
    inbound = model.get_layer(last).input
    for name in reversed(before):
        if model.get_layer(name).output is inbound:
            return name
    return before[-1] if before else last


def unreachable_patches(model: keras.Model, grid: TokenGrid, tokens: list[str]) -> set[str]:
    """Token layers whose patch tokens cannot reach a class-token head: those after the input of
    the last block (the last block's output, the final norm)."""
    if not tokens or not reads_class_token(model, grid):
        return set()
    default = transformer_default(model, grid, tokens)
    return set(tokens[tokens.index(default) + 1 :])
