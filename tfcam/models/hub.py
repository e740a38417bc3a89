"""Vision Transformers from keras-hub, as registry rows (this module imports neither TensorFlow
nor keras_hub: the CLI checks names and options with it before anything heavy loads).

Two families, each a flat stack of identical blocks over a token sequence:

* **ViT** (Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition
  at Scale", ICLR 2021): a class token, learned position embeddings for one input size,
  ``[-1, 1]`` pixels. keras-hub presets ``vit_base_patch16_224_imagenet`` …
* **DINOv2** (Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR
  2024), optionally with register tokens (Darcet et al., "Vision Transformers Need Registers",
  ICLR 2024): a class token, register tokens after it, position embeddings interpolated to the
  input size, ImageNet mean/std pixels. keras-hub presets ``dinov2_small``,
  ``dinov2_with_registers_base`` …

Every row takes its architecture as options that ``--set model.options.num_layers=2`` may
override (``patch_size``, ``num_layers``, ``hidden_dim``, ``num_heads``, ``mlp_dim``,
``num_register_tokens``; ViT also ``stem``, below); ``vit_test`` and ``dinov2_test`` are tiny
sizes (2 blocks of width 32, patches of 8 px) for tests, ``vit_micro`` (4 blocks of width 64, 4 px patches at 32 px) the one the
``shapes_vit`` experiment trains from scratch. A row's ``cam_layer``/``last_stage`` name the last
block of its own depth: with ``num_layers`` overridden or a preset, count the model's ``block_<i>``
layers (:func:`last_blocks_start`). With ``--weights hub:PRESET`` or a preset
directory, the architecture is the preset's own and these options are not used.

``stem`` (ViT rows, random weights only) puts a convolutional stem before the patch embedding:
``--set 'model.options.stem=[16,32,64]'`` is three 3×3 convolutions of stride 2 with batch
normalisation and ReLU (``stem_conv_<i>``, ``stem_bn_<i>``, ``stem_relu_<i>``; an entry
``[W, 1]`` is a convolution of stride 1, e.g. ``[[32, 1], 32, 64]``), and the patches
are then cut from the stem's output (``patch_size`` counts its cells: 1 makes one token per
cell). This is the "hybrid" input of the ViT paper (§3.1) in the form of Xiao et al., "Early
Convolutions Help Transformers See Better" (NeurIPS 2021), who show it makes transformers
optimise faster and more stably; it is what lets a small ViT learn ``shapes`` from scratch in
minutes (``shapes_vit``). The token grid is the stem's grid: ``H / (stride · patch_size)``,
``stride`` the product of the stem's strides.

``num_register_tokens`` on ViT rows (random weights only; keras-hub's ViT presets have none) adds
learned tokens after the class token, without position embeddings, as DINOv2 with registers has
them (Darcet et al., "Vision Transformers Need Registers", ICLR 2024); ``shapes_vit`` uses 4.

The classifier built from a row (:mod:`tfcam.models.hub_graph`) is flat: ``image``,
``preprocess``, ``patch_embedding``, ``block_1`` … ``block_<L>``, ``encoder_norm``, the head
(``head_token`` or ``head_pool``) and ``predictions``.
"""

from __future__ import annotations

from tfcam.errors import UserError
from tfcam.models.registry import BACKBONES, Backbone, register

#: ``--weights hub:PRESET`` loads a keras-hub preset by name (downloaded by keras-hub).
PRESET_PREFIX = "hub:"

#: The one line a missing optional dependency gives.
INSTALL_HINT = 'keras-hub is not installed; install the extra: pip install "tfcam[hub]"'

#: The modules that build these models (a constructor is ``module:function``).
_BUILD = "tfcam.models.hub_graph"

#: What each family's rows share: keras-hub backbone class, pixel normalisation of its presets
#: (ViT's image converters scale to [-1, 1]; DINOv2's use the ImageNet mean and std), default
#: size, and its paper.
_FAMILIES = {
    "vit": ("ViTBackbone", "tf", "ViT (Dosovitskiy et al. 2021)"),
    "dinov2": ("DINOV2Backbone", "torch", "DINOv2 (Oquab et al. 2024)"),
}

#: Parameters of each row's backbone at its default options and size (patch embedding, blocks,
#: final norm; measured once on the built networks, so ``tfcam backbones`` builds nothing).
_PARAMS = {
    "vit_test": 23_904,
    "vit_micro": 141_376,
    "vit_tiny": 5_524_416,
    "vit_small": 21_665_664,
    "vit_base": 85_798_656,
    "vit_large": 303_301_632,
    "dinov2_test": 24_576,
    "dinov2_small": 21_727_488,
    "dinov2_base": 85_922_304,
    "dinov2_large": 303_491_072,
    "dinov2_reg_small": 21_729_024,
    "dinov2_reg_base": 85_925_376,
    "dinov2_reg_large": 303_495_168,
}


def _row(
    name: str,
    family: str,
    *,
    patch_size: int,
    num_layers: int,
    hidden_dim: int,
    num_heads: int,
    mlp_dim: int,
    size: int,
    registers: int | None = None,
    what: str = "",
) -> Backbone:
    _, preprocess, paper = _FAMILIES[family]
    options = {
        "patch_size": patch_size,
        "num_layers": num_layers,
        "hidden_dim": hidden_dim,
        "num_heads": num_heads,
        "mlp_dim": mlp_dim,
    }
    if family == "vit":
        options["stem"] = []  # a convolutional stem (Xiao et al. 2021): W or [W, 1] per layer
        registers = 0 if registers is None else registers  # tfcam's, random weights only
    if registers is not None:
        options["num_register_tokens"] = registers
    return Backbone(
        name,
        f"{_BUILD}:{family}_tokens",
        preprocess,
        f"block_{num_layers}",
        "block_1",
        size,
        patch_size,
        options=options,
        last_stage=f"block_{num_layers}",
        applications=False,
        imagenet=False,
        description=f"{paper}{what}: {num_layers} blocks of width {hidden_dim}, "
        f"{patch_size} px patches; weights from hub:PRESET or a preset directory",
        family=family,
        source="keras-hub",
        params=_PARAMS.get(name, 0),
        paper=paper,
        any_size=False,  # position embeddings for one grid; a fixed input size
    )


#: The rows: ViT sizes of Touvron et al. 2021 (tiny, small) and Dosovitskiy et al. 2021 (base,
#: large) with 16 px patches at 224 px; DINOv2 sizes with 14 px patches at 224 px (its presets
#: were trained at 518 px: keras-hub interpolates their position embeddings).
HUB_BACKBONES: tuple[Backbone, ...] = (
    _row("vit_test", "vit", patch_size=8, num_layers=2, hidden_dim=32, num_heads=2, mlp_dim=64,
         size=32, what=", a tiny size for tests"),
    _row("vit_micro", "vit", patch_size=4, num_layers=4, hidden_dim=64, num_heads=4, mlp_dim=128,
         size=32, what=", a micro size trained from scratch by the shapes_vit experiment"),
    _row("vit_tiny", "vit", patch_size=16, num_layers=12, hidden_dim=192, num_heads=3,
         mlp_dim=768, size=224),
    _row("vit_small", "vit", patch_size=16, num_layers=12, hidden_dim=384, num_heads=6,
         mlp_dim=1536, size=224),
    _row("vit_base", "vit", patch_size=16, num_layers=12, hidden_dim=768, num_heads=12,
         mlp_dim=3072, size=224),
    _row("vit_large", "vit", patch_size=16, num_layers=24, hidden_dim=1024, num_heads=16,
         mlp_dim=4096, size=224),
    _row("dinov2_test", "dinov2", patch_size=8, num_layers=2, hidden_dim=32, num_heads=2,
         mlp_dim=64, size=32, registers=0, what=", a tiny size for tests"),
    _row("dinov2_small", "dinov2", patch_size=14, num_layers=12, hidden_dim=384, num_heads=6,
         mlp_dim=1536, size=224, registers=0),
    _row("dinov2_base", "dinov2", patch_size=14, num_layers=12, hidden_dim=768, num_heads=12,
         mlp_dim=3072, size=224, registers=0),
    _row("dinov2_large", "dinov2", patch_size=14, num_layers=24, hidden_dim=1024, num_heads=16,
         mlp_dim=4096, size=224, registers=0),
    _row("dinov2_reg_small", "dinov2", patch_size=14, num_layers=12, hidden_dim=384, num_heads=6,
         mlp_dim=1536, size=224, registers=4, what=" with 4 registers (Darcet et al. 2024)"),
    _row("dinov2_reg_base", "dinov2", patch_size=14, num_layers=12, hidden_dim=768, num_heads=12,
         mlp_dim=3072, size=224, registers=4, what=" with 4 registers (Darcet et al. 2024)"),
    _row("dinov2_reg_large", "dinov2", patch_size=14, num_layers=24, hidden_dim=1024,
         num_heads=16, mlp_dim=4096, size=224, registers=4,
         what=" with 4 registers (Darcet et al. 2024)"),
)  # fmt: skip

for _bb in HUB_BACKBONES:
    if _bb.name not in BACKBONES:  # a re-import (importlib.reload) keeps the first rows
        register(_bb)


def keras_hub_class(bb: Backbone) -> str:
    """The keras-hub backbone class of a row's family (``ViTBackbone``, ``DINOV2Backbone``)."""
    return _FAMILIES[bb.family][0]


def preset_name(weights: str | None) -> str | None:
    """The preset of ``hub:PRESET``, else None.

    Raises:
        UserError: ``hub:`` with nothing after it.
    """
    if weights is None or not str(weights).startswith(PRESET_PREFIX):
        return None
    name = str(weights)[len(PRESET_PREFIX) :].strip()
    if not name:
        raise UserError(
            "Empty keras-hub preset in --weights 'hub:'. Use hub:PRESET, e.g. "
            "hub:vit_base_patch16_224_imagenet or hub:dinov2_small"
        )
    return name


def block_index(name: str) -> int | None:
    """``block_7`` → 7; None for any other name."""
    head, _, tail = name.partition("_")
    return int(tail) if head == "block" and tail.isdigit() else None


def last_blocks_start(layer_names, n: int) -> str:
    """The first of the last ``n`` blocks among a model's layer names (``block_<L-n+1>``).

    Raises:
        UserError: The model has fewer than ``n`` blocks (or none).
    """
    blocks = sorted(i for i in map(block_index, layer_names) if i is not None)
    if not blocks or n > len(blocks):
        raise UserError(
            f"Invalid value for train.fine_tune.last_blocks: {n} (the model has "
            f"{len(blocks)} blocks: block_1 … block_{len(blocks)})"
        )
    return f"block_{blocks[-n]}"


def check_hub_fields(bb: Backbone, *, head: str, resize: str, weights: str, ft) -> None:
    """The config rules that tell transformers and CNNs apart (called by config validation).

    Raises:
        UserError: ``head: token`` or ``train.fine_tune.last_blocks`` with a CNN; a CNN head
            (avgmax, spp, flatten) or ``data.resize: native`` with a transformer; ``hub:`` with
            a CNN.
    """

    def need(ok: bool, key: str, value, rule: str) -> None:
        if not ok:
            raise UserError(f"Invalid value for {key}: {value!r} ({rule})")

    need(
        bb.transformer or not weights.startswith(PRESET_PREFIX),
        "model.weights",
        weights,
        f"a keras-hub preset; backbone {bb.name} is not a keras-hub one (vit_*, dinov2_*)",
    )
    need(
        head in ("token", "gap") or not bb.transformer,
        "model.head",
        head,
        f"backbone {bb.name} is a transformer: token (class token) or gap (mean of patch tokens)",
    )
    need(
        head != "token" or bb.transformer,
        "model.head",
        head,
        f"the class token needs a transformer backbone (vit_*, dinov2_*); {bb.name} is a CNN",
    )
    need(
        resize != "native" or not bb.transformer,
        "data.resize",
        resize,
        f"backbone {bb.name} is a transformer and takes one input size: stretch, pad or crop",
    )
    need(ft.last_blocks >= 0, "train.fine_tune.last_blocks", ft.last_blocks, "at least 0")
    need(
        not ft.last_blocks or bb.transformer,
        "train.fine_tune.last_blocks",
        ft.last_blocks,
        f"counts transformer blocks; {bb.name} is a CNN: use unfreeze_from or unfreeze_top",
    )


def check_weights_path(backbone: str, weights: str) -> None:
    """``model.weights`` names something that exists (before anything is written): a file, or for
    keras-hub rows a preset directory or ``hub:PRESET`` (keras-hub checks that one when it loads).

    Raises:
        UserError: Nothing at that path.
    """
    from pathlib import Path

    if weights in ("imagenet", "none") or Path(weights).is_file():
        return
    if BACKBONES[backbone].transformer and (
        weights.startswith(PRESET_PREFIX) or Path(weights).is_dir()
    ):
        return
    hub = ", hub:PRESET or a keras-hub preset directory" if BACKBONES[backbone].transformer else ""
    raise UserError(
        f"Weights file not found: '{weights}'. Use --weights imagenet, none, an existing file{hub}"
    )
