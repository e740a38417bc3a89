"""The explanation engine shared by every method: layers, scores, targets, compiled functions.

One :class:`Explainer` wraps one Keras model. For each set of layers it builds once a model with
named intermediate outputs (``keras.Model(inputs, [layer outputs…, logits input])``), and for each
method and option set it compiles once a ``tf.function`` with a relaxed batch dimension, so
explaining thousands of images in batches never retraces and never rebuilds anything. The
user's model is never modified: logits are computed from the output layer's own variables (read,
not changed), and methods that need other gradient rules work on a copy.

Scores are logits by default (the input of the output softmax or sigmoid): softmax flattens
gradients, and the score of one class would depend on all the others.
"""

from __future__ import annotations

import difflib
import logging
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcam.errors import UserError, choices_message
from tfcam.explain.tokens import (
    TokenGrid,
    token_grid,
    token_layers,
    transformer_default,
    unreachable_patches,
)
from tfcam.models.graph import _foldable_pairs, flatten_model, fold_batchnorm, is_nested, outputs_of


class _NoRetracingNoise(logging.Filter):
    # Each method and layer set has its own compiled function by design; TensorFlow's warning
    # about "retracing" counts those distinct functions together and would mislead users.
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


tf.get_logger().addFilter(_NoRetracingNoise())

#: Maps whose range (max - min) is below this are treated as constant.
CONSTANT_EPS = 1e-12


@dataclass
class Explanation:
    """Heatmaps for a batch of images, with what they explain.

    Attributes:
        heatmaps: ``{layer (or method) name: float32 [N, H, W] in [0, 1]}`` at the input size.
        raw: ``{name: float32 [N, h, w]}`` before upsampling and normalisation (``[N, H, W, 3]``
            gradient images for gradient methods).
        targets: Explained class per image ``[N]``.
        scores: The score of the target (logit by default) per image ``[N]``.
        probabilities: Class probabilities ``[N, C]``.
        constant: ``{name: bool [N]}``: maps that were constant and are returned as zeros.
        method: The method name.
    """

    heatmaps: dict[str, np.ndarray]
    raw: dict[str, np.ndarray]
    targets: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    constant: dict[str, np.ndarray] = field(default_factory=dict)
    method: str = ""

    @property
    def heatmap(self) -> np.ndarray:
        """The heatmaps of the first (usually only) layer, ``[N, H, W]``."""
        return next(iter(self.heatmaps.values()))

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


# --------------------------------------------------------------------------------------------
# Helpers usable inside compiled functions


def normalize_maps(maps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Min-max normalises each map of ``[N, H, W]`` to [0, 1]; constant maps become zeros.

    Returns:
        ``(normalised, constant)`` with ``constant`` a bool ``[N]``.
    """
    lo = tf.reduce_min(maps, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    span = hi - lo
    constant = span[:, 0, 0] <= CONSTANT_EPS
    safe = tf.where(span > CONSTANT_EPS, span, tf.ones_like(span))
    out = tf.where(span > CONSTANT_EPS, (maps - lo) / safe, tf.zeros_like(maps))
    return out, constant


def upsample(maps: tf.Tensor, size: tuple[int, int], align_corners: bool = False) -> tf.Tensor:
    """Bilinear resize of ``[N, h, w]`` maps to ``size``.

    By default with half-pixel centres (each feature cell covers its share of the image, as
    OpenCV and pytorch-grad-cam resize). ``align_corners`` maps the corner cells onto the corner
    pixels instead, which is what ``scipy.ndimage.zoom(order=1)`` in tf-keras-vis does.
    """
    if align_corners:
        return tf.raw_ops.ResizeBilinear(
            images=maps[..., None], size=size, align_corners=True, half_pixel_centers=False
        )[..., 0]
    return tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]


def gather_scores(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Score of each image's target: ``logits[i, targets[i]]``; a single sigmoid logit counts
    as the positive class, and its negation as the negative class."""
    if logits.shape[-1] == 1:
        z = logits[:, 0]
        return tf.where(targets == 1, z, -z)
    return tf.gather(logits, targets, axis=1, batch_dims=1)


def predicted_classes(logits: tf.Tensor) -> tf.Tensor:
    if logits.shape[-1] == 1:
        return tf.cast(logits[:, 0] > 0, tf.int32)
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def probabilities_from_logits(logits: tf.Tensor) -> tf.Tensor:
    if logits.shape[-1] == 1:
        p = tf.sigmoid(logits[:, 0])
        return tf.stack([1.0 - p, p], axis=1)
    return tf.nn.softmax(logits, axis=-1)


# --------------------------------------------------------------------------------------------
# The head: how to get logits out of a model


@dataclass
class _Head:
    tensor: Any  # the KerasTensor to output from the feature model
    to_logits: Callable[[tf.Tensor], tf.Tensor]
    kind: str  # "softmax", "sigmoid" or "linear"


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", str(fn)).lower()


def find_head(model: keras.Model) -> _Head:
    """Finds where logits live: before the output's softmax/sigmoid, read-only.

    Handles a ``Dense`` output with a softmax or sigmoid activation (the logits are recomputed
    from its kernel and bias), a separate ``Activation``/``Softmax`` output layer, and a linear
    output (already logits).
    """
    out_layer = model.layers[-1]
    for layer in model.layers[::-1]:
        if any(t is model.outputs[0] for t in outputs_of(layer)):
            out_layer = layer
            break
    if isinstance(out_layer, keras.layers.Dense):
        act = _activation_name(out_layer.activation)
        if act in ("softmax", "sigmoid"):
            kernel, bias = out_layer.kernel, out_layer.bias

            def to_logits(h):
                # As Keras casts a layer's input: float16 features of a mixed-precision model
                # meet the output layer's float32 kernel.
                h = tf.cast(h, kernel.dtype)
                z = tf.matmul(h, tf.convert_to_tensor(kernel))
                return z + tf.convert_to_tensor(bias) if bias is not None else z

            return _Head(out_layer.input, to_logits, act)
        if act == "linear":
            return _Head(out_layer.output, tf.identity, "linear")
    if isinstance(out_layer, keras.layers.Softmax):
        return _Head(out_layer.input, tf.identity, "softmax")
    if isinstance(out_layer, keras.layers.Activation):
        act = _activation_name(out_layer.activation)
        if act in ("softmax", "sigmoid"):
            return _Head(out_layer.input, tf.identity, act)
    warnings.warn(
        f"tfcam: cannot find logits before the output layer '{out_layer.name}'; explaining its output "
        "values as scores",
        stacklevel=3,
    )
    return _Head(model.outputs[0], tf.identity, "linear")


# --------------------------------------------------------------------------------------------
# The explainer


def model_size(model: keras.Model, input_size=None) -> tuple[int, int] | None:
    shape = model.inputs[0].shape
    if input_size:
        return (int(input_size[0]), int(input_size[1]))
    if len(shape) == 4 and shape[1] is not None and shape[2] is not None:
        return (int(shape[1]), int(shape[2]))
    return None


def default_layer(model: keras.Model, input_size=None) -> str:
    """The layer CAM methods use unless told otherwise.

    For a transformer, :func:`tfcam.explain.tokens.transformer_default` (the input of the last
    block under a class-token head, else the last block); for a tfcam CNN, the backbone
    registry's choice; otherwise the last layer with a spatial (4-D, larger than 1×1) output.
    """
    from tfcam.models.registry import BACKBONES

    size = model_size(model, input_size)
    grid = token_grid(model, size) if size else None
    tokens = token_layers(model, grid)
    if tokens:
        return transformer_default(model, grid, tokens)
    name = model.name.removesuffix("_classifier")
    if name in BACKBONES:
        try:
            model.get_layer(BACKBONES[name].cam_layer)
            return BACKBONES[name].cam_layer
        except ValueError:
            pass
    candidates = spatial_layers(model, min_cells=2)
    if not candidates:
        raise UserError(
            f"Model '{model.name}' has no layer with a spatial (4-D) or token (3-D) output to explain"
        )
    return candidates[-1]


def explainable_layers(model: keras.Model, input_size=None) -> list[str]:
    """Layers CAM methods can explain, in model order: spatial maps ``[N, h, w, C]`` and
    transformer token layers ``[N, T, D]`` (seen as patch grids, :mod:`tfcam.explain.tokens`)."""
    size = model_size(model, input_size)
    tokens = set(token_layers(model, token_grid(model, size) if size else None))
    spatial = set(spatial_layers(model))
    return [la.name for la in model.layers if la.name in tokens or la.name in spatial]


def spatial_layers(model: keras.Model, min_cells: int = 1) -> list[str]:
    """Names of layers whose output is a 4-D feature map (with at least ``min_cells`` cells)."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        outs = outputs_of(layer)
        if (
            len(outs) == 1
            and len(outs[0].shape) == 4
            and (outs[0].shape[1] or 2) * (outs[0].shape[2] or 2) >= min_cells
        ):
            names.append(layer.name)
    return names


class Explainer:
    """Explains one model; builds graphs and compiled functions once and reuses them.

    Args:
        model: A Keras 3 image classifier taking ``[N, H, W, 3]`` images (for tfcam models, raw
            pixels in [0, 255]). It is never modified.
        class_names: Optional class names, so targets can be given by name.
        score: ``"logit"`` (default) or ``"probability"`` (the softmax/sigmoid output).
        batch_size: Images per compiled call; bigger inputs are split.
        align_corners: Upsample maps with corner alignment (tf-keras-vis's convention) instead
            of half-pixel centres.
        input_size: ``(H, W)`` of the images, needed only for a model that takes any size
            (tfcam's native-size models, fed letterboxed images of that size).
    """

    def __init__(
        self,
        model: keras.Model,
        *,
        class_names: Sequence[str] | None = None,
        score: str = "logit",
        batch_size: int = 32,
        align_corners: bool = False,
        input_size: tuple[int, int] | None = None,
    ):
        if score not in ("logit", "probability"):
            raise UserError(f"Unknown score '{score}'. Choose from: logit, probability")
        if is_nested(model):
            model = flatten_model(model)
        if len(model.inputs) != 1:
            raise UserError(
                f"Model '{model.name}' has {len(model.inputs)} inputs; tfcam explains single-input models"
            )
        self.model = model
        self.class_names = list(class_names) if class_names is not None else None
        self.score = score
        self.batch_size = batch_size
        self.align_corners = align_corners
        shape = model.inputs[0].shape
        if len(shape) == 4 and (shape[1] is None or shape[2] is None) and input_size:
            shape = (shape[0], int(input_size[0]), int(input_size[1]), shape[3])
        if len(shape) != 4 or shape[1] is None or shape[2] is None:
            raise UserError(
                f"Model '{model.name}' must take fixed-size images [N, H, W, C]; its input is {tuple(shape)}"
            )
        self.input_size = (int(shape[1]), int(shape[2]))
        self.head = find_head(model)
        #: The transformer's token layout, or None for a CNN.
        self.tokens: TokenGrid | None = token_grid(model, self.input_size)
        self.token_layers = tuple(token_layers(model, self.tokens))
        self.num_outputs = int(self.head.tensor.shape[-1]) if self.head.kind == "linear" else None
        self._graphs: dict[tuple[str, ...], keras.Model] = {}
        self._fns: dict[tuple, Any] = {}
        self._copies: dict[str, Any] = {}

    # Layers ----------------------------------------------------------------------------------
    def resolve_layers(self, layers: str | Sequence[str] | None) -> tuple[str, ...]:
        """Validates layer names (default: :func:`default_layer`).

        Raises:
            UserError: An unknown layer, one without a spatial or token output, or a token layer
                whose patch tokens do not reach a class-token head; lists nearby names.
        """
        if layers is None:
            return (default_layer(self.model, self.input_size),)
        if isinstance(layers, str):
            layers = [layers]
        names = [layer.name for layer in self.model.layers]
        usable = explainable_layers(self.model, self.input_size)
        cut = (
            unreachable_patches(self.model, self.tokens, list(self.token_layers))
            if self.tokens
            else set()
        )
        out = []
        for name in layers:
            if name not in names:
                close = difflib.get_close_matches(name, usable, n=8, cutoff=0.5) or usable[-8:]
                raise UserError(
                    f"Unknown layer '{name}'. Received: layer='{name}'. Choose from layers with "
                    f"spatial or token outputs, e.g.: {', '.join(close)} (all {len(usable)} with "
                    "--list-layers)"
                )
            if name not in usable:
                raise UserError(
                    f"Layer '{name}' has no spatial (4-D) or token (3-D) output to explain. "
                    f"Choose a convolutional or transformer layer, e.g.: {', '.join(usable[-5:])}"
                )
            if name in cut:
                raise UserError(
                    f"Layer '{name}' comes after the last block's input, where only the class token "
                    "reaches the prediction (its patch tokens have no gradient); choose "
                    f"'{default_layer(self.model, self.input_size)}' (the default) or an earlier block"
                )
            out.append(name)
        return tuple(dict.fromkeys(out))

    def as_grids(self, layers: Sequence[str], tensors: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """Inside compiled code: each token layer's ``[N, T, D]`` tensor (activations or their
        gradients) as its patch grid ``[N, gh, gw, D]``; spatial layers pass unchanged."""
        return [
            self.tokens.to_grid(t) if name in self.token_layers else t
            for name, t in zip(layers, tensors, strict=True)
        ]

    def graph(self, layers: tuple[str, ...]) -> keras.Model:
        """``keras.Model(input, [layer outputs…, logits input])``, built once per layer set."""
        if layers not in self._graphs:
            outputs = [self.model.get_layer(n).output for n in layers] + [self.head.tensor]
            self._graphs[layers] = keras.Model(self.model.inputs[0], outputs, name="tfcam_explain")
        return self._graphs[layers]

    def folded_head_graph(self) -> keras.Model:
        """``input → logits input`` with batch normalisation folded (:func:`fold_batchnorm`)."""

        def factory(model):
            if not _foldable_pairs(model):  # nothing to fold (a transformer): no copy needed
                return keras.Model(model.inputs[0], self.head.tensor, name="tfcam_head")
            head_op = self.head.tensor._keras_history.operation.name
            return fold_batchnorm(model, [head_op])

        return self.copy_with("folded_head", factory)

    # Targets ---------------------------------------------------------------------------------
    def resolve_targets(self, targets, n: int) -> np.ndarray:
        """Targets as int32 ``[n]``; ``-1`` means "the predicted class".

        Accepts None (predicted), one class index or name for all images, or one per image.

        Raises:
            UserError: An unknown class name or an index out of range.
        """
        if targets is None:
            return np.full(n, -1, np.int32)
        if isinstance(targets, (str, int, np.integer)):
            targets = [targets] * n
        targets = list(targets)
        if len(targets) != n:
            raise UserError(
                f"Got {len(targets)} targets for {n} images; give one, or one per image"
            )
        n_classes = self.n_classes
        out = []
        for t in targets:
            if isinstance(t, str) and not t.lstrip("-").isdigit():
                if not self.class_names or t not in self.class_names:
                    raise UserError(
                        choices_message(
                            "class", t, self.class_names or [str(i) for i in range(n_classes)]
                        )
                    )
                out.append(self.class_names.index(t))
            else:
                i = int(t)
                if not 0 <= i < n_classes:
                    names = self.class_names or [str(k) for k in range(n_classes)]
                    raise UserError(
                        f"Class index {i} is out of range. Choose from 0–{n_classes - 1} ({', '.join(names[:10])}…)"
                    )
                out.append(i)
        return np.asarray(out, np.int32)

    @property
    def n_classes(self) -> int:
        width = int(self.model.outputs[0].shape[-1])
        return 2 if width == 1 else width

    def score_from(self, head_values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``(scores_source, logits)`` from the head tensor: logits, or probabilities if asked."""
        logits = self.head.to_logits(head_values)
        if self.score == "probability":
            probs = probabilities_from_logits(logits)
            return (probs[:, 1:2] if logits.shape[-1] == 1 else probs), logits
        return logits, logits

    # Compiled functions ----------------------------------------------------------------------
    def compiled(self, key: tuple, build: Callable[[], Callable]) -> Any:
        """The compiled function for ``key``, built by ``build()`` on first use."""
        if key not in self._fns:
            self._fns[key] = build()
        return self._fns[key]

    def image_spec(self) -> tf.TensorSpec:
        return tf.TensorSpec(
            [None, *self.input_size, int(self.model.inputs[0].shape[-1])], tf.float32
        )

    def trace_counts(self) -> dict[tuple, int]:
        """How many times each compiled function was traced (for tests and curiosity)."""
        return {
            k: f.experimental_get_tracing_count()
            for k, f in self._fns.items()
            if hasattr(f, "experimental_get_tracing_count")
        }

    def batches(self, images: np.ndarray):
        images = np.asarray(images, np.float32)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[1:3] != self.input_size:
            raise UserError(
                f"Images must be [N, {self.input_size[0]}, {self.input_size[1]}, 3]; got {images.shape}"
            )
        for start in range(0, len(images), self.batch_size):
            yield start, images[start : start + self.batch_size]

    def compiled_batch(self, key: tuple, make_body: Callable[[], Callable], *, targets=True):
        """The compiled ``body(images)`` or ``body(images, targets)`` for ``key``, built once.

        ``make_body()`` runs on first use (it may build graphs and model copies) and returns the
        Python function to compile; images are ``float32 [N, H, W, C]`` and targets ``int32 [N]``
        (``-1`` for "predicted"), with a relaxed batch dimension so no batch size retraces.
        """

        def build():
            spec = [self.image_spec()] + ([tf.TensorSpec([None], tf.int32)] if targets else [])
            return tf.function(make_body(), input_signature=spec, reduce_retracing=True)

        return self.compiled(key, build)

    def run_graph(self, graph: keras.Model, images: tf.Tensor, targets: tf.Tensor):
        """Inside a compiled body (and a tape, for gradients): runs ``graph`` (from :meth:`graph`
        or a copy ending at the head) and scores the targets.

        Returns:
            ``(activations, targets, scores, probabilities)``: the layer outputs before the head
            (a list, empty for a head-only graph), targets with ``-1`` resolved to the predicted
            class, each target's score (logit or probability) and the class probabilities.
        """
        outs = graph(images, training=False)
        if isinstance(outs, (list, tuple)):
            acts, head = list(outs[:-1]), outs[-1]
        else:
            acts, head = [], outs
        source, logits = self.score_from(head)
        targets = tf.where(targets < 0, predicted_classes(logits), targets)
        scores = gather_scores(source, targets)
        return acts, targets, scores, probabilities_from_logits(logits)

    def forward_logits(self, images: np.ndarray) -> np.ndarray:
        """Logits of the images (one compiled forward pass per batch)."""

        def make_body():
            graph = self.graph(())

            def body(x):
                outs = graph(x, training=False)
                head = outs[-1] if isinstance(outs, (list, tuple)) else outs
                return self.head.to_logits(head)

            return body

        fn = self.compiled_batch(("forward",), make_body, targets=False)
        return np.concatenate([fn(tf.constant(b)).numpy() for _, b in self.batches(images)])

    def copy_with(self, kind: str, factory: Callable[[keras.Model], keras.Model]) -> keras.Model:
        """A modified copy of the model (e.g. guided ReLUs), built once per kind."""
        if kind not in self._copies:
            self._copies[kind] = factory(self.model)
        return self._copies[kind]


def warn_constant(constant: dict[str, np.ndarray], method: str) -> None:
    """One warning when some maps were constant (returned as zeros, never NaN)."""
    total = sum(int(np.sum(c)) for c in constant.values())
    if total:
        n = sum(len(c) for c in constant.values())
        warnings.warn(
            f"tfcam: {total} of {n} {method} maps were constant (e.g. all zero after ReLU: nothing "
            "supports the target there); they are returned as zeros",
            stacklevel=3,
        )


_EXPLAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explainer_for(model: keras.Model, **kwargs) -> Explainer:
    """The cached :class:`Explainer` of a model (one per model and settings), for the functional API."""
    per_model = _EXPLAINERS.setdefault(model, {})
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()))
    if key not in per_model:
        per_model[key] = Explainer(model, **kwargs)
    return per_model[key]
