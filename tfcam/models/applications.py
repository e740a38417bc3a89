"""Every ``keras.applications`` constructor of Keras 3.15, as rows of data (no TensorFlow here).

A family row says what its members share: the paper, the preprocessing, the options, the layer
names (``{name}`` is the registry name, which ConvNeXt also uses as its layer prefix); a model row
gives the member's name, constructor, sizes and parameter count; ``OVERRIDES`` holds the few
fields in which a member differs from its family. :mod:`tfcam.models.registry` turns the rows
into :class:`~tfcam.models.registry.Backbone` entries. Every value below was read off the network
built with ``weights=None``: the layer names, the parameters without top as ``count_params()``
counts them, and the smallest input side (the larger of Keras's own minimum and the smallest side
that builds: 32 for most, where stride 32 leaves one cell; 75 for the Inception networks, whose
valid convolutions need it; 71 for Xception, Keras's check, though it builds from 32). The
layers named in ``tests/test_applications.py`` are held to the built networks.

Preprocessing happens exactly once, in tfcam's ``preprocess`` layer. ConvNeXt, EfficientNetV2 and
MobileNetV3 carry their own rescaling or normalisation layers in Keras 3
(``include_preprocessing=True`` by default, and their ``preprocess_input`` is then a pass-through);
tfcam builds them with ``include_preprocessing=False`` and does the same arithmetic in
:class:`~tfcam.models.layers.Preprocess`. Why there rather than in the network: one place for
every backbone, visible in the model's config and in ``tfcam backbones``; the padding of
native-size batches (:class:`~tfcam.models.layers.FillPadding`) is set to zero *after*
normalisation, which is what a convolution's own zero padding is; and the weights are the same
either way, as those layers hold no weights (ImageNet files load by the layers that do).
EfficientNet V1 always normalises inside (its ``Normalization`` holds the ImageNet statistics
among its weights and cannot be switched off), so its mode is ``none``: ``Preprocess`` is the
identity and its padding is zeroed before the network's normalisation.
"""

from __future__ import annotations

_CONVNEXT = "ConvNeXt"
_OFF = {"include_preprocessing": False}

#: Family → the fields its members share (any of :class:`~tfcam.models.registry.Backbone`).
FAMILIES: dict[str, dict] = {
    _CONVNEXT: {
        "paper": "Liu et al. 2022, A ConvNet for the 2020s",
        "preprocess": "torch",
        "constructor_args": _OFF,
        "output_name": "{name}_layernorm",
        "cam_layer": "{name}_layernorm",
        "early_layer": "{name}_downsampling_layernorm_0",
        "last_stage": "{name}_downsampling_layernorm_2",
    },
    "DenseNet": {
        "paper": "Huang et al. 2017, Densely Connected Convolutional Networks",
        "preprocess": "torch",
        "cam_layer": "relu",
        "early_layer": "conv1_relu",
        "last_stage": "conv5_block1_0_bn",
    },
    "EfficientNet": {
        "paper": "Tan & Le 2019, EfficientNet: Rethinking Model Scaling for CNNs",
        "preprocess": "none",
        "cam_layer": "top_activation",
        "early_layer": "block2a_expand_activation",
        "last_stage": "block6a_expand_conv",
    },
    "EfficientNetV2": {
        "paper": "Tan & Le 2021, EfficientNetV2: Smaller Models and Faster Training",
        "preprocess": "torch",
        "constructor_args": _OFF,
        "cam_layer": "top_activation",
        "early_layer": "block2a_expand_activation",
        "last_stage": "block6a_expand_conv",
    },
    "InceptionResNetV2": {
        "paper": "Szegedy et al. 2017, Inception-v4, Inception-ResNet and the Impact of Residual "
        "Connections on Learning",
        "preprocess": "tf",
        "cam_layer": "conv_7b_ac",
        "early_layer": "mixed_5b",
        "last_stage": "mixed_7a",
    },
    "InceptionV3": {
        "paper": "Szegedy et al. 2016, Rethinking the Inception Architecture for Computer Vision",
        "preprocess": "tf",
        "cam_layer": "mixed10",
        "early_layer": "mixed0",
        "last_stage": "mixed8",
    },
    "MobileNet": {
        "paper": "Howard et al. 2017, MobileNets: Efficient CNNs for Mobile Vision Applications",
        "preprocess": "tf",
        "options": {"alpha": 1.0, "depth_multiplier": 1},
        "cam_layer": "conv_pw_13_relu",
        "early_layer": "conv_pw_1_relu",
        "last_stage": "conv_pad_12",
    },
    "MobileNetV2": {
        "paper": "Sandler et al. 2018, MobileNetV2: Inverted Residuals and Linear Bottlenecks",
        "preprocess": "tf",
        "options": {"alpha": 1.0},
        "cam_layer": "out_relu",
        "early_layer": "block_1_expand_relu",
        "last_stage": "block_13_expand",
    },
    "MobileNetV3": {
        "paper": "Howard et al. 2019, Searching for MobileNetV3",
        "preprocess": "tf",
        "constructor_args": _OFF,
        "options": {"alpha": 1.0, "minimalistic": False},
        "output_name": "out_activation",
        "cam_layer": "out_activation",
        "early_layer": "expanded_conv_2_add",
        "last_stage": "expanded_conv_12_expand",
    },
    "NASNet": {
        "paper": "Zoph et al. 2018, Learning Transferable Architectures for Scalable Image "
        "Recognition",
        "preprocess": "tf",
        "any_size": False,
        "output_name": "out_relu",
        "cam_layer": "out_relu",
        "early_layer": "reduction_concat_stem_1",
    },
    "ResNet": {
        "paper": "He et al. 2016, Deep Residual Learning for Image Recognition",
        "preprocess": "caffe",
        "cam_layer": "conv5_block3_out",
        "early_layer": "conv1_relu",
        "last_stage": "conv5_block1_1_conv",
    },
    "ResNetV2": {
        "paper": "He et al. 2016, Identity Mappings in Deep Residual Networks",
        "preprocess": "tf",
        "cam_layer": "post_relu",
        "early_layer": "conv2_block1_preact_relu",
        "last_stage": "conv5_block1_preact_bn",
    },
    "VGG": {
        "paper": "Simonyan & Zisserman 2015, Very Deep Convolutional Networks for Large-Scale "
        "Image Recognition",
        "preprocess": "caffe",
        "cam_layer": "block5_conv3",
        "early_layer": "block1_conv2",
        "last_stage": "block5_conv1",
    },
    "Xception": {
        "paper": "Chollet 2017, Xception: Deep Learning with Depthwise Separable Convolutions",
        "preprocess": "tf",
        "cam_layer": "block14_sepconv2_act",
        "early_layer": "block1_conv1_act",
        "last_stage": "block14_sepconv1",
    },
}

#: One row per constructor: registry name, ``keras.applications`` constructor, family, default
#: input side, smallest input side, parameters without top.
MODELS: tuple[tuple[str, str, str, int, int, int], ...] = (
    ("convnext_tiny", "ConvNeXtTiny", _CONVNEXT, 224, 32, 27_820_128),
    ("convnext_small", "ConvNeXtSmall", _CONVNEXT, 224, 32, 49_454_688),
    ("convnext_base", "ConvNeXtBase", _CONVNEXT, 224, 32, 87_566_464),
    ("convnext_large", "ConvNeXtLarge", _CONVNEXT, 224, 32, 196_230_336),
    ("convnext_xlarge", "ConvNeXtXLarge", _CONVNEXT, 224, 32, 348_147_968),
    ("densenet121", "DenseNet121", "DenseNet", 224, 32, 7_037_504),
    ("densenet169", "DenseNet169", "DenseNet", 224, 32, 12_642_880),
    ("densenet201", "DenseNet201", "DenseNet", 224, 32, 18_321_984),
    ("efficientnet_b0", "EfficientNetB0", "EfficientNet", 224, 32, 4_049_571),
    ("efficientnet_b1", "EfficientNetB1", "EfficientNet", 240, 32, 6_575_239),
    ("efficientnet_b2", "EfficientNetB2", "EfficientNet", 260, 32, 7_768_569),
    ("efficientnet_b3", "EfficientNetB3", "EfficientNet", 300, 32, 10_783_535),
    ("efficientnet_b4", "EfficientNetB4", "EfficientNet", 380, 32, 17_673_823),
    ("efficientnet_b5", "EfficientNetB5", "EfficientNet", 456, 32, 28_513_527),
    ("efficientnet_b6", "EfficientNetB6", "EfficientNet", 528, 32, 40_960_143),
    ("efficientnet_b7", "EfficientNetB7", "EfficientNet", 600, 32, 64_097_687),
    ("efficientnet_v2_b0", "EfficientNetV2B0", "EfficientNetV2", 224, 32, 5_919_312),
    ("efficientnet_v2_b1", "EfficientNetV2B1", "EfficientNetV2", 240, 32, 6_931_124),
    ("efficientnet_v2_b2", "EfficientNetV2B2", "EfficientNetV2", 260, 32, 8_769_374),
    ("efficientnet_v2_b3", "EfficientNetV2B3", "EfficientNetV2", 300, 32, 12_930_622),
    ("efficientnet_v2_s", "EfficientNetV2S", "EfficientNetV2", 384, 32, 20_331_360),
    ("efficientnet_v2_m", "EfficientNetV2M", "EfficientNetV2", 480, 32, 53_150_388),
    ("efficientnet_v2_l", "EfficientNetV2L", "EfficientNetV2", 480, 32, 117_746_848),
    ("inception_resnet_v2", "InceptionResNetV2", "InceptionResNetV2", 299, 75, 54_336_736),
    ("inception_v3", "InceptionV3", "InceptionV3", 299, 75, 21_802_784),
    ("mobilenet", "MobileNet", "MobileNet", 224, 32, 3_228_864),
    ("mobilenet_v2", "MobileNetV2", "MobileNetV2", 224, 32, 2_257_984),
    ("mobilenet_v3_small", "MobileNetV3Small", "MobileNetV3", 224, 32, 939_120),
    ("mobilenet_v3_large", "MobileNetV3Large", "MobileNetV3", 224, 32, 2_996_352),
    ("nasnet_mobile", "NASNetMobile", "NASNet", 224, 32, 4_269_716),
    ("nasnet_large", "NASNetLarge", "NASNet", 331, 32, 84_916_818),
    ("resnet50", "ResNet50", "ResNet", 224, 32, 23_587_712),
    ("resnet101", "ResNet101", "ResNet", 224, 32, 42_658_176),
    ("resnet152", "ResNet152", "ResNet", 224, 32, 58_370_944),
    ("resnet50_v2", "ResNet50V2", "ResNetV2", 224, 32, 23_564_800),
    ("resnet101_v2", "ResNet101V2", "ResNetV2", 224, 32, 42_626_560),
    ("resnet152_v2", "ResNet152V2", "ResNetV2", 224, 32, 58_331_648),
    ("vgg16", "VGG16", "VGG", 224, 32, 14_714_688),
    ("vgg19", "VGG19", "VGG", 224, 32, 20_024_384),
    ("xception", "Xception", "Xception", 299, 71, 20_861_480),
)

#: Where a member differs from its family: the fields that do.
OVERRIDES: dict[str, dict] = {
    "efficientnet_v2_s": {"preprocess": "tf128"},  # Rescaling(1 / 128, offset=-1): not B0–B3's
    "efficientnet_v2_m": {"preprocess": "tf128"},
    "efficientnet_v2_l": {"preprocess": "tf128"},
    "mobilenet_v3_small": {"last_stage": "expanded_conv_8_expand"},
    "nasnet_mobile": {"last_stage": "reduction_conv_1_reduce_8"},
    "nasnet_large": {"last_stage": "reduction_conv_1_reduce_12"},
    "vgg19": {"cam_layer": "block5_conv4"},
}
