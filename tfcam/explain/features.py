"""Feature maps: the activations of any layers for a batch, and which channels to show.

Zeiler & Fergus (ECCV 2014) popularised looking at intermediate feature maps; the seed use is the
second convolution of VGG19 (``block1_conv2``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tfcam.errors import UserError
from tfcam.explain.engine import Explainer, explainer_for

CHANNEL_ORDERS = ("first", "most_active")


def feature_maps(
    explainer: Explainer, images: np.ndarray, layers: str | Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Activations ``{layer: float32 [N, h, w, C]}`` (one compiled forward pass per batch; a
    transformer's token layers as patch grids ``[N, gh, gw, D]``)."""
    layers = explainer.resolve_layers(layers)

    def make_body():
        graph = explainer.graph(layers)
        return lambda x: explainer.as_grids(layers, graph(x, training=False)[:-1])

    fn = explainer.compiled_batch(("features", layers), make_body, targets=False)
    parts = [fn(tf.constant(b)) for _, b in explainer.batches(images)]
    return {
        name: np.concatenate([np.asarray(p[i]) for p in parts]) for i, name in enumerate(layers)
    }


def layer_activations(
    model: keras.Model,
    layer: str,
    images: np.ndarray,
    *,
    input_size: Sequence[int] | None = None,
) -> np.ndarray:
    """``float32 [N, h, w, C]`` activations of one layer of any model (compiled, cached).

    Runs :func:`feature_maps` on the model's cached :class:`Explainer`
    (:func:`~tfcam.explain.engine.explainer_for`), so repeated calls reuse one compiled function.

    Args:
        model: A single-input image model; nested sub-models are flattened, so inner layers count.
        layer: A layer with a spatial (4-D) output.
        images: ``[N, H, W, C]`` as the model takes them.
        input_size: ``(H, W)`` of the images, needed only when the model takes any size.

    Raises:
        UserError: An unknown layer (the message lists nearby names) or one without a spatial
            output.
    """
    kwargs = {} if input_size is None else {"input_size": tuple(int(v) for v in input_size)}
    with warnings.catch_warnings():
        # Activations do not need the logits: a model without a classifier head is fine here.
        warnings.filterwarnings("ignore", message="tfcam: cannot find logits")
        explainer = explainer_for(model, **kwargs)
    return feature_maps(explainer, images, layer)[layer]


def select_channels(activations: np.ndarray, count: int, order: str = "first") -> np.ndarray:
    """Channel indices to display for one image's activations ``[h, w, C]``.

    Args:
        activations: One image's feature maps.
        count: How many channels (at most C).
        order: ``first`` (0, 1, 2, …) or ``most_active`` (highest mean activation first).
    """
    c = activations.shape[-1]
    count = min(count, c)
    if order == "first":
        return np.arange(count)
    if order == "most_active":
        return np.argsort(-activations.reshape(-1, c).mean(axis=0), kind="stable")[:count]
    raise UserError(f"Unknown channel order '{order}'. Choose from: {', '.join(CHANNEL_ORDERS)}")
