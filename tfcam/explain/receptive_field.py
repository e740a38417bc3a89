"""Receptive fields of Keras models: analytic, empirical and effective; the patches units see.

The analytic calculator walks a model's graph (functional DAGs with residual or concatenated
branches, nested sub-models, ``Sequential``) without running it, and gives for every layer and each
spatial axis the receptive-field size ``R``, the effective stride ``S`` and the effective padding
``P``, in the convention of google-research/receptive_field (Araujo, Norris & Sim, "Computing
Receptive Fields of Convolutional Neural Networks", Distill 2019): the centre of output unit ``x``
lies at input coordinate ``-P + x·S + (R - 1) / 2`` and its field covers the input pixels
``-P + x·S … -P + x·S + R - 1``. Composing a layer with kernel ``k`` (dilation ``d``, so an
effective kernel ``d·(k-1)+1``), stride ``s`` and left padding ``p`` onto an input field
``(R, S, P)`` gives ``(R + (k_eff - 1)·S, S·s, P + p·S)``; where branches meet, the field is the
union (the hull) of the incoming fields, which needs the branches to share a stride.

``same`` padding in TensorFlow pads ``max((ceil(n/s) - 1)·s + k_eff - n, 0)`` pixels in all, the
smaller half before: it depends on the input size ``n``, so the input size is part of the answer.

Three kinds of answer:

* ``local``: an ordinary box per unit.
* ``global``: every value depends on the whole input (after global pooling, ``Flatten``, ``Dense``
  on a flat vector).
* ``unsupported``: a layer the calculator cannot map to one box per unit (upsampling, transposed
  convolution, attention, ``Lambda`` or an unknown layer), and everything computed from it; the
  reason names the layer.

A ``local`` field may carry ``global_context``: the units also depend on the whole image through a
globally pooled branch (squeeze-and-excitation in EfficientNet). ``R, S, P`` then describe the
spatial paths, which is what one draws; strictly speaking every pixel has some influence.

Empirical check (:func:`verify`): the input gradient of a unit near the centre of a layer, on a copy
of the model in which no path can cancel (positive weights, linear activations, average instead of
max pooling, globally pooled branches cut, and gradients turned into 0/1 support masks at every
layer so deep networks do not underflow), must lie inside the analytic box and reach its edges.

Effective receptive field (:func:`effective_receptive_field`): Luo, Li, Urtasun & Zemel,
"Understanding the Effective Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016:
the gradient magnitude of a centre unit with respect to the input, averaged over images.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from tfcam.errors import UserError
from tfcam.explain.engine import walk

LOCAL, GLOBAL, UNSUPPORTED = "local", "global", "unsupported"

# Layers and operations that keep the spatial geometry: each output unit sees exactly the input
# unit at the same place (element-wise functions, normalisation over channels or statistics,
# noise, per-pixel preprocessing).
_IDENTITY_CLASSES = [
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "UnitNormalization",
    "RMSNormalization",
    "Dropout",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Rescaling",
    "Normalization",
    "Identity",
    "Masking",
    "InputLayer",
    "Preprocess",
    "Cast",
    "Relu",
    "Relu6",
    "Sigmoid",
    "HardSigmoid",
    "Silu",
    "Swish",
    "HardSilu",
    "HardSwish",
    "Gelu",
    "Elu",
    "Selu",
    "LeakyRelu",
    "Softplus",
    "Softsign",
    "Tanh",
    "Exp",
    "Log",
    "Abs",
    "Absolute",
    "Square",
    "Sqrt",
    "Negative",
    "Clip",
    "Erf",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
]
_MERGE_CLASSES = [
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Concatenate",
    "Divide",
    "TrueDivide",
    "Power",
]
_UNSUPPORTED_REASONS = {
    "UpSampling2D": "upsampling maps several output units to one input unit",
    "Resizing": "resizing changes the grid by a non-integer factor",
    "Conv2DTranspose": "a transposed convolution upsamples",
    "MultiHeadAttention": "attention mixes all positions by content",
    "Attention": "attention mixes all positions by content",
    "AdditiveAttention": "attention mixes all positions by content",
    "Lambda": "the calculator cannot see inside a Lambda layer",
    "Permute": "a permutation may move spatial axes",
}


@dataclass(frozen=True)
class Field:
    """Receptive field of a layer's output, per axis ``(y, x)``.

    Attributes:
        layer: Layer name.
        kind: ``local``, ``global`` or ``unsupported``.
        size: ``(Ry, Rx)``, receptive-field size in input pixels (``local`` only).
        stride: ``(Sy, Sx)``, input pixels between neighbouring units.
        padding: ``(Py, Px)``, effective padding: the first unit's field starts at ``-P``.
        shape: ``(h, w)``, the layer's spatial output size (``None`` when not spatial).
        input_shape: ``(H, W)`` of the model input the field refers to.
        global_context: The units also see the whole image through a globally pooled branch.
        reason: Why the field is ``global`` or ``unsupported``.
        layer_type: The layer's class name.
        extent: Per axis ``(first, last)``: the input pixels the layer reads at all.
    """

    layer: str
    kind: str
    size: tuple[int, int] | None
    stride: tuple[int, int] | None
    padding: tuple[int, int] | None
    shape: tuple[int, int] | None
    input_shape: tuple[int, int]
    global_context: bool = False
    reason: str = ""
    layer_type: str = ""
    extent: tuple[tuple[int, int], tuple[int, int]] | None = None

    def centre(self, y: int, x: int) -> tuple[float, float]:
        """Input coordinates ``(y, x)`` of the centre of unit ``(y, x)``'s field."""
        self._need_local()
        return (
            -self.padding[0] + y * self.stride[0] + (self.size[0] - 1) / 2,
            -self.padding[1] + x * self.stride[1] + (self.size[1] - 1) / 2,
        )

    def box(self, y: int, x: int, clip: bool = True) -> tuple[int, int, int, int]:
        """The input pixels unit ``(y, x)`` sees: ``(top, left, bottom, right)``, inclusive.

        Args:
            y: Row of the unit in the layer's output.
            x: Column of the unit.
            clip: Clip to the pixels the layer reads at all: the image, less any rows or columns
                that no unit reads (a valid window with a stride can leave the last ones unread).
                Unclipped, the box may start before 0 or end past the image, where the network
                saw padding.
        """
        self._need_local()
        top = -self.padding[0] + y * self.stride[0]
        left = -self.padding[1] + x * self.stride[1]
        bottom, right = top + self.size[0] - 1, left + self.size[1] - 1
        if clip:
            (y0, y1), (x0, x1) = self.extent
            top, left = max(top, y0), max(left, x0)
            bottom, right = min(bottom, y1), min(right, x1)
        return top, left, bottom, right

    def as_dict(self) -> dict:
        """``{"layer", "size", "stride", "padding"}``, plus ``kind``/``reason`` or
        ``global_context`` when they have something to say."""
        out: dict = {
            "layer": self.layer,
            "size": list(self.size) if self.size else None,
            "stride": list(self.stride) if self.stride else None,
            "padding": list(self.padding) if self.padding else None,
        }
        if self.kind != LOCAL:
            out["kind"] = self.kind
            out["reason"] = self.reason
        if self.global_context:
            out["global_context"] = True
        return out

    def _need_local(self) -> None:
        if self.kind != LOCAL:
            raise UserError(
                f"Layer '{self.layer}' has no box per unit: its field is {self.kind} ({self.reason})"
            )


@dataclass(frozen=True)
class _Geo:
    """What the walk carries along each tensor (internal)."""

    kind: str
    size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    shape: tuple[int, int] | None = None
    context: bool = False
    reason: str = ""
    #: Per axis, the first and last input pixel any unit of the tensor reads.
    extent: tuple[tuple[int, int], tuple[int, int]] | None = None


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    return v if len(v) == 2 else (v[0], v[0])


def _window(g: _Geo, kernel, strides, dilation, padding: str, name: str) -> _Geo:
    """A sliding window (convolution or pooling) applied to a local field."""
    k, s, d = _pair(kernel), _pair(strides), _pair(dilation)
    size, stride, pad, shape, extent = [], [], [], [], []
    for a in range(2):
        n, ke = g.shape[a], d[a] * (k[a] - 1) + 1
        if padding == "valid":
            if n < ke:
                return _Geo(
                    UNSUPPORTED,
                    reason=f"input of '{name}' ({n} px) is smaller than its kernel ({ke})",
                )
            out, before = (n - ke) // s[a] + 1, 0
        elif padding == "same":
            out = -(-n // s[a])
            before = max((out - 1) * s[a] + ke - n, 0) // 2
        else:
            return _Geo(UNSUPPORTED, reason=f"'{name}' has padding '{padding}'")
        size.append(g.size[a] + (ke - 1) * g.stride[a])
        stride.append(g.stride[a] * s[a])
        pad.append(g.padding[a] + before * g.stride[a])
        shape.append(out)
        # A valid window with a stride can leave the last input units unread.
        last_unit = min(n - 1, (out - 1) * s[a] - before + ke - 1)
        extent.append(_read(g, a, 0, last_unit))
    return _Geo(
        LOCAL, tuple(size), tuple(stride), tuple(pad), tuple(shape), g.context, "", tuple(extent)
    )


def _read(g: _Geo, a: int, first_unit: int, last_unit: int) -> tuple[int, int]:
    """Input pixels read by units ``first_unit..last_unit`` of ``g`` along axis ``a``."""
    lo = -g.padding[a] + first_unit * g.stride[a]
    hi = -g.padding[a] + last_unit * g.stride[a] + g.size[a] - 1
    return max(lo, g.extent[a][0]), min(hi, g.extent[a][1])


def _union(geos: list[_Geo], name: str) -> _Geo:
    """Where branches meet: the hull of the local fields; global branches add context."""
    local = [g for g in geos if g.kind == LOCAL]
    context = any(g.context or g.kind == GLOBAL for g in geos)
    if not local:
        return _Geo(GLOBAL, reason=geos[0].reason, context=context)
    first = local[0]
    for g in local[1:]:
        if g.stride != first.stride:
            return _Geo(
                UNSUPPORTED,
                reason=f"branches meeting at '{name}' have different strides "
                f"({first.stride} and {g.stride})",
            )
        if g.shape != first.shape:
            return _Geo(
                UNSUPPORTED,
                reason=f"branches meeting at '{name}' have different sizes ({first.shape} and {g.shape})",
            )
    pad = tuple(max(g.padding[a] for g in local) for a in range(2))
    size = tuple(max(g.size[a] - g.padding[a] for g in local) + pad[a] for a in range(2))
    extent = tuple(
        (min(g.extent[a][0] for g in local), max(g.extent[a][1] for g in local)) for a in range(2)
    )
    return _Geo(LOCAL, size, first.stride, pad, first.shape, context, "", extent)


def _class_chain(op) -> list[str]:
    return [c.__name__ for c in type(op).__mro__]


class _Rules:
    """Maps a layer and the fields of its inputs to the field of its output."""

    def __init__(self, identity_layers: Iterable[str] = ()):
        self.identity = set(identity_layers)

    def __call__(self, op, geos: list[_Geo], args, kwargs) -> _Geo:
        name, cls = op.name, type(op).__name__
        chain = _class_chain(op)
        bad = [g for g in geos if g.kind == UNSUPPORTED]
        if bad:
            return bad[0]
        if not geos:
            return _Geo(UNSUPPORTED, reason=f"'{name}' has no image input")
        g = geos[0]
        if (
            name in self.identity
            or cls in self.identity
            or getattr(op, "receptive_field_identity", False)
        ):
            return _union(geos, name) if len(geos) > 1 else g
        if cls in _MERGE_CLASSES or "Merge" in chain:
            if cls == "Concatenate" and g.kind == LOCAL and op.axis not in (-1, 3):
                return _Geo(UNSUPPORTED, reason=f"'{name}' concatenates along a spatial axis")
            return _union(geos, name)
        if g.kind == GLOBAL:
            # Anything computed from a global value stays global (SE branches, heads).
            return _Geo(GLOBAL, reason=g.reason, context=g.context)
        if cls in _IDENTITY_CLASSES:
            return g if len(geos) == 1 else _union(geos, name)
        if cls in _UNSUPPORTED_REASONS:
            return _Geo(UNSUPPORTED, reason=f"{_UNSUPPORTED_REASONS[cls]} ('{name}')")
        if "BaseConvTranspose" in chain:
            return _Geo(UNSUPPORTED, reason=f"a transposed convolution upsamples ('{name}')")
        if any(c in chain for c in ("BaseConv", "BaseDepthwiseConv", "BaseSeparableConv")):
            if len(_pair(op.kernel_size)) != 2 or getattr(op, "rank", 2) != 2:
                return _Geo(UNSUPPORTED, reason=f"'{name}' is not a 2-D convolution")
            return _window(g, op.kernel_size, op.strides, op.dilation_rate, op.padding, name)
        if cls in ("MaxPooling2D", "AveragePooling2D"):
            return _window(g, op.pool_size, op.strides or op.pool_size, 1, op.padding, name)
        if cls == "ZeroPadding2D":
            (t, b), (left, r) = op.padding
            shape = (g.shape[0] + t + b, g.shape[1] + left + r)
            pad = (g.padding[0] + t * g.stride[0], g.padding[1] + left * g.stride[1])
            return _Geo(LOCAL, g.size, g.stride, pad, shape, g.context, "", g.extent)
        if cls == "Cropping2D":
            (t, b), (left, r) = op.cropping
            shape = (g.shape[0] - t - b, g.shape[1] - left - r)
            pad = (g.padding[0] - t * g.stride[0], g.padding[1] - left * g.stride[1])
            extent = (_read(g, 0, t, g.shape[0] - 1 - b), _read(g, 1, left, g.shape[1] - 1 - r))
            return _Geo(LOCAL, g.size, g.stride, pad, shape, g.context, "", extent)
        if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D", "Flatten"):
            return _Geo(
                GLOBAL, reason=f"'{name}' pools or flattens the whole map", context=g.context
            )
        if cls in ("Dense", "EinsumDense"):
            return g  # applied per pixel on a spatial map: a 1×1 convolution
        if cls == "Reshape":
            target = tuple(op.target_shape)
            if len(target) == 3 and target[:2] == g.shape:
                return g
            return _Geo(UNSUPPORTED, reason=f"'{name}' reshapes the spatial map to {target}")
        return _Geo(
            UNSUPPORTED,
            reason=f"unknown layer type {cls} ('{name}'); if it keeps the geometry, "
            f"pass identity_layers=['{name}']",
        )


def _leaves(obj, kind=None) -> list:
    """The values of type ``kind`` found in nested args (lists, tuples, dicts)."""
    out: list = []
    if isinstance(obj, (list, tuple)):
        for o in obj:
            out += _leaves(o, kind)
    elif isinstance(obj, dict):
        for o in obj.values():
            out += _leaves(o, kind)
    elif kind is None or isinstance(obj, kind):
        out.append(obj)
    return out


def _input_hw(model: keras.Model, input_size) -> tuple[int, int]:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4:
        raise UserError(f"Model input has shape {shape}; receptive fields need image inputs")
    channels_first = keras.config.image_data_format() == "channels_first"
    hw = shape[2:4] if channels_first else shape[1:3]
    if input_size is not None:
        want = _pair(input_size)
        if all(d is not None for d in hw) and tuple(hw) != want:
            raise UserError(
                f"The model takes {hw[0]}×{hw[1]} inputs; it cannot be analysed at "
                f"{want[0]}×{want[1]} (rebuild it at that size)"
            )
        return want
    if any(d is None for d in hw):
        raise UserError("The model's input size is not fixed; give the input size (--input-size N)")
    return int(hw[0]), int(hw[1])


def receptive_fields(
    model: keras.Model,
    input_size: int | Sequence[int] | None = None,
    identity_layers: Iterable[str] = (),
) -> dict[str, Field]:
    """The receptive field of every layer, in graph order, without running the model.

    Args:
        model: A Keras 3 model (functional, nested or ``Sequential``).
        input_size: ``N`` or ``(H, W)``; needed when the model's input size is not fixed.
        identity_layers: Names or class names of custom layers that keep the geometry.

    Returns:
        ``{layer name: Field}``; a layer called more than once keeps its first call.
    """
    hw = _input_hw(model, input_size)
    rules = _Rules(identity_layers)
    fields: dict[str, Field] = {}

    def fn(op):
        def apply(*args, **kwargs):
            geos = _leaves((args, kwargs), _Geo)
            g = rules(op, geos, args, kwargs)
            if op.name not in fields:
                fields[op.name] = _to_field(op, g, hw)
            return g

        return apply

    start = _Geo(LOCAL, (1, 1), (1, 1), (0, 0), hw, extent=((0, hw[0] - 1), (0, hw[1] - 1)))
    walk(model, [start] * len(model.inputs) if len(model.inputs) > 1 else start, fn)
    return fields


def _to_field(op, g: _Geo, hw: tuple[int, int]) -> Field:
    if g.kind == LOCAL:
        return Field(
            op.name,
            LOCAL,
            g.size,
            g.stride,
            g.padding,
            g.shape,
            hw,
            g.context,
            "",
            type(op).__name__,
            g.extent,
        )
    return Field(
        op.name, g.kind, None, None, None, None, hw, g.context, g.reason, type(op).__name__
    )


def layer_choice_error(layer: str, names: Sequence[str]) -> UserError:
    """ "Unknown layer 'x'. Did you mean …? Nearby: …" with the closest of a long list of names."""
    close = difflib.get_close_matches(layer, names, n=8, cutoff=0.5)
    if not close:
        close = [n for n in names if n.split("_")[0] == layer.split("_")[0]][:8] or list(names[:8])
    return UserError(
        f"Unknown layer '{layer}'. Nearby layers: {', '.join(close)} "
        f"({len(names)} layers in all; run without --layer for the table)"
    )


def receptive_field(
    model: keras.Model,
    layer: str,
    input_size: int | Sequence[int] | None = None,
    identity_layers: Iterable[str] = (),
) -> Field:
    """The receptive field of one layer (see :func:`receptive_fields`).

    Raises:
        UserError: Unknown layer; the message lists the nearest names.
    """
    fields = receptive_fields(model, input_size, identity_layers)
    if layer not in fields:
        raise layer_choice_error(layer, list(fields))
    return fields[layer]


def fields_table(fields: dict[str, Field]):
    """A pandas table: layer, type, output size, and R, S, P per axis (or the reason)."""
    import pandas as pd

    rows = []
    for f in fields.values():
        row = {"layer": f.layer, "type": f.layer_type}
        row["out"] = f"{f.shape[0]}×{f.shape[1]}" if f.shape else "-"
        for key, val in (("R", f.size), ("S", f.stride), ("P", f.padding)):
            row[f"{key}_y"], row[f"{key}_x"] = val if val else ("-", "-")
        if f.kind == GLOBAL:
            row["note"] = f"whole image: {f.reason}"
        elif f.kind == UNSUPPORTED:
            row["note"] = f"unsupported: {f.reason}"
        else:
            row["note"] = "+ whole image via a pooled branch" if f.global_context else ""
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Empirical check


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
        self, layer: str, hw: tuple[int, int], unit: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """0/1 map ``[H, W]`` of the input pixels that can affect unit ``unit`` of ``layer``."""
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
    f._need_local()
    probe = probe or _Probe(model)
    mask, unit = probe.gradient_support(layer, f.input_shape, unit)
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


# --------------------------------------------------------------------------------------------
# Effective receptive field


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

    from tfcam.explain.engine import flatten_model

    f = receptive_field(model, layer)
    f._need_local()
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


# --------------------------------------------------------------------------------------------
# Patches: where units fire


@dataclass(frozen=True)
class Patch:
    """One unit's input patch.

    Attributes:
        image: Index of the image in the batch.
        unit: ``(y, x)`` in the layer's output.
        channel: The channel whose value ranked it.
        value: That activation.
        box: Its field, ``(top, left, bottom, right)`` inclusive, clipped to the image.
    """

    image: int
    unit: tuple[int, int]
    channel: int
    value: float
    box: tuple[int, int, int, int]

    def as_dict(self) -> dict:
        return {
            "image": self.image,
            "unit": list(self.unit),
            "channel": self.channel,
            "value": self.value,
            "box": list(self.box),
        }


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    t, left = max(a[0], b[0]), max(a[1], b[1])
    bot, r = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, bot - t + 1) * max(0, r - left + 1)
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area - inter) if area > inter else 1.0


def layer_activations(model: keras.Model, layer: str, images: np.ndarray) -> np.ndarray:
    """``[N, h, w, C]`` activations of one layer (a sub-model of the flattened model)."""
    from tfcam.explain.engine import flatten_model

    flat = flatten_model(model)
    try:
        out = flat.get_layer(layer).output
    except ValueError:
        raise layer_choice_error(layer, [x.name for x in flat.layers]) from None
    sub = keras.Model(flat.inputs[0], out)
    images = np.asarray(images, np.float32)
    return np.concatenate(
        [np.asarray(sub(images[i : i + 16], training=False)) for i in range(0, len(images), 16)]
    )


def top_units(
    activations: np.ndarray,
    field: Field,
    k: int = 9,
    channel: int | None = None,
    max_overlap: float = 0.5,
    image: int = 0,
) -> list[Patch]:
    """The ``k`` most active units of one image's activations ``[h, w, C]``.

    Args:
        activations: One image's feature maps.
        field: The layer's receptive field (gives each unit's box).
        k: How many units.
        channel: Rank by this channel; default by each unit's strongest channel.
        max_overlap: Skip a unit whose box overlaps an already chosen one by more than this
            intersection-over-union (neighbouring units see almost the same patch); 1 keeps all.
        image: Index recorded in the patches.
    """
    a = np.asarray(activations)
    c = a.shape[-1]
    if channel is not None and not 0 <= channel < c:
        raise UserError(
            f"Channel {channel} is out of range: layer '{field.layer}' has {c} channels"
        )
    score = a[..., channel] if channel is not None else a.max(axis=-1)
    best = np.full(score.shape, channel, int) if channel is not None else a.argmax(axis=-1)
    # Saturating activations (ReLU6) tie at their ceiling: among equals, the unit whose
    # neighbourhood fires more comes first.
    import cv2

    local = cv2.blur(np.ascontiguousarray(score, np.float32), (3, 3), borderType=cv2.BORDER_REFLECT)
    order = np.lexsort((-local.ravel(), -score.ravel()))
    chosen: list[Patch] = []
    for flat_index in order:
        y, x = np.unravel_index(flat_index, score.shape)
        box = field.box(int(y), int(x))
        if any(_iou(box, p.box) > max_overlap for p in chosen):
            continue
        chosen.append(Patch(image, (int(y), int(x)), int(best[y, x]), float(score[y, x]), box))
        if len(chosen) == k:
            break
    return chosen


def top_patches_across(
    activations: np.ndarray, field: Field, k: int = 9, channel: int | None = None
) -> tuple[int, list[Patch]]:
    """ "What does this unit look for": the ``k`` images whose best unit fires most on a channel.

    One patch per image (its strongest unit), the images ranked by that activation.

    Args:
        activations: ``[N, h, w, C]`` for a folder of images.
        field: The layer's receptive field.
        k: How many patches.
        channel: The channel; default the one with the highest mean of per-image maxima.

    Returns:
        ``(channel, patches)``.
    """
    a = np.asarray(activations)
    per_image_max = a.max(axis=(1, 2))  # [N, C]
    if channel is None:
        channel = int(per_image_max.mean(axis=0).argmax())
    elif not 0 <= channel < a.shape[-1]:
        raise UserError(
            f"Channel {channel} is out of range: layer '{field.layer}' has {a.shape[-1]} channels"
        )
    patches = [top_units(a[i], field, 1, channel, image=i)[0] for i in range(len(a))]
    # Ties (saturated units) go to the image whose map fires more overall on the channel.
    mean = a[..., channel].mean(axis=(1, 2))
    patches.sort(key=lambda p: (-p.value, -mean[p.image]))
    return channel, patches[:k]


def write_patches(
    model: keras.Model,
    field: Field,
    inputs: Sequence[str],
    out_dir,
    *,
    k: int = 9,
    channel: int | None = None,
    resize: str = "stretch",
) -> dict:
    """Patch overlays as PNGs: what the most active units of ``field.layer`` look at.

    One image: ``<stem>_<layer>_boxes.png`` (the ``k`` strongest units' fields drawn on the image
    as the model sees it, strongest in red) and ``<stem>_<layer>_patches.png`` (the crops).
    Several images or a folder: ``<layer>_channel<C>_top<k>.png``, the ``k`` images whose strongest
    unit fires most on channel ``C``, and ``<layer>_channel<C>_top<k>_boxes.png`` with each box on its
    image. Also ``<stem>.json`` beside them with every box, so the drawings can be checked.

    Returns:
        The JSON record.
    """
    import json
    from pathlib import Path

    from tfcam.data.pipeline import read_images
    from tfcam.explain.inputs import list_inputs
    from tfcam.io import atomic_path
    from tfcam.viz.patches import crop, display_scale, draw_boxes, patch_grid
    from tfcam.viz.plots import to_png

    field._need_local()
    files = list_inputs(inputs)
    h, w = field.input_shape
    images = read_images([str(f) for f in files], (h, w), resize)
    acts = layer_activations(model, field.layer, images)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scale = display_scale(h, w)
    written: list[str] = []

    def save_png(name: str, data: bytes | np.ndarray) -> None:
        import cv2

        path = out_dir / name
        with atomic_path(path) as tmp:
            if isinstance(data, bytes):
                Path(tmp).write_bytes(data)
            elif not cv2.imwrite(str(tmp), cv2.cvtColor(data, cv2.COLOR_RGB2BGR)):
                raise OSError(f"could not write {path}")
        written.append(str(path))

    def label(p: Patch) -> str:
        return f"#{p.channel} {p.value:.3g} @({p.unit[0]},{p.unit[1]})"

    if len(files) == 1:
        patches = top_units(acts[0], field, k, channel)
        stem = f"{files[0].stem}_{field.layer}"
        save_png(f"{stem}_boxes.png", draw_boxes(images[0], [p.box for p in patches], scale=scale))
        fig = patch_grid(
            [crop(images[0], p.box) for p in patches],
            [label(p) for p in patches],
            suptitle=f"{files[0].name}: strongest units of {field.layer} "
            f"(field {field.size[0]}×{field.size[1]})",
        )
        save_png(f"{stem}_patches.png", to_png(fig))
        chosen = channel
    else:
        chosen, patches = top_patches_across(acts, field, k, channel)
        stem = f"{field.layer}_channel{chosen}_top{k}"
        fig = patch_grid(
            [crop(images[p.image], p.box) for p in patches],
            [f"{files[p.image].name[:18]} {p.value:.3g}" for p in patches],
            suptitle=f"{field.layer} channel {chosen}: top {len(patches)} of {len(files)} images",
        )
        save_png(f"{stem}.png", to_png(fig))
        tiles = [draw_boxes(images[p.image], [p.box], scale=scale) for p in patches]
        save_png(f"{stem}_boxes.png", np.concatenate(tiles, axis=1))
    record = {
        "layer": field.layer,
        "channel": chosen,
        "display_scale": scale,
        "field": field.as_dict(),
        "images": [str(f) for f in files],
        "patches": [p.as_dict() for p in patches],
        "files": written,
    }
    record["files"].append(str(out_dir / f"{stem}.json"))
    with atomic_path(out_dir / f"{stem}.json") as tmp:
        Path(tmp).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


__all__ = [
    "GLOBAL",
    "LOCAL",
    "UNSUPPORTED",
    "EffectiveField",
    "Field",
    "Patch",
    "Verification",
    "effective_receptive_field",
    "fields_table",
    "layer_activations",
    "mass_radius",
    "receptive_field",
    "receptive_fields",
    "top_patches_across",
    "top_units",
    "verify",
    "write_patches",
]
