"""The backbone registry: one entry per supported network, keyed by name.

This module does not import TensorFlow: the CLI validates names and options with it before
anything heavy is loaded. Each entry names its constructor by import path; ``build.py`` resolves
it when a model is actually built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tfcam.errors import UserError, choices_message

#: Pixel normalisations applied inside the model (the model takes raw 0–255 RGB).
#: ``tf``: [-1, 1]; ``caffe``: RGB→BGR and ImageNet mean subtracted; ``torch``: [0, 1] then
#: ImageNet mean/std; ``cifar``: [0, 1] then CIFAR-10 mean/std; ``unit``: [0, 1]; ``none``: the
#: network normalises by itself (EfficientNet).
PREPROCESS_MODES = ("tf", "caffe", "torch", "cifar", "unit", "none")


@dataclass(frozen=True)
class Backbone:
    """What tfcam knows about one backbone.

    Attributes:
        name: Registry key.
        constructor: ``"module:function"``; keras.applications style (``include_top``, ``weights``,
            ``input_tensor``) when ``applications`` is true, otherwise ``fn(x, **options)`` that
            applies layers to the symbolic tensor ``x`` and returns the feature tensor.
        preprocess: One of ``PREPROCESS_MODES``: what ``preprocess_input`` of the family does.
        cam_layer: Default layer for CAM methods (the last convolutional feature map).
        early_layer: An early convolutional layer, for feature-map galleries and tests.
        last_stage: The first layer of the network's last stage (its last block of the lowest
            resolution, or the last two for Inception): where fine-tuning starts when an
            experiment names no layer (``train.fine_tune.unfreeze_from``), so that switching
            backbones keeps a sensible fine-tuning point.
        default_size: The input size the network was designed for.
        min_size: The smallest input size the constructor accepts.
        options: Extra constructor arguments the user may set, with their defaults
            (``--set model.options.alpha=0.35``).
        applications: Whether the constructor follows the keras.applications signature.
        imagenet: Whether ``weights="imagenet"`` is available.
        description: One line for listings.
        family: The architecture family (``vit``, ``dinov2``; empty for the rest).
        source: Where the constructor comes from: ``keras-hub`` for the Vision Transformers of
            :mod:`tfcam.models.hub` (their rows live there), empty for keras.applications and
            tfcam's own networks.
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

    @property
    def transformer(self) -> bool:
        """A token-sequence backbone (keras-hub ViT / DINOv2): class-token heads, ``block_<i>``."""
        return self.source == "keras-hub"

    def __post_init__(self) -> None:
        if not self.last_stage:
            raise ValueError(f"{self.name}: last_stage (where fine-tuning starts) is required")
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(f"{self.name}: unknown preprocess mode {self.preprocess!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

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
        UserError: The name is not registered; the message lists the registered names.
    """
    try:
        return BACKBONES[name]
    except KeyError:
        raise UserError(choices_message("backbone", name, sorted(BACKBONES))) from None


_APPS = "keras.applications"

register(
    Backbone(
        "vgg16",
        f"{_APPS}:VGG16",
        "caffe",
        "block5_conv3",
        "block1_conv2",
        224,
        32,
        last_stage="block5_conv1",
        description="VGG16 (Simonyan & Zisserman 2015), 14.7 M parameters without top",
    )
)
register(
    Backbone(
        "vgg19",
        f"{_APPS}:VGG19",
        "caffe",
        "block5_conv4",
        "block1_conv2",
        224,
        32,
        last_stage="block5_conv1",
        description="VGG19, 20.0 M parameters without top",
    )
)
register(
    Backbone(
        "resnet50",
        f"{_APPS}:ResNet50",
        "caffe",
        "conv5_block3_out",
        "conv1_relu",
        224,
        32,
        last_stage="conv5_block1_1_conv",
        description="ResNet50 (He et al. 2016), 23.6 M parameters without top",
    )
)
register(
    Backbone(
        "mobilenet_v2",
        f"{_APPS}:MobileNetV2",
        "tf",
        "out_relu",
        "block_1_expand_relu",
        224,
        32,
        options={"alpha": 1.0},
        last_stage="block_13_expand",
        description="MobileNetV2 (Sandler et al. 2018); option alpha (width multiplier)",
    )
)
register(
    Backbone(
        "mobilenet",
        f"{_APPS}:MobileNet",
        "tf",
        "conv_pw_13_relu",
        "conv_pw_1_relu",
        224,
        32,
        options={"alpha": 1.0, "depth_multiplier": 1},
        last_stage="conv_pad_12",
        description="MobileNet v1 (Howard et al. 2017); options alpha, depth_multiplier",
    )
)
register(
    Backbone(
        "efficientnet_b0",
        f"{_APPS}:EfficientNetB0",
        "none",
        "top_activation",
        "block2a_expand_activation",
        224,
        32,
        last_stage="block6a_expand_conv",
        description="EfficientNet-B0 (Tan & Le 2019); normalises its input itself",
    )
)
register(
    Backbone(
        "inception_v3",
        f"{_APPS}:InceptionV3",
        "tf",
        "mixed10",
        "mixed0",
        299,
        75,
        last_stage="mixed8",
        description="Inception v3 (Szegedy et al. 2016); inputs of at least 75 px",
    )
)
register(
    Backbone(
        "xception",
        f"{_APPS}:Xception",
        "tf",
        "block14_sepconv2_act",
        "block1_conv1_act",
        299,
        71,
        last_stage="block14_sepconv1",
        description="Xception (Chollet 2017); inputs of at least 71 px",
    )
)
register(
    Backbone(
        "densenet121",
        f"{_APPS}:DenseNet121",
        "torch",
        "relu",
        "conv1_relu",
        224,
        32,
        last_stage="conv5_block1_0_bn",
        description="DenseNet-121 (Huang et al. 2017)",
    )
)
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
        description="A small VGG-style CNN for training from scratch on small images",
    )
)
