"""Analytic receptive fields of Keras models: size, stride and padding per layer, no forward pass.

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
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import keras

from tfcam.errors import UserError
from tfcam.models.graph import walk

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
    # keras.applications' own: ConvNeXt's per-channel scale and its stochastic depth (identity
    # at inference)
    "LayerScale",
    "StochasticDepth",
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
    "CustomScaleLayer",  # Inception-ResNet-v2's residual: x + scale * branch
]
_UNSUPPORTED_REASONS = {
    "UpSampling2D": "upsampling maps several output units to one input unit",
    "Resizing": "resizing changes the grid by a non-integer factor",
    "Conv2DTranspose": "a transposed convolution upsamples",
    "Lambda": "the calculator cannot see inside a Lambda layer",
    "Permute": "a permutation may move spatial axes",
}


#: Layers whose every output depends on every input position: attention, and transformer blocks
#: that hold one (keras-hub's ViT and DINOv2 blocks).
_GLOBAL_REASONS = {
    "MultiHeadAttention": "attention mixes all positions by content",
    "Attention": "attention mixes all positions by content",
    "AdditiveAttention": "attention mixes all positions by content",
    "ViTEncoderBlock": "the block's self-attention mixes all tokens by content",
    "DINOV2Layer": "the block's self-attention mixes all tokens by content",
}
#: Patch embeddings of transformers: each patch token sees its patch (a convolution with stride =
#: kernel = patch size; the class and register tokens are learned constants).
_PATCH_EMBEDDINGS = ("ViTPatchingAndEmbedding", "DINOV2Embedding")


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
        self.require_local()
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
        self.require_local()
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

    def require_local(self) -> None:
        """Raises :class:`UserError` unless the field is ``local`` (a box per unit)."""
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
        attention = next((c for c in chain if c in _GLOBAL_REASONS), None)
        if attention:
            return _Geo(
                GLOBAL, reason=f"{_GLOBAL_REASONS[attention]} ('{name}')", context=g.context
            )
        if g.kind == GLOBAL:
            # Anything computed from a global value stays global (SE branches, heads).
            return _Geo(GLOBAL, reason=g.reason, context=g.context)
        if cls in _IDENTITY_CLASSES:
            return g if len(geos) == 1 else _union(geos, name)
        if any(c in chain for c in _PATCH_EMBEDDINGS):
            patch = _pair(op.patch_size)
            return _window(g, patch, patch, 1, "valid", name)
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


def field_line(field: Field) -> str:
    """One line describing a field for people: size, stride, padding, and which pixels unit
    ``(y, x)`` sees (or why the field has no box per unit)."""
    if field.kind != "local":
        return f"{field.layer}: no box per unit, the field is {field.kind}: {field.reason}"
    (ry, rx), (sy, sx), (py, px) = field.size, field.stride, field.padding
    h, w = field.shape
    extra = (
        "; also sees the whole image through a globally pooled branch"
        if field.global_context
        else ""
    )
    return (
        f"{field.layer}: size {ry}×{rx}, stride {sy}×{sx}, padding {py}×{px} (output {h}×{w}; "
        f"unit (y, x) sees rows {-py}+{sy}y … {ry - 1 - py}+{sy}y, columns {-px}+{sx}x … "
        f"{rx - 1 - px}+{sx}x{extra})"
    )
