"""The backbone registry: one entry per supported network, keyed by name.

This module does not import TensorFlow: the CLI validates names and options with it before
anything heavy is loaded. Each entry names its constructor by import path; ``build.py`` resolves
it when a model is actually built. The rows are data: every ``keras.applications`` constructor is
a line of :mod:`tfcam.models.applications`, tfcam's own networks are the two rows at the end, and
a row from another source (``source="keras-hub"``) is one more :func:`register` call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tfcam.errors import UserError, choices_message

#: Pixel normalisations applied inside the model (the model takes raw 0–255 RGB).
#: ``tf``: [-1, 1]; ``caffe``: RGB→BGR and ImageNet mean subtracted; ``torch``: [0, 1] then
#: ImageNet mean/std; ``cifar``: [0, 1] then CIFAR-10 mean/std; ``unit``: [0, 1]; ``tf128``:
#: ``x / 128 - 1`` (EfficientNetV2 S/M/L); ``none``: the network normalises by itself
#: (EfficientNet V1, whose normalisation cannot be switched off).
PREPROCESS_MODES = ("tf", "caffe", "torch", "cifar", "unit", "tf128", "none")

#: Where a backbone's constructor comes from (the ``source`` column of ``tfcam backbones``).
SOURCES = ("keras.applications", "tfcam", "keras-hub")


@dataclass(frozen=True)
class Backbone:
    """What tfcam knows about one backbone.

    Attributes:
        name: Registry key.
        constructor: ``"module:function"``; keras.applications style (``include_top``, ``weights``,
            ``input_tensor``) when ``applications`` is true, otherwise ``fn(x, **options)`` that
            applies layers to the symbolic tensor ``x`` and returns the feature tensor.
        preprocess: One of ``PREPROCESS_MODES``: what tfcam's ``preprocess`` layer does (the
            family's ``preprocess_input``, or what its own switched-off layers did).
        cam_layer: Default layer for CAM methods (the last convolutional feature map).
        early_layer: An early convolutional layer, for feature-map galleries and tests.
        last_stage: The first layer of the network's last stage (its last block of the lowest
            resolution, or the last two for Inception): where fine-tuning starts when an
            experiment names no layer (``train.fine_tune.unfreeze_from``), so that switching
            backbones keeps a sensible fine-tuning point.
        default_size: The input size the network was designed for.
        min_size: The smallest input side: the larger of Keras's own minimum and the smallest
            side the network builds at (its valid convolutions leave at least one cell).
        options: Extra constructor arguments the user may set, with their defaults
            (``--set model.options.alpha=0.35``).
        applications: Whether the constructor follows the keras.applications signature.
        imagenet: Whether ``weights="imagenet"`` is available.
        description: One line for listings.
        family: The architecture family (``ResNet``, ``ConvNeXt`` …; ``vit``, ``dinov2`` for the
            keras-hub rows of :mod:`tfcam.models.hub`), for listings.
        source: One of ``SOURCES``; by default ``keras.applications`` when ``applications`` is
            true, else ``tfcam``.
        params: Parameters of the network without its top at the default options (as
            ``count_params()`` counts them, batch-norm statistics included), measured once and
            stored, so a listing needs no model built; 0 when unknown.
        constructor_args: Arguments tfcam always passes to the constructor and the user cannot
            set (``include_preprocessing=False``: see :mod:`tfcam.models.applications`).
        output_name: A stable name for the network's output layer when Keras leaves it unnamed
            (ConvNeXt's last ``LayerNormalization``, the last activation of MobileNetV3 and
            NASNet would be ``layer_normalization_<n>``, ``activation_<n>``: numbers that
            depend on what was built before in the process).
        paper: The paper that introduced the network.
        any_size: Whether the network takes images of any size (``data.resize: native``, an
            input of ``[N, None, None, 3]``). NASNet does not: its cells compare the shapes of
            their two inputs when built, and with unknown sides they fail when run.
    """

    name: str
    constructor: str
    preprocess: str
    cam_layer: str
    early_layer: str
    default_size: int
    min_size: int
    options: Mapping[str, Any] = field(default_factory=dict)
    last_stage: str = ""
    applications: bool = True
    imagenet: bool = True
    description: str = ""
    family: str = ""
    source: str = ""
    params: int = 0
    constructor_args: Mapping[str, Any] = field(default_factory=dict)
    output_name: str = ""
    paper: str = ""
    any_size: bool = True

    @property
    def transformer(self) -> bool:
        """A token-sequence backbone (keras-hub ViT / DINOv2): class-token heads, ``block_<i>``."""
        return self.source == "keras-hub"

    def __post_init__(self) -> None:
        if not self.last_stage:
            raise ValueError(f"{self.name}: last_stage (where fine-tuning starts) is required")
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"{self.name}: unknown preprocess mode {self.preprocess!r}")
        if not self.source:
            object.__setattr__(
                self, "source", "keras.applications" if self.applications else "tfcam"
            )
        if self.source not in SOURCES:
            raise ValueError(f"{self.name}: unknown source {self.source!r}")
        if set(self.options) & set(self.constructor_args):
            raise ValueError(f"{self.name}: an option cannot also be a fixed constructor argument")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "constructor_args", MappingProxyType(dict(self.constructor_args)))

    def resolve_options(self, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """Merges user options over the defaults, checking names and types.

        Raises:
            UserError: An option this backbone does not take, or a value of the wrong type.
        """
        merged = dict(self.options)
        for key, value in (given or {}).items():
            if key not in self.options:
                allowed = ", ".join(self.options) or "none"
                raise UserError(
                    f"Backbone '{self.name}' takes no option '{key}'. "
                    f"Received: model.options.{key}={value!r}. Options it takes: {allowed}"
                )
            default = self.options[key]
            if (
                isinstance(default, float)
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                value = float(value)
            if not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(
                default, bool
            ):
                raise UserError(
                    f"Invalid value for model.options.{key}: {value!r} "
                    f"(expected {type(default).__name__}, like {default!r})"
                )
            merged[key] = value
        return merged


BACKBONES: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    """Adds a backbone to the registry (names are unique)."""
    if backbone.name in BACKBONES:
        raise ValueError(f"Backbone {backbone.name!r} is registered twice")
    BACKBONES[backbone.name] = backbone
    return backbone


def get_backbone(name: str) -> Backbone:
    """Looks a backbone up by name.

    Raises:
        UserError: The name is not registered; the message names the nearest registered names
            and ``tfcam backbones``, which lists them all.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(
            choices_message("backbone", name, sorted(BACKBONES), limit=8, listing="tfcam backbones")
        ) from None


def _from_table() -> list[Backbone]:
    """The ``keras.applications`` rows of :mod:`tfcam.models.applications` as backbones."""
    from tfcam.models.applications import FAMILIES, MODELS, OVERRIDES

    rows = []
    for name, constructor, family, default_size, min_size, params in MODELS:
        fields = {**FAMILIES[family], **OVERRIDES.get(name, {})}
        fields = {k: v.format(name=name) if isinstance(v, str) else v for k, v in fields.items()}
        cite = fields["paper"].split(",")[0]
        rows.append(
            Backbone(
                name=name,
                constructor=f"keras.applications:{constructor}",
                family=family,
                default_size=default_size,
                min_size=min_size,
                params=params,
                description=f"{constructor} ({cite}), {params / 1e6:.1f} M parameters without top",
                **fields,
            )
        )
    return rows


for _row in _from_table():
    register(_row)

register(
    Backbone(
        "resnet18_cifar",
        "tfcam.models.resnet_cifar:resnet18_cifar",
        "cifar",
        "layer4_block2_out",
        "stem_relu",
        32,
        8,
        applications=False,
        imagenet=False,
        last_stage="layer4_block1_1_conv",
        family="ResNet",
        params=11_178_432,
        paper="He et al. 2016, as laid out by the pytorch-cifar repository",
        description="ResNet-18 for 32 px inputs, as in the pytorch-cifar repository",
    )
)
register(
    Backbone(
        "simple_cnn",
        "tfcam.models.simple_cnn:simple_cnn",
        "unit",
        "block4_relu",
        "block1_relu",
        64,
        16,
        options={"width": 16},
        applications=False,
        imagenet=False,
        last_stage="block4_conv1",
        family="CNN",
        params=246_128,
        description="A small VGG-style CNN for training from scratch on small images",
    )
)


def rows() -> list[dict[str, Any]]:
    """One plain dict per backbone, as ``tfcam backbones --json`` prints them: name, family,
    source, parameters (without top), default and smallest input size, preprocessing, the
    explanation, early and last-stage layers, options and their defaults, description."""
    return [
        {
            "name": bb.name,
            "family": bb.family,
            "source": bb.source,
            "parameters": bb.params,
            "default_size": bb.default_size,
            "min_size": bb.min_size,
            "preprocess": bb.preprocess,
            "explanation_layer": bb.cam_layer,
            "early_layer": bb.early_layer,
            "last_stage": bb.last_stage,
            "options": dict(bb.options),
            "imagenet": bb.imagenet,
            "any_size": bb.any_size,
            "paper": bb.paper,
            "description": bb.description,
        }
        for bb in BACKBONES.values()
    ]


def options_text(options: Mapping[str, Any]) -> str:
    """Options and their defaults on one line: ``alpha=1.0, minimalistic=False``."""
    return ", ".join(f"{k}={v!r}" for k, v in options.items())


def markdown_table() -> str:
    """The backbone table of the README (``tfcam backbones --markdown``), one row per backbone."""
    lines = [
        "| name | family | source | parameters | size | explanation layer | options |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for r in rows():
        opts = options_text(r["options"])
        lines.append(
            f"| `{r['name']}` | {r['family']} | {r['source']} | {r['parameters'] / 1e6:.1f} M "
            f"| {r['default_size']} (≥ {r['min_size']}) | `{r['explanation_layer']}` "
            f"| {f'`{opts}`' if opts else ''} |"
        )
    return "\n".join(lines) + "\n"
