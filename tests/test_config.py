"""Experiments as data: loading, typed overrides, errors that name the key and the choices."""

from __future__ import annotations

import pytest
import yaml

from tfcam import config
from tfcam.errors import UserError


def test_every_bundled_experiment_loads_and_round_trips():
    names = config.list_experiments()
    assert {"shapes", "folder", "shapes_tiny"} <= set(names)
    assert all(desc for desc in names.values()), "every experiment has a one-line description"
    for name in names:
        cfg = config.load_experiment(name)
        assert cfg.name == name
        again = config.from_dict(yaml.safe_load(config.to_yaml(cfg)))
        assert again == cfg


def test_overrides_are_typed():
    cfg = config.load_experiment(
        "shapes",
        [
            "model.backbone=mobilenet_v2",
            "train.epochs=3",
            "train.learning_rate=1e-4",
            "train.freeze_backbone=yes",
            "data.shapes.classes=circle,star",
            "model.options.alpha=0.35",
            "data.augment.hflip=0.25",
            "train.fine_tune.unfreeze_from=null",
        ],
    )
    assert cfg.model.backbone == "mobilenet_v2"
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.learning_rate == pytest.approx(1e-4)
    assert cfg.train.freeze_backbone is True
    assert cfg.data.shapes.classes == ("circle", "star")
    assert cfg.model.options == {"alpha": 0.35}
    assert cfg.data.augment["hflip"] == 0.25
    assert cfg.train.fine_tune.unfreeze_from is None
    assert config.from_dict(yaml.safe_load(config.to_yaml(cfg))) == cfg  # plain values, dumpable


def test_switching_backbone_drops_the_old_backbones_options():
    assert config.load_experiment("shapes").model.options == {"width": 16}
    cfg = config.load_experiment("shapes", ["model.backbone=mobilenet_v2"])
    assert cfg.model.options == {}
    with pytest.raises(UserError, match="takes no option 'width'"):
        config.load_experiment("shapes", ["model.backbone=mobilenet_v2", "model.options.width=8"])


def test_extra_values_override_after_sets(tmp_path):
    cfg = config.load_experiment(
        "folder", ["data.data_dir=/nowhere"], extra={"data.data_dir": str(tmp_path)}
    )
    assert cfg.data.data_dir == str(tmp_path)


@pytest.mark.parametrize(
    ("override", "pieces"),
    [
        (
            "train.epoch=3",
            [
                "Unknown config key 'train.epoch'",
                "Did you mean 'train.epochs'",
                "tfcam config",
            ],
        ),
        ("trian.epochs=3", ["Unknown config key 'trian'", "Did you mean 'train'", "tfcam config"]),
        ("train.epochs=three", ["Invalid value for train.epochs: 'three'", "an integer"]),
        ("train.optimizer=adagrad", ["Invalid value for train.optimizer: 'adagrad'", "adam, sgd"]),
        ("data.resize=squash", ["data.resize", "stretch, pad, crop"]),
        (
            "model.backbone=resnet51",
            ["Unknown backbone 'resnet51'", "resnet50", "resnet50_v2", "tfcam backbones"],
        ),
        ("train.learning_rate=-1", ["train.learning_rate", "must be positive"]),
        ("data.val_fraction=1.5", ["data.val_fraction", "[0, 1)"]),
        ("model.options.beta=2", ["takes no option 'beta'", "width"]),
        ("data.augment.mixup=0.5", ["Unknown augmentation 'mixup'", "hflip"]),
        ("data.shapes.classes=circle,blob", ["Unknown shape class 'blob'", "triangle"]),
        ("train.freeze_backbone=maybe", ["train.freeze_backbone", "true or false"]),
        ("noequals", ["Invalid --set 'noequals'", "key=value"]),
    ],
)
def test_bad_overrides_name_the_key_and_the_choices(override, pieces):
    with pytest.raises(UserError) as info:
        config.load_experiment("shapes", [override])
    msg = str(info.value)
    assert "\n" not in msg
    for piece in pieces:
        assert piece in msg


def test_unknown_experiment_lists_the_bundled_ones():
    with pytest.raises(
        UserError,
        match=r"Unknown experiment 'shapez'. Did you mean 'shapes'.*Choose from: caltech101, .*folder, .*shapes",
    ):
        config.load_experiment("shapez")


def test_experiment_from_a_yaml_path(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text(
        "description: mine\ndata: {source: folder, image_size: 48}\nmodel: {backbone: simple_cnn, weights: none}\n"
    )
    cfg = config.load_experiment(str(p))
    assert (cfg.name, cfg.data.image_size, cfg.model.backbone) == ("mine", 48, "simple_cnn")
    with pytest.raises(UserError, match="Experiment file not found"):
        config.load_experiment(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(UserError, match="Cannot read experiment file"):
        config.load_experiment(str(bad))


def test_cross_field_rules():
    with pytest.raises(UserError, match="only one of train.fine_tune.unfreeze_from"):
        config.load_experiment(
            "folder", ["train.fine_tune.unfreeze_from=x", "train.fine_tune.unfreeze_top=2"]
        )
    with pytest.raises(UserError, match="no ImageNet weights"):
        config.load_experiment(
            "folder", ["model.backbone=resnet18_cifar", "model.weights=imagenet"]
        )
    with pytest.raises(UserError, match="needs at least 75"):
        config.load_experiment("folder", ["model.backbone=inception_v3", "data.image_size=64"])


def test_valid_keys_cover_nested_sections():
    keys = config.valid_keys()
    assert "train.fine_tune.learning_rate" in keys
    assert "data.shapes.max_distractors" in keys
    assert "model.backbone" in keys


@pytest.mark.parametrize("override", ["train.epoch=3", "trian.epochs=3", "data.imagesize=64"])
def test_unknown_key_names_at_most_five_near_keys_and_how_to_list_all(override):
    with pytest.raises(UserError) as info:
        config.load_experiment("shapes", [override])
    msg = str(info.value)
    named = [k for k in config.valid_keys() if f"{k}," in msg or f"{k}." in msg or f"'{k}'" in msg]
    assert 1 <= len(named) <= 5, (named, msg)  # was every key (~60) on one 1,181-character line
    assert len(msg) < 300
    assert msg.endswith("List every key with: tfcam config EXPERIMENT")
