"""Tiny transformer classifiers in the layout of ``/work/notes/vit_contract.md`` (flat: ``image``,
``preprocess``, ``patch_embedding``, ``block_1`` … ``block_L``, ``encoder_norm``, ``head_token``
or ``head_pool``, ``predictions``), built from keras-hub's own layers, so the explainer's tests do
not wait for the builder's ``build_classifier(backbone="vit_…")``."""

from __future__ import annotations


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
    """A random ViT (``family="vit"``) or DINOv2 (``"dinov2"``) classifier, float32.

    Args:
        image_size: ``(H, W)`` or an int; each divisible by ``patch``.
        head: ``token`` (the class token) or ``pool`` (mean of the patch tokens).
        registers: DINOv2 register tokens.
        class_token: ViT only: without one, ``head`` must be ``pool``.
    """
    import keras
    from keras import layers, ops
    from keras_hub.src.models.dinov2.dinov2_layers import DINOV2Embedding, DINOV2Layer
    from keras_hub.src.models.vit.vit_layers import ViTEncoderBlock, ViTPatchingAndEmbedding

    from tfcam.models.layers import Preprocess

    keras.utils.set_random_seed(seed)
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    inputs = keras.Input((h, w, 3), name="image")
    x = Preprocess("tf" if family == "vit" else "torch", name="preprocess")(inputs)
    if family == "vit":
        x = ViTPatchingAndEmbedding(
            (h, w), (patch, patch), dim, use_class_token=class_token, name="patch_embedding"
        )(x)
        block = lambda i: ViTEncoderBlock(heads, dim, mlp, name=f"block_{i}")  # noqa: E731
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
        y = layers.Lambda(lambda t: t[:, 0], name="head_token")(x)
    else:
        prefix = (1 if class_token else 0) if family == "vit" else 1 + registers
        y = layers.Lambda(lambda t: ops.mean(t[:, prefix:], axis=1), name="head_pool")(x)
    out = layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(y)
    return keras.Model(inputs, out, name=f"tiny_{family}_classifier")
