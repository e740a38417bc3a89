"""Empirical check of analytic receptive fields against the support of an input gradient.

Empirical check (:func:`verify`): the input gradient of a unit near the centre of a layer, on a copy
of the model in which no path can cancel (positive weights, linear activations, average instead of
max pooling, globally pooled branches cut, and gradients turned into 0/1 support masks at every
layer so deep networks do not underflow), must lie inside the analytic box and reach its edges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from tfcam.errors import UserError
from tfcam.explain.receptive_field.analytic import (
    _IDENTITY_CLASSES,
    _MERGE_CLASSES,
    LOCAL,
    Field,
    _class_chain,
    _leaves,
    layer_choice_error,
    receptive_fields,
)
from tfcam.models.graph import walk
from tfcam.progress import task


@dataclass
class Verification:
    """The outcome of :func:`verify` for one layer.

    Attributes:
        layer: Layer name.
        unit: ``(y, x)`` of the unit whose input gradient was taken.
        analytic: The analytic box, clipped, ``(top, left, bottom, right)`` inclusive.
        support: The bounding box of the gradient's support (``None`` when empty).
        inside: Every pixel with a gradient lies inside the analytic box.
        reaches: The support touches all four edges of the analytic box.
    """

    layer: str
    unit: tuple[int, int]
    analytic: tuple[int, int, int, int]
    support: tuple[int, int, int, int] | None
    inside: bool
    reaches: bool
    mask: np.ndarray = field(repr=False, default=None)

    @property
    def ok(self) -> bool:
        return self.inside and self.reaches

    def as_dict(self) -> dict:
        return {
            "layer": self.layer,
            "unit": list(self.unit),
            "analytic_box": list(self.analytic),
            "support_box": list(self.support) if self.support else None,
            "inside": self.inside,
            "reaches_edges": self.reaches,
            "ok": self.ok,
        }


class _Probe:
    """Runs a model's graph eagerly with every layer replaced by a geometry probe.

    Kernels are positive constants, biases zero, activations and normalisations the identity, max
    pooling becomes average pooling, merges that select or multiply become sums, and globally
    pooled branches get no gradient; after every layer the gradient is replaced by its support
    (1 where non-zero), so it neither cancels nor underflows through a hundred layers.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.layers: dict[int, Callable] = {}

    def probe_for(self, op) -> Callable:
        key = id(op)
        if key not in self.layers:
            self.layers[key] = self._make(op)
        return self.layers[key]

    def _make(self, op) -> Callable:
        import tensorflow as tf

        cls, chain = type(op).__name__, _class_chain(op)

        def first(args):
            return _leaves(args, tf.Tensor)[0]

        if cls in _IDENTITY_CLASSES or getattr(op, "receptive_field_identity", False):
            return lambda *a, **k: first(a)
        if cls in _MERGE_CLASSES or "Merge" in chain:
            if cls == "Concatenate":
                return lambda *a, **k: op(*a)
            return lambda *a, **k: _sum_broadcast(_leaves(a, tf.Tensor))
        if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
            keep = bool(getattr(op, "keepdims", False))
            return lambda *a, **k: tf.stop_gradient(
                tf.reduce_mean(first(a), axis=(1, 2), keepdims=keep)
            )
        if cls == "MaxPooling2D":
            cfg = op.get_config()
            avg = keras.layers.AveragePooling2D(
                pool_size=cfg["pool_size"],
                strides=cfg["strides"],
                padding=cfg["padding"],
                data_format=cfg.get("data_format"),
            )
            return lambda *a, **k: avg(first(a))
        if any(
            c in chain for c in ("BaseConv", "BaseDepthwiseConv", "BaseSeparableConv")
        ) or cls in ("Dense", "EinsumDense"):
            cfg = op.get_config()
            cfg["activation"] = "linear"
            cfg.pop("name", None)
            for key in list(cfg):
                if key.endswith(("_regularizer", "_constraint")):
                    cfg[key] = None
            layer = type(op).from_config(cfg)
            state = {"built": False}

            def conv(*a, **k):
                x = first(a)
                if not state["built"]:
                    layer.build(x.shape)
                    for w in layer.weights:
                        shape = tuple(w.shape)
                        if "bias" in w.path or len(shape) < 2:
                            w.assign(np.zeros(shape, "float32"))
                            continue
                        fan_in = (
                            shape[0] * shape[1]
                            if "depthwise" in w.path
                            else int(np.prod(shape[:-1]))
                        )
                        w.assign(np.full(shape, 1.0 / fan_in, "float32"))
                    state["built"] = True
                return layer(x)

            return conv
        return lambda *a, **k: op(*a, **{n: v for n, v in k.items() if n != "training"})

    def gradient_support(
        self,
        layer: str,
        hw: tuple[int, int],
        unit: tuple[int, int] | None = None,
        grid: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """0/1 map ``[H, W]`` of the input pixels that can affect unit ``unit`` of ``layer``
        (a transformer's token output ``[N, T, D]`` is read as its last ``grid`` tokens, the
        patch tokens after the class and register tokens)."""
        import tensorflow as tf

        channels = int(self.model.inputs[0].shape[-1] or 3)
        x = tf.ones((1, *hw, channels), tf.float32)
        found: dict = {}

        class _Found(Exception):
            pass

        def fn(op):
            probe = self.probe_for(op)

            def apply(*args, **kwargs):
                out = probe(*args, **kwargs)
                out = (
                    [_support_grad(t) for t in out] if isinstance(out, list) else _support_grad(out)
                )
                if op.name == layer:
                    found["out"] = out
                    raise _Found
                return out

            return apply

        with tf.GradientTape() as tape:
            tape.watch(x)
            try:
                walk(self.model, x, fn)
            except _Found:
                pass
            if "out" not in found:
                raise UserError(f"Layer '{layer}' was not reached from the model input")
            out = found["out"]
            if len(out.shape) == 3 and grid is not None:
                out = tf.reshape(out[:, -grid[0] * grid[1] :], [-1, *grid, out.shape[-1]])
            if unit is None:
                unit = (int(out.shape[1]) // 2, int(out.shape[2]) // 2)
            target = tf.reduce_sum(out[0, unit[0], unit[1], :])
        grad = tape.gradient(target, x)
        if grad is None:
            return np.zeros(hw, bool), unit
        return np.asarray(tf.reduce_any(tf.not_equal(grad[0], 0), axis=-1)), unit


def _sum_broadcast(tensors):
    out = tensors[0]
    for t in tensors[1:]:
        out = out + t
    return out


def _support_grad(t):
    import tensorflow as tf

    if not isinstance(t, tf.Tensor) or not t.dtype.is_floating:
        return t

    @tf.custom_gradient
    def support(v):
        def grad(g):
            return tf.cast(tf.not_equal(g, 0), g.dtype)

        return tf.identity(v), grad

    return support(t)


def verify(
    model: keras.Model,
    layer: str,
    input_size: int | Sequence[int] | None = None,
    unit: tuple[int, int] | None = None,
    *,
    probe: _Probe | None = None,
    fields: dict[str, Field] | None = None,
) -> Verification:
    """Checks the analytic field of ``layer`` against the input gradient's support.

    Args:
        model: The model (not modified: the probe builds its own layers).
        layer: A layer with a ``local`` field.
        input_size: As for :func:`receptive_fields`.
        unit: ``(y, x)`` in the layer's output; default the centre unit.
        probe: Reuse a probe across layers of one model.
        fields: Reuse computed fields.

    Returns:
        A :class:`Verification`; ``.ok`` when the support lies inside the box and reaches its edges.
    """
    fields = fields or receptive_fields(model, input_size)
    if layer not in fields:
        raise layer_choice_error(layer, list(fields))
    f = fields[layer]
    f.require_local()
    probe = probe or _Probe(model)
    mask, unit = probe.gradient_support(layer, f.input_shape, unit, grid=f.shape)
    box = f.box(*unit)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return Verification(layer, unit, box, None, False, False, mask)
    support = (int(ys.min()), int(xs.min()), int(ys.max()), int(xs.max()))
    inside = (
        support[0] >= box[0]
        and support[1] >= box[1]
        and support[2] <= box[2]
        and support[3] <= box[3]
    )
    return Verification(layer, unit, box, support, inside, support == box, mask)


def verify_layers(
    model: keras.Model, fields: dict[str, Field], *, max_layers: int = 12
) -> dict[str, Verification]:
    """:func:`verify` on a sample of the layers with a ``local`` field.

    Every ``max(1, n // max_layers)``-th of the ``n`` local layers (the input layer left out), in
    graph order, sharing one probe.

    Args:
        model: The model.
        fields: Its fields (:func:`receptive_fields`).
        max_layers: About how many layers to check.

    Returns:
        ``{layer name: Verification}`` in graph order.
    """
    local = [n for n, f in fields.items() if f.kind == LOCAL and f.layer_type != "InputLayer"]
    step = max(1, len(local) // max_layers)
    probe = _Probe(model)
    chosen = local[::step]
    out = {}
    with task("Verifying receptive fields", total=len(chosen), unit="layer") as bar:
        for name in chosen:
            bar.describe(name)
            out[name] = verify(model, name, probe=probe, fields=fields)
            bar.advance()
    return out
