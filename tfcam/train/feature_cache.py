"""Feature cache: with a frozen backbone and no augmentation, the backbone sees every training
image the same way each epoch, so its pooled features are computed once and only the head trains.

The head is a fresh copy of the classifier's layers after the pooling layer (``head_pool`` or
``head_flatten``), trained on the cached vectors; after every epoch its weights are copied back
into the classifier, so checkpoints, the report and the TensorBoard panels see the full model.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from tfcam.config import ExperimentConfig
from tfcam.models.build import HEAD_PREFIX, OUTPUT_NAME

log = logging.getLogger("tfcam")


def cacheable(cfg: ExperimentConfig) -> bool:
    """Phase 1 can train on cached features: frozen backbone, no augmentation, cache allowed."""
    t = cfg.train
    return (
        t.feature_cache
        and t.freeze_backbone
        and t.epochs > 0
        and not any(p > 0 for p in cfg.data.augment.values())
        and cfg.data.resize != "native"  # features of varying size: nothing fixed to cache
    )


def head_layers(model: keras.Model) -> tuple[keras.layers.Layer, list[keras.layers.Layer]]:
    """The pooling layer that starts the head, and the layers after it up to the output."""
    names = [layer.name for layer in model.layers]
    pools = [n for n in names if n in (f"{HEAD_PREFIX}pool", f"{HEAD_PREFIX}flatten")]
    if not pools or OUTPUT_NAME not in names:
        raise ValueError("not a tfcam classifier: no head_pool/head_flatten and predictions")
    start = names.index(pools[0])
    return model.layers[start], model.layers[start + 1 : names.index(OUTPUT_NAME) + 1]


def feature_extractor(model: keras.Model) -> keras.Model:
    """``image → pooled backbone features``, for inference only: a copy of the classifier up to
    the pooling layer with batch normalisation folded into the convolutions (same values up to
    float rounding, a cheaper pass)."""
    from tfcam.models.graph import fold_batchnorm

    pool, _ = head_layers(model)
    return fold_batchnorm(model, [pool.name])


def head_model(model: keras.Model) -> keras.Model:
    """A separate copy of the head (fresh layers, the classifier's current weights)."""
    pool, rest = head_layers(model)
    inp = keras.Input(shape=tuple(pool.output.shape[1:]), name="features")
    x = inp
    for layer in rest:
        x = type(layer).from_config(layer.get_config())(x)
    head = keras.Model(inp, x, name="tfcam_head")
    copy_head_weights(model, head)
    return head


def copy_head_weights(source: keras.Model, target: keras.Model) -> None:
    """Copies the weights of the head layers, matched by name, from one model to the other."""
    have = {layer.name for layer in source.layers if layer.weights}
    for layer in target.layers:
        if layer.weights and layer.name in have:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def extract(model: keras.Model, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and labels for a whole (unshuffled, unaugmented) dataset."""
    import tensorflow as tf

    features = feature_extractor(model)

    @tf.function(reduce_retracing=True)
    def fwd(x):
        return features(x, training=False)

    xs, ys = [], []
    for x, y in dataset:
        xs.append(np.asarray(fwd(x)))
        ys.append(np.asarray(y))
    return np.concatenate(xs), np.concatenate(ys)


class CopyHeadToModel(keras.callbacks.Callback):
    """After each epoch of head training, puts the head's weights into the full classifier."""

    def __init__(self, full: keras.Model):
        super().__init__()
        self.full = full

    def on_epoch_end(self, epoch, logs=None):
        copy_head_weights(self.model, self.full)
