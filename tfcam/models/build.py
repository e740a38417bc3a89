"""Building transfer models: flat functional graphs, preprocessing inside, a head named ``predictions``.

The backbone is not nested as a sub-model: its layers are applied to the outer model's own input
tensor, so every backbone layer is a layer of the classifier and ``model.get_layer("out_relu")``
works, as does ``keras.Model(model.inputs, model.get_layer(name).output)`` (no "Graph disconnected",
the most reported failure of peer tools with nested models).

Layer naming contract (other parts rely on it):
    * ``image``: the input, raw RGB in [0, 255];
    * ``preprocess``: the :class:`~tfcam.models.layers.Preprocess` layer;
    * ``head_*``: head layers (pooling, dense, dropout);
    * ``predictions``: the output layer (softmax, or sigmoid for a binary model);
    * everything else belongs to the backbone.
"""

from __future__ import annotations

import importlib
import os
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
from keras import layers

from tfcam.errors import UserError, choices_message, damaged, first_line
from tfcam.models.graph import flatten_model, is_nested
from tfcam.models.hub import preset_name
from tfcam.models.layers import (
    FillPadding,
    GlobalPool,
    Preprocess,
    SpatialPyramidPooling,
    TokenPool,
)
from tfcam.models.registry import Backbone, get_backbone

HEAD_PREFIX = "head_"
OUTPUT_NAME = "predictions"


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def _weights_arg(weights: str | os.PathLike | None, backbone: Backbone) -> str | None:
    if weights is None or str(weights).lower() == "none":
        return None
    hub_choices = "hub:PRESET, a keras-hub preset directory, none or a weights file"
    preset = preset_name(str(weights))
    if preset is not None:
        if not backbone.transformer:
            raise UserError(
                f"--weights '{weights}' names a keras-hub preset; backbone '{backbone.name}' is "
                "not a keras-hub one (vit_*, dinov2_*). Use imagenet, none or a weights file"
            )
        return str(weights)
    if str(weights) == "imagenet":
        if not backbone.imagenet:
            use = hub_choices if backbone.transformer else "weights='none' or a file"
            raise UserError(f"Backbone '{backbone.name}' has no ImageNet weights; use {use}")
        return "imagenet"
    path = Path(weights).expanduser()
    if backbone.transformer and path.is_dir():
        return str(path)  # a preset directory (checked when it loads)
    if not path.is_file():
        use = hub_choices if backbone.transformer else "imagenet, none or an existing file"
        raise UserError(f"Weights file not found: '{weights}'. Use {use}")
    return str(path)


def build_classifier(
    *,
    backbone: str,
    num_classes: int,
    image_size: int | Sequence[int],
    weights: str | os.PathLike | None = None,
    options: Mapping[str, Any] | None = None,
    head: str = "gap",
    hidden_units: int = 0,
    dropout: float = 0.0,
    binary: bool = False,
    spp_levels: Sequence[int] = (4, 2, 1),
    variable_size: bool = False,
) -> keras.Model:
    """Builds a classifier: input → preprocessing → backbone layers → head → ``predictions``.

    Args:
        backbone: A registry name (``tfcam.models.BACKBONES``).
        num_classes: Number of classes (2 or more).
        image_size: Input side, or ``(height, width)``.
        weights: ``"imagenet"``, ``None``/``"none"`` (random) or a path to a weights file of the
            backbone without its top (``.weights.h5`` or legacy ``.h5``); for keras-hub
            backbones (:mod:`tfcam.models.hub`) also ``"hub:PRESET"`` (keras-hub downloads it)
            or a preset directory (``save_to_preset``), whose architecture replaces ``options``.
        options: Backbone options (e.g. ``{"alpha": 0.35}``), checked against the registry.
        head: ``"gap"`` (global average pooling), ``"avgmax"`` (average and max pooling,
            concatenated), ``"spp"`` (spatial pyramid pooling over ``spp_levels``) or
            ``"flatten"``; for transformers ``"token"`` (the class token) or ``"gap"`` (the mean
            of the patch tokens, class and register tokens left out).
        hidden_units: Size of a hidden dense layer (ReLU) in the head; 0 for none.
        dropout: Dropout rate before the output layer.
        binary: One sigmoid unit instead of a softmax (needs ``num_classes == 2``).
        spp_levels: Grid sizes of the ``spp`` head.
        variable_size: Take images of any size (``[N, None, None, 3]``, ``image_size`` is then
            only checked against the backbone's minimum): batches of native-size images padded
            with ``PAD_VALUE``, which a ``fill_padding`` layer sets to zero after preprocessing
            and the pooling head leaves out.

    Returns:
        An uncompiled functional ``keras.Model`` taking float images ``[N, H, W, 3]`` in [0, 255].

    Raises:
        UserError: Unknown backbone or option, missing weights file, weights that do not fit.
    """
    bb = get_backbone(backbone)
    opts = bb.resolve_options(options)
    if num_classes < 2:
        raise UserError(f"A classifier needs at least 2 classes, got {num_classes}")
    if binary and num_classes != 2:
        raise UserError(f"model.binary needs exactly 2 classes, got {num_classes}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(h, w) < bb.min_size:
        raise UserError(
            f"Backbone '{bb.name}' needs inputs of at least {bb.min_size} px, got {h}×{w}"
        )
    if variable_size and not bb.any_size:
        raise UserError(
            f"Backbone '{bb.name}'{' is a transformer: it' if bb.transformer else ''} needs a "
            "fixed input size, not images of any size "
            "(data.resize: native). Use stretch, pad or crop"
        )
    weights_arg = _weights_arg(weights, bb)

    inputs = keras.Input((None, None, 3) if variable_size else (h, w, 3), name="image")
    x = Preprocess(bb.preprocess, name="preprocess")(inputs)
    if variable_size:
        x = FillPadding(name="fill_padding")([x, inputs])
    ctor = _resolve(bb.constructor)
    head_kw = dict(
        hidden_units=hidden_units, dropout=dropout, binary=binary, num_classes=num_classes
    )
    if bb.transformer:
        if variable_size:
            raise UserError(
                f"Backbone '{bb.name}' is a transformer: it takes one fixed input size "
                "(data.resize native is not supported; use stretch, pad or crop)"
            )
        hub_source = weights_arg if weights_arg and not Path(weights_arg).is_file() else None
        features, prefix = ctor(x, image_hw=(h, w), options=opts, source=hub_source, name=bb.name)
        if weights_arg is not None and hub_source is None:
            _load_backbone_weights(inputs, features, weights_arg, bb)
        return _finish(inputs, _token_head(features, head, prefix, bb), bb, **head_kw)
    if bb.applications:
        from_file = weights_arg not in (None, "imagenet")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                base = ctor(
                    include_top=False,
                    weights=weights_arg,
                    input_tensor=x,
                    **bb.constructor_args,
                    **opts,
                )
            except ValueError as e:
                if from_file:
                    first = str(e).strip().splitlines()[0][:300]
                    raise UserError(
                        f"Weights file '{weights}' does not fit backbone '{bb.name}' with options {opts}: {first}"
                    ) from None
                _reject_options(e, bb, options, weights_arg)
                raise
        skipped = [
            w for w in caught if "Skipping" in str(w.message) or "mismatch" in str(w.message)
        ]
        if from_file and skipped:
            raise UserError(
                f"Weights file '{weights}' does not fit backbone '{bb.name}' with options {opts}: "
                f"{len(skipped)} parts of it did not load ({str(skipped[0].message).splitlines()[0][:200]})"
            )
        for w in caught:
            if w not in skipped:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        features = base.output
        if bb.output_name:  # Keras left it unnamed (activation_<n>): a name that does not drift
            base.layers[-1].name = bb.output_name
    else:
        try:
            features = ctor(x, **opts)
        except ValueError as e:
            _reject_options(e, bb, options, weights_arg)
            raise
        if weights_arg is not None:
            _load_backbone_weights(inputs, features, weights_arg, bb)

    pooled_in = [features, inputs] if variable_size else features
    if head == "gap" and not variable_size:
        y = layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(features)
    elif head in ("gap", "avgmax"):
        mode = "avg" if head == "gap" else "avgmax"
        y = GlobalPool(mode, name=f"{HEAD_PREFIX}pool")(pooled_in)
    elif head == "spp":
        y = SpatialPyramidPooling(spp_levels, name=f"{HEAD_PREFIX}pool")(pooled_in)
    elif head == "flatten" and variable_size:
        raise UserError("head 'flatten' needs a fixed input size; use spp, gap or avgmax")
    elif head == "flatten":
        y = layers.Flatten(name=f"{HEAD_PREFIX}flatten")(features)
    elif head == "token":
        raise UserError(
            f"head 'token' (the class token) needs a transformer backbone (vit_*, dinov2_*); "
            f"'{bb.name}' is a CNN. Choose from: gap, avgmax, spp, flatten"
        )
    else:
        raise UserError(f"Unknown head '{head}'. Choose from: gap, avgmax, spp, flatten, token")
    return _finish(inputs, y, bb, **head_kw)


def _token_head(tokens, head: str, prefix: int, bb: Backbone):
    """The head's vector from a token sequence: the class token or the mean of the patches."""
    if head == "token" and prefix < 1:
        raise UserError(f"head 'token': this '{bb.name}' has no class token; use head gap")
    if head == "token":
        return TokenPool("token", prefix, name=f"{HEAD_PREFIX}token")(tokens)
    if head == "gap":
        return TokenPool("mean", prefix, name=f"{HEAD_PREFIX}pool")(tokens)
    raise UserError(
        f"Backbone '{bb.name}' is a transformer: head '{head}' does not apply. Choose from: "
        "token (class token), gap (mean of the patch tokens)"
    )


def _finish(inputs, y, bb: Backbone, *, hidden_units, dropout, binary, num_classes):
    """Hidden layer, dropout and ``predictions`` after the pooled vector."""
    if hidden_units:
        y = layers.Dense(hidden_units, activation="relu", name=f"{HEAD_PREFIX}dense")(y)
    if dropout:
        y = layers.Dropout(dropout, name=f"{HEAD_PREFIX}dropout")(y)
    # The output stays float32 under a mixed-precision policy (a float16 softmax loses precision).
    if binary:
        outputs = layers.Dense(1, activation="sigmoid", name=OUTPUT_NAME, dtype="float32")(y)
    else:
        outputs = layers.Dense(
            num_classes, activation="softmax", name=OUTPUT_NAME, dtype="float32"
        )(y)
    model = keras.Model(inputs, outputs, name=f"{bb.name}_classifier")
    # ConvNeXt builds its stem and downsampling blocks as Sequential models: inlined, so that
    # their layers too are reachable by name (the flat-graph guarantee above).
    return flatten_model(model) if is_nested(model) else model


def _reject_options(
    e: ValueError, bb: Backbone, given: Mapping[str, Any] | None, weights: str | None
) -> None:
    """Keras checks some option values only when it builds the network (MobileNetV2's ``alpha``
    with ImageNet weights must be one of the published widths): when the user set options, its
    error becomes one line naming them and what Keras allows. Otherwise it is a bug: returns."""
    given = {k: v for k, v in (given or {}).items() if bb.options.get(k) != v}
    if not given:
        return
    shown = ", ".join(f"model.options.{k}={v!r}" for k, v in given.items())
    with_weights = " with ImageNet weights" if weights == "imagenet" else ""
    raise UserError(
        f"Backbone '{bb.name}'{with_weights} does not take {shown}: {first_line(e, 300)}"
    ) from None


def _load_backbone_weights(inputs, features, path: str, bb: Backbone) -> None:
    backbone_model = keras.Model(inputs, features)
    try:
        backbone_model.load_weights(path)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:300]
        raise UserError(
            f"Weights file '{path}' does not fit backbone '{bb.name}': {first}"
        ) from None


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's layers, in topological order (everything but input, preprocess and head)."""
    return [
        layer
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
        and layer.name not in ("preprocess", "fill_padding")
        and layer.name != OUTPUT_NAME
        and not layer.name.startswith(HEAD_PREFIX)
    ]


def set_backbone_trainable(
    model: keras.Model,
    trainable: bool,
    *,
    from_layer: str | None = None,
    top: int = 0,
    train_batchnorm: bool = False,
) -> int:
    """Freezes or unfreezes the backbone; the head stays trainable.

    With ``trainable=True`` and ``from_layer`` or ``top``, only the layers from ``from_layer`` on,
    or the last ``top`` layers, are unfrozen. Batch normalisation layers stay frozen (and so run
    in inference mode) unless ``train_batchnorm``: fine-tuning with batch statistics of small
    batches would wreck the pretrained statistics.

    Args:
        model: A model from :func:`build_classifier`.
        trainable: Unfreeze (True) or freeze (False).
        from_layer: Name of the first backbone layer to unfreeze.
        top: Number of backbone layers (counted from the top) to unfreeze.
        train_batchnorm: Let batch normalisation layers train too.

    Returns:
        The number of backbone layers left trainable.

    Raises:
        UserError: ``from_layer`` is not a backbone layer.
    """
    bl = backbone_layers(model)
    start = 0
    if trainable and from_layer is not None:
        names = [layer.name for layer in bl]
        if from_layer not in names:
            raise UserError(choices_message("layer", from_layer, names[::-1], limit=30))
        start = names.index(from_layer)
    elif trainable and top:
        start = max(len(bl) - top, 0)
    n = 0
    for i, layer in enumerate(bl):
        on = trainable and i >= start
        if isinstance(layer, keras.layers.BatchNormalization) and not train_batchnorm:
            on = False
        layer.trainable = on
        n += int(on)
    for layer in model.layers:
        if layer.name == OUTPUT_NAME or layer.name.startswith(HEAD_PREFIX):
            layer.trainable = True
    return n


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a ``.keras`` model saved by tfcam (or any Keras 3 model).

    Raises:
        UserError: The file is missing, or it is damaged or not a Keras model (empty, truncated,
            bytes changed, a layer class nobody registered): one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Model file not found: '{path}'")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found", which misleads
        kind = "empty" if path.stat().st_size == 0 else "not a .keras zip archive (or truncated)"
        raise damaged(path, f"the file is {kind}", "model file")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()  # checks every member's CRC: flipped or zeroed bytes show here
            if bad is not None:
                raise damaged(path, f"'{bad}' inside it fails its checksum", "model file")
            if _uses_keras_hub(z):
                import tfcam.models.hub_graph  # noqa: F401 - keras_hub and tfcam's ViT layers
        return keras.saving.load_model(path, compile=False)
    except UserError:
        raise
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile, EOFError) as e:
        # What Keras raises for a config it cannot rebuild (an unknown class is a TypeError whose
        # first line only says "could not be deserialized") or weights that do not read.
        unknown = re.search(r"Could not locate (class|function) '([^']+)'", str(e))
        if unknown:
            raise damaged(
                path,
                f"it uses a {unknown[1]} '{unknown[2]}' that neither Keras nor tfcam defines",
                "model file",
            ) from None
        raise damaged(path, e, "model file") from None


def _uses_keras_hub(z: zipfile.ZipFile) -> bool:
    """Whether a ``.keras`` archive holds keras-hub layers (a ViT classifier): they need
    keras_hub imported, and tfcam's subclasses of them registered, before Keras rebuilds it."""
    try:
        config = z.read("config.json")
    except KeyError:
        return False
    return b'"keras_hub.' in config or b'"tfcam>ViT' in config or b'"tfcam>DINOv2' in config


def load_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """``model.load_weights(path)`` for a checkpoint tfcam wrote.

    Raises:
        UserError: The file is damaged (truncated, bytes changed, another model's): one line
            naming it.
    """
    try:
        model.load_weights(str(path))
    except (OSError, ValueError, KeyError) as e:  # h5py's "truncated file", shape mismatches
        raise damaged(path, e, "checkpoint") from None
