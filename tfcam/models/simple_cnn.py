"""A small VGG-style network for training from scratch on small images (the ``shapes`` default).

Four stages of 3×3 convolution, batch normalisation and ReLU, with 2×2 max-pooling between
stages; the last stage has two convolutions. Widths are ``width``, 2×, 4×, 8×. At 64 px input the
last stage is 8×8, which the CAM methods upsample. It costs about 25 M multiply-adds per 64 px
image at width 16, so it trains in seconds per epoch on a laptop CPU. Batch-norm momentum is 0.9
so that statistics settle within a short run.
"""

from __future__ import annotations

import keras
from keras import layers


def _conv(x, filters: int, name: str, relu_name: str):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.ReLU(name=relu_name)(x)


def simple_cnn(x: keras.KerasTensor, width: int = 16) -> keras.KerasTensor:
    """Applies the network to ``x``; returns the last stage's activation (``block4_relu``)."""
    for stage, mult in enumerate((1, 2, 4, 8), start=1):
        if stage > 1:
            x = layers.MaxPooling2D(2, name=f"block{stage - 1}_pool")(x)
        if stage == 4:
            x = _conv(x, width * mult, f"block{stage}_conv1", f"block{stage}_conv1_relu")
        x = _conv(
            x, width * mult, f"block{stage}_conv{2 if stage == 4 else 1}", f"block{stage}_relu"
        )
    return x
