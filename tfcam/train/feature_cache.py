"""Feature cache: with a frozen backbone, the backbone maps each view of a training image to the
same pooled features every epoch, so those features are computed once and only the head trains.

Augmentations with a finite set of outcomes (``hflip``, ``vflip``, ``rotate90``) keep the cache:
the features of every view of every image (the original, the mirrored one, …) are computed once,
and each epoch every image is shown as one of its views, drawn with the probability the online
augmentation would give it (:class:`ViewSampler`), so cached epochs follow the same distribution
as epochs through the full model, for the price of a few milliseconds each. Other augmentations
(random shifts, colour changes, …) have no finite set of views: phase 1 then runs through the full
model.

The head is a fresh copy of the classifier's layers after the pooling layer (``head_pool``,
``head_flatten``, or a transformer's ``head_token``: the class token after ``encoder_norm``),
trained on the cached vectors; after every epoch its weights are copied back
into the classifier, so checkpoints, the report and the TensorBoard panels see the full model.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping

import keras
import numpy as np

from tfcam.config import ExperimentConfig
from tfcam.models.build import HEAD_PREFIX, OUTPUT_NAME

log = logging.getLogger("tfcam")

#: One view: its name (``original``, ``hflip``, ``hflip+rot180``, …), the operations that make it
#: from the decoded image (in the order the augmentation applies them), and its probability.
View = tuple[str, tuple[str, ...], float]


def _outcomes(name: str, p: float) -> list[tuple[tuple[str, ...], float]]:
    """The outcomes of one augmentation with their probabilities (see :mod:`tfcam.data.augment`:
    ``rotate90`` turns by 90, 180 or 270 degrees, each equally likely)."""
    if name in ("hflip", "vflip"):
        return [((), 1.0 - p), ((name,), p)]
    if name == "rotate90":
        return [((), 1.0 - p)] + [((f"rot{90 * k}",), p / 3) for k in (1, 2, 3)]
    raise KeyError(name)


#: Augmentations whose outcomes are a finite set of views.
FINITE_AUGMENTATIONS = ("hflip", "vflip", "rotate90")


def views(augment: Mapping[str, float]) -> list[View]:
    """Every view the (finite) augmentations can produce, with its probability.

    Args:
        augment: ``data.augment`` (``{name: probability}``); only names in
            :data:`FINITE_AUGMENTATIONS` may have a probability above 0.

    Returns:
        The views of positive probability; ``[("original", (), 1.0)]`` without augmentation.

    Raises:
        KeyError: An augmentation without a finite set of views.
    """
    parts = [_outcomes(n, min(float(p), 1.0)) for n, p in augment.items() if p > 0]
    out = []
    for combo in itertools.product(*parts):
        ops = tuple(op for o, _ in combo for op in o)
        prob = math.prod(p for _, p in combo)
        if prob > 0:
            out.append(("+".join(ops) or "original", ops, prob))
    return out


def why_not_cacheable(cfg: ExperimentConfig) -> str | None:
    """Why phase 1 cannot train on cached features, or None when it can."""
    t, d = cfg.train, cfg.data
    if not t.feature_cache:
        return "train.feature_cache is off"
    if not t.freeze_backbone:
        return "the backbone trains (train.freeze_backbone is false)"
    if t.epochs <= 0:
        return "phase 1 has no epochs"
    if d.resize == "native":
        return "images keep their own size (data.resize=native), so features vary in size"
    other = [n for n, p in d.augment.items() if p > 0 and n not in FINITE_AUGMENTATIONS]
    if other:
        return (
            f"augmentation {', '.join(other)} has no finite set of views "
            f"(cached: {', '.join(FINITE_AUGMENTATIONS)})"
        )
    return None


def cacheable(cfg: ExperimentConfig) -> bool:
    """Phase 1 can train on cached features: frozen backbone, fixed size, finite augmentations."""
    return why_not_cacheable(cfg) is None


def head_layers(model: keras.Model) -> tuple[keras.layers.Layer, list[keras.layers.Layer]]:
    """The pooling layer that starts the head, and the layers after it up to the output."""
    names = [layer.name for layer in model.layers]
    starts = {f"{HEAD_PREFIX}{n}" for n in ("pool", "flatten", "token")}
    pools = [n for n in names if n in starts]
    if not pools or OUTPUT_NAME not in names:
        raise ValueError("not a tfcam classifier: no head_pool/flatten/token and predictions")
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


def _apply_ops(x, ops: tuple[str, ...]):
    """One view of a batch ``[B, H, W, 3]``: the same operations as :mod:`tfcam.data.augment`."""
    import tensorflow as tf

    for op in ops:
        if op == "hflip":
            x = tf.image.flip_left_right(x)
        elif op == "vflip":
            x = tf.image.flip_up_down(x)
        else:  # rot90, rot180, rot270: counter-clockwise quarter turns, as tf.image.rot90
            x = tf.image.rot90(x, int(op[3:]) // 90)
    return x


def extract(model: keras.Model, dataset, view_ops=None) -> tuple[np.ndarray, np.ndarray]:
    """Pooled features and labels for a whole (unshuffled, unaugmented) dataset.

    Args:
        model: The classifier.
        dataset: Batches of ``(images, targets)`` in a fixed order (``mode="eval"``).
        view_ops: The operations of each view (see :func:`views`); None for the images as they
            are.

    Returns:
        Features ``[N, D]`` (or ``[V, N, D]``, one row per view, with ``view_ops``) and the
        targets ``[N, …]``.
    """
    import tensorflow as tf

    features = feature_extractor(model)
    ops_list = [()] if view_ops is None else list(view_ops)

    @tf.function(reduce_retracing=True)
    def fwd(x):
        return tf.stack([features(_apply_ops(x, ops), training=False) for ops in ops_list])

    xs, ys = [], []
    for x, y in dataset:
        xs.append(np.asarray(fwd(x)))
        ys.append(np.asarray(y))
    feats = np.concatenate(xs, axis=1)
    return (feats[0] if view_ops is None else feats), np.concatenate(ys)


class ViewSampler(keras.utils.PyDataset):
    """Training batches from cached features: each epoch, every image in a new random order and
    shown as one of its views, drawn with that view's probability.

    Args:
        features: ``[V, N, D]``, the features of each view of each image.
        targets: ``[N, …]``.
        probs: ``[V]``, the probability of each view (summing to 1).
        batch_size: Images per batch (the last batch may be smaller).
        seed: Seeds the order and the views of every epoch.
    """

    def __init__(self, features, targets, probs, batch_size: int, seed: int = 0):
        super().__init__()
        self.features, self.targets = features, targets
        self.probs = np.asarray(probs, dtype=float) / np.sum(probs)
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self._draw()

    def _draw(self) -> None:
        n = self.features.shape[1]
        self.order = self.rng.permutation(n)
        self.view = self.rng.choice(len(self.probs), size=n, p=self.probs)

    def __len__(self) -> int:
        return max(1, math.ceil(self.features.shape[1] / self.batch_size))

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        return self.features[self.view[idx], idx], self.targets[idx]

    def on_epoch_end(self) -> None:
        self._draw()


class CopyHeadToModel(keras.callbacks.Callback):
    """After each epoch of head training, puts the head's weights into the full classifier."""

    def __init__(self, full: keras.Model):
        super().__init__()
        self.full = full

    def on_epoch_end(self, epoch, logs=None):
        copy_head_weights(self.model, self.full)


def fit_head(
    model: keras.Model,
    cfg: ExperimentConfig,
    train_eval,
    val_ds,
    *,
    compile_head: Callable[[keras.Model], None],
    first: int,
    n_epochs: int,
    verbose,
    callbacks: list,
    best,
    panels,
    what: str,
    lr: float,
) -> dict:
    """Phase 1 on cached features: the backbone runs once over every view of the data, then only
    the head trains; checkpoints and panels see the full model (its head is updated every epoch).

    Args:
        model: The classifier, its backbone frozen.
        cfg: The experiment (``data.augment`` gives the views, ``data.batch_size`` the batches).
        train_eval: The training images, unshuffled and unaugmented (``mode="eval"``).
        val_ds: The validation images.
        compile_head: Compiles the head with the phase's optimizer, loss and metrics.
        first: The phase's first epoch (0-based).
        n_epochs: The most epochs the phase may run.
        verbose: Keras's progress setting.
        callbacks: The phase's callbacks (they see the head as their model).
        best: The run's :class:`~tfcam.train.callbacks.BestCheckpoint` (saves the full model).
        panels: The run's :class:`~tfcam.train.callbacks.TensorBoardPanels`.
        what: How the backbone is set, for the log line.
        lr: The phase's learning rate, for the log line.

    Returns:
        What the cache held, for ``state.json``: ``feature_cache`` (true), ``views`` and
        ``seconds`` (the time to compute the features).
    """
    t0 = time.perf_counter()
    vs = views(cfg.data.augment)
    x_train, y_train = extract(model, train_eval, [ops for _, ops, _ in vs])
    x_val, y_val = extract(model, val_ds)
    seconds = time.perf_counter() - t0
    log.info(
        "Phase 1: up to %d epoch(s), %s, learning rate %g; head trained on cached features "
        "(%d images × %d view(s): %s; %d features each, computed in %.1f s)",
        n_epochs,
        what,
        lr,
        x_train.shape[1],
        len(vs),
        ", ".join(name for name, _, _ in vs),
        x_train.shape[-1],
        seconds,
    )
    head = head_model(model)
    compile_head(head)
    batches = ViewSampler(
        x_train, y_train, [p for _, _, p in vs], cfg.data.batch_size, seed=cfg.train.seed + first
    )
    best.target = panels.target = model
    panels.cached = (x_val, y_val)
    try:
        head.fit(
            batches,
            validation_data=(x_val, y_val),
            validation_batch_size=cfg.data.batch_size,
            initial_epoch=first,
            epochs=first + n_epochs,
            verbose=verbose,
            callbacks=[CopyHeadToModel(model), *callbacks],
        )
    finally:
        best.target = panels.target = panels.cached = None
    copy_head_weights(head, model)
    return {
        "feature_cache": True,
        "views": [name for name, _, _ in vs],
        "seconds": round(seconds, 1),
    }
