"""Tiny transformer classifiers in the layout of ``/work/notes/vit_contract.md`` (flat: ``image``,
``preprocess``, ``patch_embedding``, ``block_1`` … ``block_L``, ``encoder_norm``, ``head_token``
or ``head_pool``, ``predictions``), built from keras-hub's own layers, so the explainer's tests do
not wait for the builder's ``build_classifier(backbone="vit_…")``."""

from __future__ import annotations

import functools


@functools.cache
def _savable():
    """Subclasses of keras-hub's ViT layers whose configs round-trip (keras-hub 0.32 writes
    ``key_dim``, ``num_patches`` and ``num_positions`` that its constructors refuse), and the two
    heads as layers, so a tiny ViT saves to ``model.keras`` and loads back like a run's model."""
    import keras
    from keras import ops
    from keras_hub.src.models.vit.vit_layers import ViTEncoderBlock, ViTPatchingAndEmbedding

    register = keras.saving.register_keras_serializable(package="tfcam_tests")

    @register
    class Embedding(ViTPatchingAndEmbedding):
        def get_config(self):
            cfg = super().get_config()
            for key in ("num_patches", "num_positions"):
                cfg.pop(key, None)
            return cfg

    @register
    class Block(ViTEncoderBlock):
        def get_config(self):
            cfg = super().get_config()
            cfg.pop("key_dim", None)
            return cfg

    @register
    class ClassToken(keras.layers.Layer):
        def call(self, x):
            return x[:, 0]

    @register
    class PoolPatches(keras.layers.Layer):
        def __init__(self, prefix=1, **kwargs):
            super().__init__(**kwargs)
            self.prefix = prefix

        def call(self, x):
            return ops.mean(x[:, self.prefix :], axis=1)

        def get_config(self):
            return {**super().get_config(), "prefix": self.prefix}

    return Embedding, Block, ClassToken, PoolPatches


def tiny_vit(
    *,
    family: str = "vit",
    image_size=(32, 32),
    patch: int = 8,
    blocks: int = 2,
    dim: int = 32,
    heads: int = 2,
    mlp: int = 64,
    num_classes: int = 3,
    head: str = "token",
    registers: int = 0,
    class_token: bool = True,
    seed: int = 0,
):
    """A random ViT (``family="vit"``, savable to ``.keras``) or DINOv2 (``"dinov2"``)
    classifier, float32.

    Args:
        image_size: ``(H, W)`` or an int; each divisible by ``patch``.
        head: ``token`` (the class token) or ``pool`` (mean of the patch tokens).
        registers: DINOv2 register tokens.
        class_token: ViT only: without one, ``head`` must be ``pool``.
    """
    import keras
    from keras import layers
    from keras_hub.src.models.dinov2.dinov2_layers import DINOV2Embedding, DINOV2Layer

    from tfcam.models.layers import Preprocess

    keras.utils.set_random_seed(seed)
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    inputs = keras.Input((h, w, 3), name="image")
    x = Preprocess("tf" if family == "vit" else "torch", name="preprocess")(inputs)
    Embedding, Block, ClassToken, PoolPatches = _savable()
    if family == "vit":
        x = Embedding(
            (h, w), (patch, patch), dim, use_class_token=class_token, name="patch_embedding"
        )(x)
        block = lambda i: Block(heads, dim, mlp, name=f"block_{i}")  # noqa: E731
    else:
        x = DINOV2Embedding(
            dim,
            patch,
            (h, w),
            num_register_tokens=registers,
            position_embedding_shape=(h, w),
            name="patch_embedding",
        )(x)
        block = lambda i: DINOV2Layer(dim, heads, mlp, name=f"block_{i}")  # noqa: E731
    for i in range(1, blocks + 1):
        x = block(i)(x)
    x = layers.LayerNormalization(epsilon=1e-6, name="encoder_norm")(x)
    if head == "token":
        y = ClassToken(name="head_token")(x)
    else:
        prefix = (1 if class_token else 0) if family == "vit" else 1 + registers
        y = PoolPatches(prefix, name="head_pool")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(y)
    return keras.Model(inputs, out, name=f"tiny_{family}_classifier")
