"""Vision Transformers from keras-hub (issue 16, points 3 and 5): flat token graphs, sizes, heads,
weights from a preset directory, the offline ``hub:`` error, fine-tuning the last blocks, the
feature cache, mixed precision, strategies and ``model.keras`` reloading. Tiny models only
(``vit_test``/``dinov2_test``: 2 blocks of width 32, 8 px patches, 32–48 px)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402
from conftest import REPO, run_cli  # noqa: E402

from tfcam import config  # noqa: E402
from tfcam.errors import UserError  # noqa: E402
from tfcam.models.build import (  # noqa: E402
    backbone_layers,
    build_classifier,
    load_model,
    set_backbone_trainable,
)
from tfcam.models.registry import BACKBONES  # noqa: E402

EXPERIMENT = str(REPO / "experiments" / "shapes_vit.yaml")
#: A few shapes at 32 px, one epoch: what the CLI tests train on.
TINY = [
    "data.image_size=32",
    "data.batch_size=16",
    "data.augment={}",
    "data.shapes.classes=[circle,square,triangle]",
    "data.shapes.train_per_class=12",
    "data.shapes.val_per_class=4",
    "data.shapes.test_per_class=0",
    "data.shapes.resolution=32",
    "model.backbone=vit_test",
    "train.epochs=1",
]


def _sets(items):
    return [a for item in items for a in ("--set", item)]


def _images(h=32, w=32, n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype("float32")


def _tokens(model, x):
    return np.asarray(keras.Model(model.input, model.get_layer("encoder_norm").output)(x))


@pytest.fixture(scope="module")
def vit_preset(tmp_path_factory):
    """A preset directory written by keras-hub's ``save_to_preset`` from a tiny random ViT."""
    keras.utils.set_random_seed(11)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(32, 32, 3),
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
    )
    path = tmp_path_factory.mktemp("presets") / "vit_tiny"
    backbone.save_to_preset(str(path))
    return path, backbone


@pytest.fixture(scope="module")
def dinov2_preset(tmp_path_factory):
    """A tiny DINOv2 with two registers, its position embeddings trained at 32 px."""
    keras.utils.set_random_seed(12)
    backbone = keras_hub.models.DINOV2Backbone(
        patch_size=8,
        num_layers=2,
        hidden_dim=32,
        num_heads=2,
        intermediate_dim=64,
        num_register_tokens=2,
        layer_scale_init_value=0.5,
        image_shape=(32, 32, 3),
        position_embedding_shape=(32, 32, 3),
    )
    path = tmp_path_factory.mktemp("presets") / "dinov2_tiny"
    backbone.save_to_preset(str(path))
    return path, backbone


def test_rows_are_data_and_importing_the_registry_loads_neither_tensorflow_nor_keras_hub():
    rows = {n: b for n, b in BACKBONES.items() if b.source == "keras-hub"}
    assert {"vit_test", "vit_tiny", "vit_small", "vit_base", "vit_large"} <= set(rows)
    assert {"dinov2_test", "dinov2_small", "dinov2_base", "dinov2_reg_small"} <= set(rows)
    for bb in rows.values():
        assert bb.transformer and bb.family in ("vit", "dinov2")
        assert bb.early_layer == "block_1"
        assert bb.last_stage == bb.cam_layer == f"block_{bb.options['num_layers']}"
        assert {"patch_size", "num_layers", "hidden_dim", "num_heads", "mlp_dim"} <= set(bb.options)
    assert BACKBONES["dinov2_reg_base"].options["num_register_tokens"] == 4
    code = (
        "import sys, tfcam.config, tfcam.models.registry;"
        "tfcam.config.load_experiment(sys.argv[1]);"
        "print(sorted(m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, EXPERIMENT], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("backbone", "options", "prefix"),
    [
        ("vit_test", {}, 1),
        ("dinov2_test", {}, 1),
        ("dinov2_test", {"num_register_tokens": 3}, 4),
    ],
)
@pytest.mark.parametrize("size", [(32, 32), (32, 48)])
def test_flat_layout_every_block_by_name_square_and_not(backbone, options, prefix, size):
    from keras_hub.src.models.dinov2.dinov2_layers import DINOV2Embedding, DINOV2Layer
    from keras_hub.src.models.vit.vit_layers import ViTEncoderBlock, ViTPatchingAndEmbedding

    keras.utils.set_random_seed(1)
    model = build_classifier(
        backbone=backbone, num_classes=3, image_size=size, options=options, head="token"
    )
    names = [layer.name for layer in model.layers]
    assert names == [
        "image",
        "preprocess",
        "patch_embedding",
        "block_1",
        "block_2",
        "encoder_norm",
        "head_token",
        "predictions",
    ]
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    emb, block = model.get_layer("patch_embedding"), model.get_layer("block_1")
    if backbone == "vit_test":
        assert isinstance(emb, ViTPatchingAndEmbedding) and isinstance(block, ViTEncoderBlock)
        assert tuple(emb.patch_size) == (8, 8) and emb.use_class_token
    else:
        assert isinstance(emb, DINOV2Embedding) and isinstance(block, DINOV2Layer)
        assert emb.patch_size == 8 and emb.num_register_tokens == prefix - 1
    h, w = size
    t = prefix + (h // 8) * (w // 8)
    x = _images(h, w)
    for name in ("patch_embedding", "block_1", "block_2", "encoder_norm"):
        assert tuple(model.get_layer(name).output.shape) == (None, t, 32)
        sub = keras.Model(model.input, model.get_layer(name).output)
        assert sub(x).shape == (2, t, 32)  # no "Graph disconnected", static shape is the real one
    assert model(x).shape == (2, 3)
    assert [la.name for la in backbone_layers(model)] == names[2:6]


@pytest.mark.parametrize("backbone", ["vit_test", "dinov2_test"])
def test_sizes_not_divisible_by_the_patch_are_one_line_errors(backbone):
    with pytest.raises(UserError) as err:
        build_classifier(backbone=backbone, num_classes=2, image_size=(32, 36))
    msg = str(err.value)
    assert "\n" not in msg and "32×36" in msg and "8×8 px patches" in msg and "32×32" in msg
    with pytest.raises(UserError, match="patch_size"):
        # 16 px patches on 40 px: the option is named in the message's suggestion of a size
        build_classifier(
            backbone="vit_test", num_classes=2, image_size=40, options={"patch_size": 16}
        )


def test_conv_stem_feeds_the_patch_embedding_and_sets_the_token_grid(tmp_path):
    from tfcam.explain.engine import Explainer
    from tfcam.explain.tokens import token_grid

    keras.utils.set_random_seed(4)
    model = build_classifier(
        backbone="vit_test",
        num_classes=3,
        image_size=32,
        options={"stem": [8, 16], "patch_size": 2},
    )
    names = [la.name for la in model.layers]
    stem = ["stem_conv_1", "stem_bn_1", "stem_relu_1", "stem_conv_2", "stem_bn_2", "stem_relu_2"]
    assert names[2:9] == [*stem, "patch_embedding"]
    assert model.get_layer("stem_conv_2").output.shape == (None, 8, 8, 16)
    # Two stride-2 convolutions, then 2-cell patches: one token per 8×8 input pixels.
    assert model.get_layer("patch_embedding").output.shape == (None, 1 + 4 * 4, 32)
    grid = token_grid(model, (32, 32))
    assert (grid.prefix, grid.rows, grid.cols) == (1, 4, 4)
    # The stem is trained with the blocks: it is part of the backbone.
    assert {"stem_conv_1", "stem_bn_2"} <= {la.name for la in backbone_layers(model)}
    x = _images()
    ex = Explainer(model, batch_size=2)
    assert ex.resolve_layers(None) == ("block_2",)
    from tfcam.explain.cams import explain_cam

    maps = explain_cam(ex, x, "gradcam").heatmaps["block_2"]
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    path = tmp_path / "model.keras"
    model.save(path)
    again = load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    # A stride-1 entry keeps the resolution: 32 → 32 → 16 px, 4-cell patches → a 4×4 grid.
    model = build_classifier(
        backbone="vit_test",
        num_classes=3,
        image_size=32,
        options={"stem": [[8, 1], 16], "patch_size": 4},
    )
    assert model.get_layer("stem_conv_1").output.shape == (None, 32, 32, 8)
    assert model.get_layer("stem_conv_2").output.shape == (None, 16, 16, 16)
    grid = token_grid(model, (32, 32))
    assert (grid.rows, grid.cols) == (4, 4)
    assert model.get_layer("patch_embedding").output.shape == (None, 17, 32)


def test_vit_register_tokens_follow_the_class_token_without_position_embeddings(tmp_path):
    from tfcam.explain.attention import explain_attention
    from tfcam.explain.cams import explain_cam
    from tfcam.explain.engine import Explainer
    from tfcam.explain.tokens import token_grid

    keras.utils.set_random_seed(6)
    model = build_classifier(
        backbone="vit_test",
        num_classes=3,
        image_size=(32, 48),
        options={"num_register_tokens": 2},
        head="token",
    )
    emb = model.get_layer("patch_embedding")
    assert emb.num_register_tokens == 2
    assert tuple(emb.output.shape) == (None, 1 + 2 + 4 * 6, 32)
    x = _images(32, 48)
    tokens = np.asarray(keras.Model(model.input, emb.output)(x))
    registers = np.asarray(emb.register_tokens)[0]
    positions = np.asarray(emb.position_embedding(emb.position_ids))[0]
    # Token 0: the class token plus its position; then the registers as learned, for every image
    # (no position added); then the patches with the positions of patches 1….
    want = np.broadcast_to(np.asarray(emb.class_token)[0, 0] + positions[0], (2, 32))
    np.testing.assert_allclose(tokens[:, 0], want, rtol=1e-6)
    np.testing.assert_array_equal(tokens[:, 1:3], np.broadcast_to(registers, (2, 2, 32)))
    patches = np.asarray(
        keras.ops.reshape(emb.patch_embedding(keras.ops.convert_to_tensor(
            np.asarray(model.get_layer("preprocess")(x)))), (2, 24, 32))
    )  # fmt: skip
    np.testing.assert_allclose(tokens[:, 3:], patches + positions[1:], rtol=1e-5, atol=1e-5)
    grid = token_grid(model, (32, 48))
    assert (grid.prefix, grid.rows, grid.cols, grid.class_token) == (3, 4, 6, True)
    ex = Explainer(model, batch_size=2)
    assert ex.resolve_layers(None) == ("block_1",)  # the input of the last block
    cam = explain_cam(ex, x, "gradcam").heatmap
    rollout = explain_attention(ex, x, "attention_rollout").heatmap
    assert cam.shape == rollout.shape == (2, 32, 48)
    assert np.isfinite(cam).all() and np.isfinite(rollout).all()
    path = tmp_path / "model.keras"
    model.save(path)
    again = load_model(path)
    assert again.get_layer("patch_embedding").num_register_tokens == 2
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(UserError, match=r"num_register_tokens: -1 \(0 or more\)"):
        build_classifier(
            backbone="vit_test", num_classes=2, image_size=32, options={"num_register_tokens": -1}
        )


def test_vit_registers_are_refused_with_a_preset(vit_preset):
    path, _ = vit_preset
    with pytest.raises(UserError, match="has none. Leave the option out") as err:
        build_classifier(
            backbone="vit_test", num_classes=2, image_size=32, weights=str(path),
            options={"num_register_tokens": 4},
        )  # fmt: skip
    assert "dinov2_reg_" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "stem, match",
    [
        ([0], r"model.options.stem .*\[0\] \(expected a list of channel counts, one per 3×3"),
        ([[8, 3]], r"or \[width, 1\] for stride 1"),
        ([[8, 1, 2]], r"model.options.stem"),
        ([8, "a"], r"model.options.stem"),
        ("8,16", r"Invalid value for model.options.stem: '8,16' \(expected list"),
    ],
)
def test_bad_stems_are_one_line_errors(stem, match):
    with pytest.raises(UserError, match=match) as err:
        build_classifier(backbone="vit_test", num_classes=2, image_size=32, options={"stem": stem})
    assert "\n" not in str(err.value)


def test_a_stem_is_refused_with_a_preset_and_sizes_count_its_stride(vit_preset):
    path, _ = vit_preset
    with pytest.raises(UserError, match="has none. Leave the option out"):
        build_classifier(
            backbone="vit_test", num_classes=2, image_size=32, weights=str(path),
            options={"stem": [8]},
        )  # fmt: skip
    with pytest.raises(UserError, match="not divisible by the 16×16 px patches"):
        build_classifier(backbone="vit_test", num_classes=2, image_size=40, options={"stem": [8]})


def test_token_head_reads_the_class_token_and_gap_the_mean_of_patch_tokens():
    x = _images()
    for backbone, opts, prefix in (
        ("vit_test", {}, 1),
        ("vit_test", {"num_register_tokens": 2}, 3),
        ("dinov2_test", {"num_register_tokens": 2}, 3),
    ):
        for head in ("token", "gap"):
            keras.utils.set_random_seed(2)
            model = build_classifier(
                backbone=backbone, num_classes=3, image_size=32, head=head, options=opts
            )
            pool = model.get_layer("head_token" if head == "token" else "head_pool")
            tokens = _tokens(model, x)
            got = np.asarray(keras.Model(model.input, pool.output)(x))
            want = tokens[:, 0] if head == "token" else tokens[:, prefix:].mean(axis=1)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_heads_that_do_not_apply_are_refused_in_one_line():
    with pytest.raises(UserError, match="head 'token' .* needs a transformer backbone"):
        build_classifier(backbone="simple_cnn", num_classes=2, image_size=32, head="token")
    with pytest.raises(UserError, match="transformer: head 'spp' does not apply.*token.*gap"):
        build_classifier(backbone="vit_test", num_classes=2, image_size=32, head="spp")
    with pytest.raises(UserError, match="model.head.*class token needs a transformer"):
        config.load_experiment("shapes_tiny", ["model.head=token"])
    with pytest.raises(UserError, match="model.head.*transformer: token"):
        config.load_experiment(EXPERIMENT, ["model.head=avgmax"])
    with pytest.raises(UserError, match="data.resize.*transformer"):
        config.load_experiment(EXPERIMENT, ["data.resize=native"])
    with pytest.raises(UserError, match="fixed input size|one fixed input size"):
        build_classifier(backbone="vit_test", num_classes=2, image_size=32, variable_size=True)
    cfg = config.load_experiment(EXPERIMENT, ["model.head=token"])
    assert cfg.model.head == "token"


def test_preset_directory_gives_the_backbones_own_outputs(vit_preset):
    path, backbone = vit_preset
    model = build_classifier(
        backbone="vit_test", num_classes=3, image_size=32, weights=str(path), head="token"
    )
    x = _images(seed=5)
    want = np.asarray(backbone(x / 127.5 - 1.0))  # ViT presets take [-1, 1] pixels
    np.testing.assert_allclose(_tokens(model, x), want, rtol=1e-5, atol=1e-5)
    # The preset's architecture wins over the row's options.
    options = {"num_layers": 4, "hidden_dim": 64}
    other = build_classifier(
        backbone="vit_test", num_classes=3, image_size=32, weights=str(path), options=options
    )
    assert [la.name for la in backbone_layers(other)][-1] == "encoder_norm"
    assert other.get_layer("encoder_norm").output.shape[-1] == 32
    with pytest.raises(UserError, match="trained at 32×32.*data.image_size=32"):
        build_classifier(backbone="vit_test", num_classes=3, image_size=48, weights=str(path))
    with pytest.raises(UserError, match="is a ViTBackbone; backbone 'dinov2_test' takes"):
        build_classifier(backbone="dinov2_test", num_classes=3, image_size=32, weights=str(path))


def test_dinov2_preset_directory_with_registers_interpolated_to_another_size(dinov2_preset):
    path, backbone = dinov2_preset
    mean = np.array([0.485, 0.456, 0.406], "float32")
    std = np.array([0.229, 0.224, 0.225], "float32")
    x = _images(seed=6)
    model = build_classifier(
        backbone="dinov2_test", num_classes=3, image_size=32, weights=str(path)
    )
    want = np.asarray(backbone({"images": (x / 255.0 - mean) / std}))
    np.testing.assert_allclose(_tokens(model, x), want, rtol=1e-4, atol=1e-4)
    # At 48 px, keras-hub's own interpolation of the position embeddings is what the model uses.
    x48 = _images(48, 48, seed=7)
    big = build_classifier(backbone="dinov2_test", num_classes=3, image_size=48, weights=str(path))
    ref = keras_hub.models.DINOV2Backbone.from_preset(str(path), image_shape=(48, 48, 3))
    want = np.asarray(ref({"images": (x48 / 255.0 - mean) / std}))
    np.testing.assert_allclose(_tokens(big, x48), want, rtol=1e-4, atol=1e-4)
    assert _tokens(big, x48).shape == (2, 1 + 2 + 36, 32)
    wide = build_classifier(
        backbone="dinov2_test", num_classes=3, image_size=(32, 48), weights=str(path)
    )
    assert _tokens(wide, _images(32, 48)).shape == (2, 1 + 2 + 24, 32)


def test_bad_weights_for_transformers_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not a keras-hub preset \\(no config.json"):
        build_classifier(backbone="vit_test", num_classes=2, image_size=32, weights=str(tmp_path))
    with pytest.raises(UserError, match="names a keras-hub preset; backbone 'simple_cnn'"):
        build_classifier(backbone="simple_cnn", num_classes=2, image_size=32, weights="hub:x")
    with pytest.raises(UserError, match="Unknown keras-hub ViTBackbone preset 'vit_bse"):
        build_classifier(
            backbone="vit_base", num_classes=2, image_size=224, weights="hub:vit_bse_patch16_224"
        )
    with pytest.raises(UserError, match="no ImageNet weights; use hub:PRESET"):
        build_classifier(backbone="vit_test", num_classes=2, image_size=32, weights="imagenet")
    with pytest.raises(UserError, match="model.weights.*not a keras-hub one"):
        config.load_experiment("shapes_tiny", ["model.weights=hub:dinov2_small"])
    with pytest.raises(UserError, match="Weights file not found.*hub:PRESET"):
        config.load_experiment(EXPERIMENT, weights=tmp_path / "nope", check_paths=True)


def test_hub_preset_offline_is_one_line_exit_2(tmp_path):
    """keras-hub downloads ``hub:PRESET`` from Kaggle; this machine has no route there, so the
    command ends with one line naming the preset and the cause."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "KAGGLE_CONFIG_DIR": str(tmp_path)}
    args = ["fit", "-e", EXPERIMENT, *_sets([*TINY, "model.backbone=vit_base"])]
    args += ["--set", "data.image_size=224", "--weights", "hub:vit_base_patch16_224_imagenet"]
    args += ["--run-dir", str(tmp_path / "run"), "--no-report"]
    out = subprocess.run(
        [str(Path(sys.executable).with_name("tfcam")), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = out.stderr.splitlines()
    errors = [ln for ln in lines if ln.startswith("tfcam: error: ")]
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    # Progress lines are "tfcam: …"; nothing else reaches stderr, and the error is one line.
    assert all(ln.startswith("tfcam: ") for ln in lines if ln.strip()), out.stderr
    assert len(errors) == 1, out.stderr
    assert "Could not load keras-hub preset 'vit_base_patch16_224_imagenet'" in errors[0]
    assert "Error" in errors[0]  # the cause: keras-hub's exception (offline: a ConnectionError)
    assert not (tmp_path / "run").exists()  # a mistake before the first epoch leaves nothing


def test_fine_tuning_starts_at_the_last_blocks_and_layernorm_trains():
    keras.utils.set_random_seed(3)
    model = build_classifier(
        backbone="vit_test", num_classes=3, image_size=32, options={"num_layers": 3}
    )
    names = [la.name for la in backbone_layers(model)]
    cfg = config.load_experiment(EXPERIMENT, ["train.fine_tune.epochs=1"])
    assert config.fine_tune_start(cfg, names) == "block_3"  # the last block, whatever L is
    cfg2 = config.load_experiment(
        EXPERIMENT, ["train.fine_tune.epochs=1", "train.fine_tune.last_blocks=2"]
    )
    start = config.fine_tune_start(cfg2, names)
    assert start == "block_2"
    n = set_backbone_trainable(model, True, from_layer=start)
    trainable = [la.name for la in backbone_layers(model) if la.trainable]
    assert trainable == ["block_2", "block_3", "encoder_norm"] and n == 3
    # LayerNormalization is not batch normalisation: the block's norms train with it.
    block = model.get_layer("block_2")
    assert block.layer_norm_1.trainable and block.layer_norm_1.trainable_weights
    from tfcam.train.checks import check_config_layers

    too_many = config.load_experiment(
        EXPERIMENT, ["train.fine_tune.epochs=1", "train.fine_tune.last_blocks=5"]
    )
    with pytest.raises(UserError, match="last_blocks: 5 \\(the model has 3 blocks"):
        check_config_layers(too_many, model)
    with pytest.raises(UserError, match="last_blocks.*simple_cnn is a CNN"):
        config.load_experiment("shapes_tiny", ["train.fine_tune.last_blocks=2"])
    with pytest.raises(UserError, match="Set only one of"):
        config.load_experiment(
            EXPERIMENT, ["train.fine_tune.last_blocks=2", "train.fine_tune.unfreeze_top=3"]
        )


def test_two_phases_head_on_cached_class_tokens_then_last_block(tmp_path, caplog):
    from tfcam.train import feature_cache as fc
    from tfcam.train.fit import fit

    cfg = config.load_experiment(
        EXPERIMENT,
        [
            *TINY,
            "model.head=token",
            "train.freeze_backbone=true",
            "train.epochs=2",
            "train.fine_tune.epochs=1",
            "train.fine_tune.learning_rate=0.0001",
            "data.augment.hflip=0.5",
        ],
    )
    assert fc.cacheable(cfg)
    with caplog.at_level(logging.INFO, logger="tfcam"):
        result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    log = [r.getMessage() for r in caplog.records]
    cached = [m for m in log if "cached features" in m]
    assert cached and "32 features each" in cached[0] and "original, hflip" in cached[0]
    assert any("Phase 2" in m and "2 backbone layers unfrozen" in m for m in log), log
    # The features the cache trains on are the class token after encoder_norm.
    model = load_model(result.run_dir / "model.keras")
    x = _images()
    feats = np.asarray(fc.feature_extractor(model)(x))
    np.testing.assert_allclose(feats, _tokens(model, x)[:, 0], rtol=1e-5, atol=1e-5)
    hist = (result.run_dir / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 3


def test_mixed_precision_trains_a_step_of_both_families():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for backbone in ("vit_test", "dinov2_test"):
            model = build_classifier(backbone=backbone, num_classes=3, image_size=32)
            assert model.get_layer("block_1").compute_dtype == "float16"
            assert model.get_layer("block_1").variable_dtype == "float32"
            model.compile(optimizer="adam", loss="categorical_crossentropy")
            y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
            loss = model.train_on_batch(_images(n=4), y)
            assert np.isfinite(loss)
            out = model(_images())
            assert out.dtype == "float32" and np.all(np.isfinite(np.asarray(out)))
    finally:
        keras.mixed_precision.set_global_policy(policy)


def test_model_keras_reloads_after_import_tfcam_alone(tmp_path):
    keras.utils.set_random_seed(4)
    x = _images()
    for backbone in ("vit_test", "dinov2_test"):
        model = build_classifier(backbone=backbone, num_classes=3, image_size=(32, 48))
        path = tmp_path / f"{backbone}.keras"
        model.save(path)
        np.save(tmp_path / f"{backbone}.npy", np.asarray(model(_images(32, 48))))
    code = (
        "import sys, numpy as np, tfcam\n"
        "from tfcam.models.build import load_model\n"
        "for name in ('vit_test', 'dinov2_test'):\n"
        "    m = load_model(f'{sys.argv[1]}/{name}.keras')\n"
        "    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)).astype('float32')\n"
        "    want = np.load(f'{sys.argv[1]}/{name}.npy')\n"
        "    np.testing.assert_allclose(np.asarray(m(x)), want, rtol=1e-5, atol=1e-6)\n"
        "    print(name, [la.name for la in m.layers][2])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["vit_test", "patch_embedding", "dinov2_test", "patch_embedding"]
    del x
    # Without keras_hub, one line says how to install it.
    code = (
        "import sys; sys.modules['keras_hub'] = None\n"
        "import tfcam\n"
        "from tfcam.models.build import load_model\n"
        "try:\n"
        "    load_model(sys.argv[1])\n"
        "except tfcam.UserError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "vit_test.keras")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.stdout.strip() == (
        'keras-hub is not installed; install the extra: pip install "tfcam[hub]"'
    ), out.stderr[-2000:]


def test_cli_fit_from_a_preset_directory_under_the_mirrored_strategy(tmp_path, vit_preset):
    path, _ = vit_preset
    run = tmp_path / "run"
    r = run_cli(
        "fit",
        "-e",
        EXPERIMENT,
        *_sets([*TINY, "train.freeze_backbone=true"]),
        "--weights",
        str(path),
        "--strategy",
        "mirrored",
        "--no-report",
        "--run-dir",
        str(run),
    )
    assert r.exit_code == 0, (r.output, r.exception)
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["val"]["accuracy"] <= 1.0
    saved = config.load_experiment(run / "config.yaml")
    assert saved.model.weights == str(path.resolve())
    # The frozen backbone is the preset's, unchanged by training.
    model = load_model(run / "model.keras")
    fresh = build_classifier(backbone="vit_test", num_classes=3, image_size=32, weights=str(path))
    for name in ("patch_embedding", "block_1", "block_2", "encoder_norm"):
        for a, b in zip(
            model.get_layer(name).get_weights(), fresh.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)
