"""keras-hub Vision Transformers as flat token graphs inside a tfcam classifier.

keras-hub's backbones hide their blocks inside one ``ViTEncoder`` (or ``DINOV2Encoder``) layer, and
reusing the layers of a built backbone would give each of them a first call node in the backbone's
own graph (so ``layer.output`` would point there: "Graph disconnected"). So the classifier applies
fresh instances of keras-hub's own layer classes to its input tensor, one per role, named
``patch_embedding``, ``block_1`` … ``block_<L>``, ``encoder_norm``; a preset's weights are copied
into them from the backbone keras-hub loads, so the outputs are the preset's (acceptance 4 of
issue 16 compares them).

Three of keras-hub 0.32's layers need a small subclass (registered as ``tfcam>…``): the configs
of ``ViTPatchingAndEmbedding`` and ``ViTEncoderBlock`` list arguments their constructors do not
take (``num_patches``, ``key_dim``), so a saved ``model.keras`` would not load, and
``DINOV2Embedding`` computes its output shape for square inputs only.

Importing this module imports keras_hub; without it, one line says how to install the extra.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras

from tfcam.errors import UserError, choices_message, first_line
from tfcam.models.hub import INSTALL_HINT, PRESET_PREFIX, preset_name

try:
    import keras_hub
    from keras_hub.src.models.dinov2 import dinov2_layers
    from keras_hub.src.models.vit import vit_layers
except ImportError:  # the optional extra [hub]
    raise UserError(INSTALL_HINT) from None


@keras.saving.register_keras_serializable(package="tfcam")
class ViTEmbedding(vit_layers.ViTPatchingAndEmbedding):
    """keras-hub's ViT patch embedding (patches → linear projection, class token, learned
    position embeddings), with a config its constructor takes back: keras-hub 0.32 adds
    ``num_patches`` and ``num_positions`` (derived values the constructor rejects) and leaves
    out ``use_patch_bias``.

    ``num_register_tokens`` (tfcam's, random weights only) appends that many learned tokens after
    the class token, with no position embedding, as DINOv2 with registers does (Darcet et al.,
    "Vision Transformers Need Registers", ICLR 2024): without them a ViT stores its global
    information in low-information background tokens, which then carry the class.
    """

    def __init__(self, *args, num_register_tokens: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_register_tokens = int(num_register_tokens)

    def build(self, input_shape):
        super().build(input_shape)
        if self.num_register_tokens:
            self.register_tokens = self.add_weight(
                shape=(1, self.num_register_tokens, self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                dtype=self.variable_dtype,
                name="register_tokens",
            )

    def call(self, inputs):
        tokens = super().call(inputs)
        if not self.num_register_tokens:
            return tokens
        first = int(self.use_class_token)
        registers = keras.ops.tile(self.register_tokens, (keras.ops.shape(tokens)[0], 1, 1))
        registers = keras.ops.cast(registers, tokens.dtype)
        return keras.ops.concatenate([tokens[:, :first], registers, tokens[:, first:]], axis=1)

    def compute_output_shape(self, input_shape):
        n, length, d = super().compute_output_shape(input_shape)
        return (n, None if length is None else length + self.num_register_tokens, d)

    def get_config(self):
        config = super().get_config()
        config.pop("num_patches", None)
        config.pop("num_positions", None)
        config["use_patch_bias"] = self.use_patch_bias
        config["data_format"] = self.data_format
        config["num_register_tokens"] = self.num_register_tokens
        return config


@keras.saving.register_keras_serializable(package="tfcam")
class ViTBlock(vit_layers.ViTEncoderBlock):
    """keras-hub's pre-norm ViT encoder block (LayerNorm → multi-head self-attention → residual,
    LayerNorm → MLP → residual), with a config its constructor takes back (keras-hub 0.32 adds
    ``key_dim``, which it derives)."""

    def get_config(self):
        config = super().get_config()
        config.pop("key_dim", None)
        return config


@keras.saving.register_keras_serializable(package="tfcam")
class DINOv2Embedding(dinov2_layers.DINOV2Embedding):
    """keras-hub's DINOv2 embedding (patches, class token, interpolated position embeddings,
    register tokens after the class token), with the output length of non-square inputs:
    keras-hub 0.32 counts ``(H / p)²`` patches whatever the width."""

    def compute_output_shape(self, input_shape):
        if self.data_format == "channels_last":
            h, w = input_shape[1], input_shape[2]
        else:
            h, w = input_shape[2], input_shape[3]
        n = None
        if h is not None and w is not None:
            n = 1 + self.num_register_tokens + (h // self.patch_size) * (w // self.patch_size)
        return [input_shape[0], n, self.hidden_dim]


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _check_size(image_hw, patch, name: str) -> None:
    h, w = image_hw
    ph, pw = patch
    if h % ph or w % pw:
        fit = f"{max(ph, h // ph * ph)}×{max(pw, w // pw * pw)}"
        raise UserError(
            f"Input size {h}×{w} is not divisible by the {ph}×{pw} px patches of backbone "
            f"'{name}'. Use a multiple of the patch size (data.image_size), e.g. {fit}, or "
            "another model.options.patch_size"
        )


# --------------------------------------------------------------------------------------------
# Presets


def load_preset(source: str, expected: str, name: str):
    """The keras-hub backbone of a preset name (``hub:PRESET``) or a local preset directory.

    Args:
        source: ``hub:PRESET`` or a directory written by ``Backbone.save_to_preset``.
        expected: The keras-hub class the registry row builds (``ViTBackbone``).
        name: The registry row, for messages.

    Raises:
        UserError: The preset does not load (offline, unknown name, damaged directory) or is of
            another family: one line naming it and the cause.
    """
    preset = preset_name(source)
    if preset is None:
        path = Path(source).expanduser()
        if not (path / "config.json").is_file():
            raise UserError(
                f"Weights directory '{source}' is not a keras-hub preset (no config.json in it). "
                "Use a directory written by Backbone.save_to_preset, hub:PRESET, none or a file"
            )
        preset, shown = str(path), f"preset directory '{source}'"
    else:
        shown = f"keras-hub preset '{preset}'"
        known = getattr(keras_hub.models, expected).presets
        if "://" not in preset and preset not in known:
            raise UserError(choices_message(f"keras-hub {expected} preset", preset, sorted(known)))
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except Exception as e:  # network, unknown name, damaged files: the user's to fix
        raise UserError(f"Could not load {shown}: {type(e).__name__}: {first_line(e)}") from None
    got = type(backbone).__name__
    if got != expected:
        raise UserError(
            f"The {shown} is a {got}; backbone '{name}' takes {expected} presets. "
            "Choose a model.backbone of the preset's family (vit_* or dinov2_*)"
        )
    return backbone


def _copy(dst: keras.layers.Layer, src: keras.layers.Layer) -> None:
    dst.set_weights(src.get_weights())


def _blocks_and_norm(t, block_class, n, epsilon: float, **kwargs):
    """``block_1`` … ``block_<n>`` (instances of ``block_class``), then ``encoder_norm``, applied
    to the tokens ``t``; returns the normalised tokens, the blocks and the norm."""
    blocks = [block_class(**kwargs, name=f"block_{i + 1}") for i in range(int(n))]
    for block in blocks:
        t = block(t)
    norm = keras.layers.LayerNormalization(epsilon=epsilon, name="encoder_norm")
    return norm(t), blocks, norm


def stem_layers(spec, name: str) -> list[tuple[int, int]]:
    """``model.options.stem`` as ``(width, stride)`` pairs: an entry ``W`` is a stride-2
    convolution of ``W`` channels, ``[W, 1]`` one of stride 1 (``[W, 2]`` is ``W``).

    Raises:
        UserError: Anything else, in one line with an example.
    """

    def count(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    pairs = []
    for item in spec if isinstance(spec, (list, tuple)) else [None]:
        if count(item):
            pairs.append((item, 2))
        elif (
            isinstance(item, (list, tuple))
            and len(item) == 2
            and count(item[0])
            and item[1] in (1, 2)
            and not isinstance(item[1], bool)
        ):
            pairs.append((int(item[0]), int(item[1])))
        else:
            raise UserError(
                f"Invalid value for model.options.stem of backbone '{name}': {spec!r} (expected "
                "a list of channel counts, one per 3×3 convolution of stride 2, or [width, 1] "
                "for stride 1, like [16, 32, 64] or [[32, 1], 32, 64]; [] for none)"
            )
    return pairs


def conv_stem(x, pairs, name: str):
    """A convolutional stem (Xiao et al. 2021, "Early Convolutions Help Transformers See
    Better"): per ``(width, stride)`` of :func:`stem_layers`, a 3×3 convolution without bias,
    batch normalisation and ReLU, named ``stem_conv_<i>``, ``stem_bn_<i>``, ``stem_relu_<i>``."""
    for i, (width, stride) in enumerate(pairs, start=1):
        x = keras.layers.Conv2D(
            width, 3, strides=stride, padding="same", use_bias=False, name=f"stem_conv_{i}"
        )(x)
        x = keras.layers.BatchNormalization(name=f"stem_bn_{i}")(x)
        x = keras.layers.ReLU(name=f"stem_relu_{i}")(x)
    return x


# --------------------------------------------------------------------------------------------
# The two families


def vit_tokens(x, *, image_hw, options, source=None, name="vit"):
    """ViT (Dosovitskiy et al. 2021) applied to ``x`` (preprocessed pixels ``[N, H, W, 3]``).

    Args:
        x: The symbolic input of the backbone.
        image_hw: ``(H, W)``, each divisible by the patch size (times the stem's stride).
        options: The registry row's resolved options (used without a preset); ``stem`` adds
            :func:`conv_stem` before the patch embedding.
        source: ``hub:PRESET`` or a preset directory; None for random weights.
        name: The registry row, for messages.

    Returns:
        ``(tokens, prefix)``: the ``encoder_norm`` output ``[N, prefix + gh·gw, D]`` and the
        number of tokens before the patches (1, the class token; 0 without one).
    """
    preset = load_preset(source, "ViTBackbone", name) if source else None
    if preset is not None:
        c = preset.get_config()
        trained = tuple(int(s) for s in c["image_shape"][:2])
        if trained != tuple(image_hw):
            raise UserError(
                f"The ViT preset '{source.removeprefix(PRESET_PREFIX)}' was trained at "
                f"{trained[0]}×{trained[1]}; keras-hub's ViT position embeddings do not "
                f"interpolate: set data.image_size={trained[0]} (got {image_hw[0]}×{image_hw[1]})"
            )
        if options.get("stem"):
            raise UserError(
                f"model.options.stem builds a convolutional stem with random weights; the "
                f"preset '{source.removeprefix(PRESET_PREFIX)}' has none. Leave the option out "
                "(or use model.weights=none)"
            )
        if options.get("num_register_tokens"):
            raise UserError(
                f"model.options.num_register_tokens adds register tokens with random weights; "
                f"the ViT preset '{source.removeprefix(PRESET_PREFIX)}' has none. Leave the "
                "option out (or use model.weights=none, or a dinov2_reg_* backbone)"
            )
    else:
        c = {**options, "dropout_rate": 0.0, "attention_dropout": 0.0}
        c.update(layer_norm_epsilon=1e-6, use_mha_bias=True, use_mlp_bias=True)
        c.update(use_class_token=True, use_patch_bias=True)
    patch = _pair(c["patch_size"])
    registers = int(c.get("num_register_tokens", 0) or 0)
    if registers < 0:
        raise UserError(
            f"Invalid value for model.options.num_register_tokens: {registers} (0 or more)"
        )
    stem = stem_layers(c.get("stem", []), name)
    stride = math.prod(s for _, s in stem)
    _check_size(image_hw, (patch[0] * stride, patch[1] * stride), name)
    channels = 3
    if stem:
        x = conv_stem(x, stem, name)
        image_hw = (image_hw[0] // stride, image_hw[1] // stride)
        channels = stem[-1][0]
    emb = ViTEmbedding(
        image_size=tuple(image_hw),
        patch_size=patch,
        hidden_dim=c["hidden_dim"],
        num_channels=channels,
        use_class_token=c["use_class_token"],
        use_patch_bias=c["use_patch_bias"],
        num_register_tokens=registers,
        name="patch_embedding",
    )
    t = emb(x)
    if c["dropout_rate"]:
        t = keras.layers.Dropout(c["dropout_rate"], name="embedding_dropout")(t)
    t, blocks, norm = _blocks_and_norm(
        t,
        ViTBlock,
        c["num_layers"],
        c["layer_norm_epsilon"],
        num_heads=c["num_heads"],
        hidden_dim=c["hidden_dim"],
        mlp_dim=c["mlp_dim"],
        use_mha_bias=c["use_mha_bias"],
        use_mlp_bias=c["use_mlp_bias"],
        dropout_rate=c["dropout_rate"],
        attention_dropout=c["attention_dropout"],
        layer_norm_epsilon=c["layer_norm_epsilon"],
    )
    if preset is not None:
        encoder = preset.get_layer("vit_encoder")
        _copy(emb, preset.get_layer("vit_patching_and_embedding"))
        for block, src in zip(blocks, encoder.encoder_layers, strict=True):
            _copy(block, src)
        _copy(norm, encoder.layer_norm)
    return t, int(bool(c["use_class_token"])) + registers


def dinov2_tokens(x, *, image_hw, options, source=None, name="dinov2"):
    """DINOv2 (Oquab et al. 2024), with register tokens when it has them (Darcet et al. 2024).

    Arguments and result as :func:`vit_tokens`; the prefix is 1 + the number of registers. A
    preset's position embeddings are interpolated to ``image_hw`` as keras-hub does (bicubic),
    non-square sizes included.
    """
    preset = load_preset(source, "DINOV2Backbone", name) if source else None
    if preset is not None:
        c = preset.get_config()
        pos_shape = tuple(int(s) for s in c["position_embedding_shape"][:2])
    else:
        c = {**options, "intermediate_dim": options["mlp_dim"], "layer_scale_init_value": 1.0}
        c.update(use_mask_token=False, use_swiglu_ffn=False, dropout_rate=0.0)
        c.update(drop_path_rate=0.0, antialias_in_interpolation=False)
        pos_shape = tuple(image_hw)  # trained at this size: nothing to interpolate
    patch = int(c["patch_size"])
    _check_size(image_hw, (patch, patch), name)
    emb = DINOv2Embedding(
        hidden_dim=c["hidden_dim"],
        patch_size=patch,
        image_shape=tuple(image_hw),
        num_register_tokens=c["num_register_tokens"],
        use_mask_token=c["use_mask_token"],
        dropout_rate=c["dropout_rate"],
        position_embedding_shape=pos_shape,
        antialias_in_interpolation=c["antialias_in_interpolation"],
        name="patch_embedding",
    )
    t = emb(x)
    t, blocks, norm = _blocks_and_norm(
        t,
        dinov2_layers.DINOV2Layer,
        c["num_layers"],
        1e-6,  # keras-hub's DINOv2 layer norms
        hidden_dim=c["hidden_dim"],
        num_heads=c["num_heads"],
        intermediate_dim=c["intermediate_dim"],
        layer_scale_init_value=c["layer_scale_init_value"],
        use_swiglu_ffn=c["use_swiglu_ffn"],
        dropout_rate=c["dropout_rate"],
        drop_path_rate=c["drop_path_rate"],
    )
    if preset is not None:
        src = preset.embeddings
        for v, w in zip(emb.weights, src.weights, strict=True):
            if v is not emb.interpolated_position_embeddings:
                v.assign(w)
        emb.interpolated_position_embeddings.assign(
            emb._interpolate_position_embeddings(
                emb.position_embeddings,
                patch_size=emb.patch_size,
                source_shape=emb.position_embedding_shape,
                target_shape=emb.image_shape,
                antialias=emb.antialias_in_interpolation,
            )
        )
        for block, layer in zip(blocks, preset.encoder.layers, strict=True):
            _copy(block, layer)
        _copy(norm, preset.layernorm)
    return t, 1 + int(c["num_register_tokens"])
