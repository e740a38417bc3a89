"""Effective receptive fields: how the gradient of a unit spreads over its analytic field.

Effective receptive field (:func:`effective_receptive_field`): Luo, Li, Urtasun & Zemel,
"Understanding the Effective Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016:
the gradient magnitude of a centre unit with respect to the input, averaged over images.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from tfcam.explain.receptive_field.analytic import Field, receptive_field
from tfcam.models.graph import flatten_model
from tfcam.viz import plain_text


@dataclass
class EffectiveField:
    """Luo et al. (2016)'s effective receptive field of a centre unit.

    Attributes:
        layer: Layer name.
        unit: ``(y, x)`` of the unit.
        map: ``[H, W]`` gradient magnitude averaged over images, normalised to sum 1.
        centre: Input coordinates of the unit's analytic centre.
        radius95: Smallest half-width ``r`` of a square around the centre holding ≥ 95% of the
            map's mass (pixels).
        theoretical: The analytic field ``(Ry, Rx)``.
        images: How many images were averaged.
    """

    layer: str
    unit: tuple[int, int]
    map: np.ndarray
    centre: tuple[float, float]
    radius95: float
    theoretical: tuple[int, int]
    images: int

    def as_dict(self) -> dict:
        return {
            "layer": self.layer,
            "unit": list(self.unit),
            "erf_radius95": self.radius95,
            "erf_size95": 2 * self.radius95 + 1,
            "theoretical_size": list(self.theoretical),
            "ratio": (2 * self.radius95 + 1) / max(self.theoretical),
            "images": self.images,
        }


def mass_radius(erf: np.ndarray, centre: tuple[float, float], fraction: float = 0.95) -> float:
    """Smallest half-width of a square around ``centre`` whose pixels hold ``fraction`` of the mass."""
    total = float(erf.sum())
    if total <= 0:
        return 0.0
    h, w = erf.shape
    dy = np.abs(np.arange(h) - centre[0])[:, None]
    dx = np.abs(np.arange(w) - centre[1])[None, :]
    cheb = np.maximum(dy, dx).ravel()
    order = np.argsort(cheb, kind="stable")
    cum = np.cumsum(erf.ravel()[order]) / total
    i = int(np.searchsorted(cum, fraction - 1e-9))
    r = cheb[order][min(i, len(order) - 1)]
    # Every pixel at the same distance belongs to the square: the radius is that distance.
    return float(r)


def effective_receptive_field(
    model: keras.Model,
    layer: str,
    images: np.ndarray | None = None,
    *,
    n_random: int = 8,
    seed: int = 0,
    unit: tuple[int, int] | None = None,
) -> EffectiveField:
    """Gradient magnitude of a centre unit with respect to the input, averaged over images.

    Args:
        model: A model taking images ``[N, H, W, 3]`` (trained or random).
        layer: A layer with a local field.
        images: Images to average over; default ``n_random`` uniform-noise images in [0, 255].
        n_random: How many noise images when ``images`` is None.
        seed: For the noise images.
        unit: ``(y, x)`` in the layer's output; default the centre.

    Returns:
        An :class:`EffectiveField`.

    References:
        Luo, Li, Urtasun & Zemel, "Understanding the Effective Receptive Field in Deep
        Convolutional Neural Networks", NeurIPS 2016.
    """
    import tensorflow as tf

    f = receptive_field(model, layer)
    f.require_local()
    hw = f.input_shape
    if images is None:
        rng = np.random.default_rng(seed)
        images = rng.uniform(0, 255, (n_random, *hw, 3)).astype("float32")
    images = np.asarray(images, np.float32)
    flat = flatten_model(model)
    sub = keras.Model(flat.inputs[0], flat.get_layer(layer).output)
    if unit is None:
        unit = (f.shape[0] // 2, f.shape[1] // 2)
    total = np.zeros(hw, np.float64)
    for start in range(0, len(images), 8):
        x = tf.constant(images[start : start + 8])
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = sub(x, training=False)
            target = tf.reduce_sum(out[:, unit[0], unit[1], :])
        g = tape.gradient(target, x)
        total += np.abs(np.asarray(g, np.float64)).sum(axis=(0, 3))
    mass = total.sum()
    erf = (total / mass if mass > 0 else total).astype(np.float32)
    centre = f.centre(*unit)
    return EffectiveField(layer, unit, erf, centre, mass_radius(erf, centre), f.size, len(images))


@plain_text
def effective_field_figure(
    model: keras.Model,
    layer: str,
    field: Field,
    images: np.ndarray | None = None,
    *,
    n_random: int = 8,
):
    """The effective receptive field of ``layer`` and its figure.

    The figure shows the square root of the map (so the tails stay visible), the analytic box of
    the unit and the square holding 95% of the gradient.

    Args:
        model: The model.
        layer: A layer with a local field.
        field: Its analytic field.
        images: As for :func:`effective_receptive_field`.
        n_random: Noise images when ``images`` is None.

    Returns:
        ``(EffectiveField, matplotlib Figure)``.
    """
    from tfcam.viz.plots import effective_field_plot

    field.require_local()
    erf = effective_receptive_field(model, layer, images, n_random=n_random)
    fig = effective_field_plot(
        np.sqrt(erf.map),
        erf.centre,
        erf.radius95,
        field.box(*erf.unit),
        title=f"{layer}: effective receptive field, {erf.images} image(s)",
        colorbar_label="√ share of gradient magnitude",
    )
    return erf, fig
