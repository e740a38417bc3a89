"""ResNet-18 for 32×32 inputs, as in the pytorch-cifar repository (kuangliu/pytorch-cifar).

The network: a 3×3 stem of 64 channels at stride 1 (no max-pool), four stages of two basic
blocks with 64, 128, 256 and 512 channels (stride 2 at the start of stages 2–4, with a 1×1
convolution and batch normalisation on the shortcut), then global average pooling (the original's
4×4 average pool at 32 px) and a dense layer. With 10 classes it has 11,173,962 trainable
parameters, as the PyTorch model does. Stride-2 3×3 convolutions pad one pixel on every side, as
PyTorch does (Keras "same" would pad only the bottom and right).

References:
    He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
"""

from __future__ import annotations

import keras
from keras import layers


def _conv_bn(x, filters: int, stride: int, name: str):
    if stride == 1:
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
        x = layers.Conv2D(
            filters, 3, strides=stride, padding="valid", use_bias=False, name=f"{name}_conv"
        )(x)
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)


def _basic_block(x, filters: int, stride: int, name: str):
    shortcut = x
    y = _conv_bn(x, filters, stride, f"{name}_1")
    y = layers.ReLU(name=f"{name}_1_relu")(y)
    y = _conv_bn(y, filters, 1, f"{name}_2")
    if stride != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters, 1, strides=stride, use_bias=False, name=f"{name}_short_conv"
        )(x)
        shortcut = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_short_bn")(
            shortcut
        )
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet18_cifar(x: keras.KerasTensor) -> keras.KerasTensor:
    """Applies the ResNet-18 feature extractor to ``x``; returns the last stage's output.

    Layer names: ``stem_conv``, ``stem_bn``, ``stem_relu``, then ``layer{1..4}_block{1,2}_*`` with
    each block's output named ``layer{i}_block{j}_out`` (the default CAM layer is
    ``layer4_block2_out``).
    """
    x = layers.Conv2D(64, 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, (filters, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        x = _basic_block(x, filters, stride, f"layer{i}_block1")
        x = _basic_block(x, filters, 1, f"layer{i}_block2")
    return x
