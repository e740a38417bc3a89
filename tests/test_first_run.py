"""Issue 15, the front door from a terminal: a guided first run (``tfcam fit DIR``, shortcuts,
``tfcam config``, the help page, shared options, the footer), nothing dying late (layer names
checked before the first epoch, fine-tuning points per backbone, ``--data-dir`` found by its
layout) and ``tfcam predict`` over folders."""

from __future__ import annotations

import csv
import json
import re
import shlex

import click
import numpy as np
import pytest
import yaml
from conftest import make_folder, run_cli, write_image

from tfcam import config
from tfcam.cli import cli

WNIDS = ("n02093754", "n02088364")  # Australian terrier, Beagle (imagewoof's folder names)


def _history_phases(run) -> list[int]:
    with open(run / "history.csv", newline="") as f:
        return [int(r["phase"]) for r in csv.DictReader(f)]


def _fake_imagewoof(root, per_class=4, size=40):
    """imagewoof's layout (train/ and val/ of WordNet-ID folders) under any folder name."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for ci, wnid in enumerate(WNIDS):
            for i in range(n):
                img = np.clip(rng.normal(60 + 120 * ci, 20, (size, size, 3)), 0, 255)
                write_image(root / split / wnid / f"{wnid}_{i}.JPEG", img.astype(np.uint8))
    return root


# --------------------------------------------------------------------------------------------
# Help page and options


def test_help_lists_commands_in_workflow_order_with_whole_summaries():
    from tfcam.cli.group import WORKFLOW

    out = run_cli("--help", terminal_width=100).output
    section = out.split("Commands:\n", 1)[1]
    rows = [line for line in section.splitlines() if line.strip()]
    names = [line.split()[0] for line in rows]
    assert names == list(WORKFLOW)  # experiments, config, fit, evaluate, predict, explain, …
    assert names.index("fit") < names.index("predict") < names.index("compare")
    assert "…" not in section and "..." not in section
    assert all(line.startswith("  ") and not line.startswith("    ") for line in rows), section
    for name, summary in WORKFLOW.items():  # whole, on one line each
        assert f"{name:<17}{summary}" in section.replace("  " + name, name, 1) or summary in section


def _options():
    """``(command, option)`` for every visible option of every command."""
    for name, cmd in cli.commands.items():
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and p.name != "help":
                yield name, p


def test_every_option_of_every_command_has_help():
    missing = [f"{c} {p.opts[-1]}" for c, p in _options() if not (p.help or "").strip()]
    assert missing == []


def test_options_shared_by_commands_are_one_definition():
    """An option name means the same thing everywhere: same flags and type (they come from one
    decorator in tfcam/cli/options.py)."""
    by_name: dict[str, list] = {}
    for command, p in _options():
        by_name.setdefault(p.opts[-1], []).append((command, p))
    shared = {k: v for k, v in by_name.items() if len(v) > 1}
    assert {"--split", "--method", "--epochs", "--backbone", "--image-size", "--json"} <= set(
        shared
    )
    for name, uses in shared.items():
        first = uses[0][1]
        for command, p in uses[1:]:
            what = f"{name}: {uses[0][0]} vs {command}"
            assert (p.opts, p.secondary_opts) == (first.opts, first.secondary_opts), what
            assert repr(p.type) == repr(first.type), what
            # One value per flag everywhere; only whether a flag may repeat differs (--layer:
            # explain and features take several layers, evaluate-cams and receptive-field one).
            assert p.is_flag == first.is_flag, what
            assert p.multiple == first.multiple or name == "--layer", what
    # The shortcuts and --split: the very same objects, not look-alikes.
    for name in ("--split", "--epochs", "--lr", "--batch-size", "--backbone", "--image-size"):
        uses = [p for _, p in by_name[name] if name == "--split" or "(same as --set" in p.help]
        assert len(uses) >= 2, name
        assert len({id(p.type) for p in uses}) == 1, name
        assert len({p.help for p in uses}) == 1, name


def test_method_option_is_repeatable_and_comma_separated_in_evaluate_cams(tiny_run, monkeypatch):
    import tfcam.explain.evaluate_cams as ec

    seen = []
    monkeypatch.setattr(ec, "evaluate_cams", lambda run, methods, **kw: seen.append(methods) or {})
    for args, want in [
        (["-m", "gradcam", "-m", "scorecam,saliency"], ["gradcam", "scorecam", "saliency"]),
        (["--method", "layercam"], ["layercam"]),
        (["--methods", "gradcam,eigencam"], ["gradcam", "eigencam"]),  # the old name, hidden
    ]:
        r = run_cli("evaluate-cams", tiny_run, *args, "--json")
        assert r.exit_code == 0, r.output
        assert [m for v in seen[-1] for m in v.split(",")] == want  # the library splits commas


# --------------------------------------------------------------------------------------------
# tfcam config and unknown keys


def test_config_prints_the_resolved_experiment_as_commented_yaml(tmp_path):
    r = run_cli("config", "imagewoof", "--backbone", "mobilenet_v2", "--epochs", "2",
                "--set", "train.label_smoothing=0.2")  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = config.load_experiment(
        "imagewoof",
        ["train.label_smoothing=0.2", "model.backbone=mobilenet_v2", "train.epochs=2"],
    )
    assert yaml.safe_load(r.stdout) == config.to_dict(cfg)
    assert cfg.model.backbone == "mobilenet_v2" and cfg.train.epochs == 2
    assert cfg.train.fine_tune.unfreeze_from is None  # ResNet50's layer is not carried over
    comments = [line for line in r.stdout.splitlines() if line.lstrip().startswith("# ")]
    assert len(comments) >= 30
    assert "  # Phase 1 learning rate (--lr).\n  learning_rate: 0.001\n" in r.stdout
    saved = tmp_path / "mine.yaml"  # what it prints loads back as an experiment
    saved.write_text(r.stdout)
    assert config.load_experiment(str(saved)) == cfg

    keys = run_cli("config", "--keys")
    assert keys.stdout.split() == config.valid_keys()


def test_unknown_key_from_the_command_line_is_one_short_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_cli("fit", "--set", "train.epoch=3")
    assert r.exit_code == 2
    (line,) = r.stderr.strip().splitlines()
    assert "Did you mean 'train.epochs'?" in line and "tfcam config" in line
    assert len(line) < 300 and "data.shapes.seed" not in line
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# tfcam fit DIR, fit alone, the footer


def test_fit_a_folder_with_shortcuts_and_a_footer(tmp_path):
    data = make_folder(tmp_path / "my photos", classes=("ant", "bee", "cat"), per_class=6)
    run = tmp_path / "run"
    r = run_cli("fit", data, "--epochs", "1", "--backbone", "simple_cnn", "--image-size", "64",
                "--batch-size", "8", "--run-dir", run, "--no-report")  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = config.from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert cfg.name == "folder" and cfg.data.data_dir == str(data.resolve())
    assert (cfg.model.backbone, cfg.data.image_size, cfg.train.epochs) == ("simple_cnn", 64, 1)
    assert cfg.data.batch_size == 8
    assert cfg.model.weights == "none" and not cfg.train.freeze_backbone  # a random backbone trains
    assert _history_phases(run) == [1]
    metrics = json.loads((run / "metrics.json").read_text())
    out = r.stdout
    assert out.count("val: accuracy") == 1 and "val: accuracy" not in r.stderr  # once
    assert f"val: accuracy {metrics['val']['accuracy']:.4f}" in out
    assert re.search(rf"^Run directory: +{re.escape(str(run))}$", out, re.M)
    assert re.search(
        rf"^TensorBoard: +tensorboard --logdir {re.escape(str(run / 'tensorboard'))}$", out, re.M
    )
    explain = re.search(r"^Explain: +(.*)$", out, re.M)
    assert explain and shlex.split(explain.group(1))[:3] == ["tfcam", "explain", str(run)]
    with open(run / "splits.csv", newline="") as f:
        val = [row["path"] for row in csv.DictReader(f) if row["split"] == "val"]
    assert shlex.split(explain.group(1))[3:] == [val[0]]


def test_fit_alone_trains_the_embedded_default(monkeypatch, tmp_path):
    import tfcam.train.fit as fit_mod

    seen = {}

    def fake_fit(cfg, run_dir, **kw):
        seen["cfg"] = cfg
        return fit_mod.FitResult(run_dir=tmp_path / "run")

    monkeypatch.setattr(fit_mod, "fit", fake_fit)
    r = run_cli("fit")
    assert r.exit_code == 0, r.output
    assert seen["cfg"] == config.load_experiment("shapes")
    assert "Experiment: shapes" in r.stderr
    r = run_cli("fit", "--data-dir", make_folder(tmp_path / "d"), "--epochs", "3")
    assert r.exit_code == 0, r.output
    assert seen["cfg"].name == "folder" and seen["cfg"].train.epochs == 3


# --------------------------------------------------------------------------------------------
# Nothing dies late


def test_a_wrong_fine_tuning_layer_exits_2_before_the_first_epoch(tmp_path):
    data = make_folder(tmp_path / "photos", per_class=5)
    run = tmp_path / "run"
    r = run_cli("fit", data, "--backbone", "simple_cnn", "--image-size", "32", "--epochs", "1",
                "--set", "train.fine_tune.epochs=1",
                "--set", "train.fine_tune.unfreeze_from=conv5_block1_1_conv",
                "--run-dir", run, "--no-report")  # fmt: skip
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()[-1:]
    assert "Traceback" not in r.output
    assert "'conv5_block1_1_conv'" in line and "train.fine_tune.unfreeze_from" in line
    assert "simple_cnn" in line and "block4_conv1" in line  # the backbone's own last stage
    assert not (run / "history.csv").exists()  # no epoch ran


@pytest.mark.parametrize(
    ("overrides", "start"),
    [
        ([], "conv5_block1_1_conv"),  # imagewoof's ResNet50: its last stage
        (["model.backbone=mobilenet_v2"], "block_13_expand"),
        (["model.backbone=vgg16"], "block5_conv1"),
        (
            ["model.backbone=mobilenet_v2", "train.fine_tune.unfreeze_from=block_15_expand"],
            "block_15_expand",
        ),
        (["train.fine_tune.unfreeze_top=7"], None),
    ],
)
def test_fine_tuning_starts_at_the_backbones_last_stage(overrides, start):
    cfg = config.load_experiment("imagewoof", overrides)
    assert config.fine_tune_start(cfg) == start


@pytest.mark.parametrize(
    ("backbone", "size"),
    [
        ("simple_cnn", 32),
        ("resnet18_cifar", 32),
        ("mobilenet_v2", 32),
        pytest.param("resnet50", 32, marks=pytest.mark.slow),
        pytest.param("vgg16", 32, marks=pytest.mark.slow),
        pytest.param("mobilenet", 32, marks=pytest.mark.slow),
        pytest.param("efficientnet_b0", 32, marks=pytest.mark.slow),
        pytest.param("inception_v3", 75, marks=pytest.mark.slow),
        pytest.param("xception", 71, marks=pytest.mark.slow),
        pytest.param("densenet121", 32, marks=pytest.mark.slow),
    ],
)
def test_every_backbones_last_stage_is_one_of_its_layers(tiny_classifier, backbone, size):
    from tfcam.models.build import backbone_layers, set_backbone_trainable
    from tfcam.models.registry import get_backbone

    model = tiny_classifier(backbone=backbone, num_classes=2, image_size=size)
    names = [layer.name for layer in backbone_layers(model)]
    stage = get_backbone(backbone).last_stage
    assert stage in names
    n = set_backbone_trainable(model, True, from_layer=stage)
    assert 0 < n < len(names)  # the top of the network, not all of it


def test_data_dir_is_found_by_its_layout_not_its_name(tmp_path):
    from tfcam.data.sources import load_splits

    flat = _fake_imagewoof(tmp_path / "dogs, named anyhow")
    wrapped = _fake_imagewoof(tmp_path / "download" / "imagewoof-copy")
    for given, root in [(flat, flat), (tmp_path / "download", wrapped)]:
        cfg = config.load_experiment("imagewoof", data_dir=given, check_paths=True)
        splits = load_splits(cfg.data)
        assert splits.root == str(root.resolve())
        assert splits.class_names == ["Beagle", "Australian terrier"]  # sorted by folder name
        assert {s: len(f) for s, f in splits.files.items()} == {"train": 8, "val": 4}
    plain = make_folder(tmp_path / "wrap" / "classes", classes=("x", "y", "z"))
    cfg = config.load_experiment("folder", data_dir=tmp_path / "wrap")
    assert load_splits(cfg.data).root == str(plain.resolve())


@pytest.mark.slow
def test_imagewoof_with_mobilenet_v2_trains_both_phases(shared, tmp_path):
    weights = shared / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5"
    data = _fake_imagewoof(tmp_path / "woof (my copy)", per_class=4)
    run = tmp_path / "run"
    r = run_cli("fit", "-e", "imagewoof", "--backbone", "mobilenet_v2", "--weights", weights,
                "--data-dir", data, "--image-size", "32", "--epochs", "1", "--batch-size", "4",
                "--set", "train.fine_tune.epochs=1", "--run-dir", run, "--no-report")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert _history_phases(run) == [1, 2]
    assert "block_13_expand" not in r.stderr or "Unknown" not in r.stderr
    cfg = config.from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    assert config.fine_tune_start(cfg) == "block_13_expand"


# --------------------------------------------------------------------------------------------
# predict over folders


def test_predict_lists_every_image_of_a_folder(tiny_run, tmp_path):
    import pandas as pd

    splits = pd.read_csv(tiny_run / "splits.csv")
    test = splits[splits["split"] == "test"]["path"].tolist()
    folder = tmp_path / "to predict"
    from PIL import Image

    expected = []
    for i, src in enumerate(test[:5]):
        sub = folder / ("nested" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        dst = sub / f"img_{i}.png"
        Image.open(src).save(dst)
        expected.append(dst)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(b"")
    r = run_cli("predict", tiny_run, folder, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert [g["image"] for g in got] == sorted(map(str, expected))
    one = json.loads(run_cli("predict", tiny_run, *sorted(map(str, expected)), "--json").stdout)
    assert got == one  # the same predictions as naming each file
    r = run_cli("predict", tiny_run, tmp_path / "missing")
    assert r.exit_code == 2 and "Input not found" in r.stderr
