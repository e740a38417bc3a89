"""Feature cache: one epoch on cached features equals one epoch through the full model; a cached
run ends with the trained head inside its saved model; flipped views are cached too and drawn with
their probabilities; the head phase stops on the validation loss and keeps its best head."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from tfcam import config
from tfcam.data.pipeline import make_dataset
from tfcam.data.sources import load_splits
from tfcam.models.build import load_model, set_backbone_trainable
from tfcam.train import feature_cache as fc
from tfcam.train.fit import fit


def _classifier(tiny_classifier, seed: int):
    model = tiny_classifier(
        num_classes=3, image_size=32, seed=seed, options={"width": 8}, hidden_units=6, dropout=0.0
    )
    set_backbone_trainable(model, False)
    return model


def test_one_epoch_on_cached_features_equals_one_epoch_through_the_model(tiny_classifier):
    cfg = config.load_experiment("shapes_tiny")
    splits = load_splits(cfg.data)
    ds = make_dataset(
        files=splits.files["train"],
        labels=splits.labels["train"],
        mode="eval",
        image_size=32,
        batch_size=4,
        num_classes=3,
    )
    full, cached = _classifier(tiny_classifier, 0), _classifier(tiny_classifier, 0)
    for a, b in zip(full.get_weights(), cached.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    def compile_(m):
        m.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=keras.losses.CategoricalCrossentropy(),
        )

    compile_(full)
    full.fit(ds, epochs=1, shuffle=False, verbose=0)

    x, y = fc.extract(cached, ds)
    assert x.shape == (len(splits.files["train"]), 8 * 8)  # pooled width of simple_cnn width 8
    head = fc.head_model(cached)
    assert [layer.name for layer in head.layers[1:]] == ["head_dense", "predictions"]
    compile_(head)
    head.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    fc.copy_head_weights(head, cached)

    moved = 0
    for name in ("head_dense", "predictions"):
        for a, b, before in zip(
            full.get_layer(name).get_weights(),
            cached.get_layer(name).get_weights(),
            _classifier(tiny_classifier, 0).get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, atol=1e-4)
            moved += not np.allclose(a, before)
    assert moved  # the head did train
    # The frozen backbone is untouched on both sides.
    np.testing.assert_array_equal(
        full.get_layer("block1_conv1").get_weights()[0],
        cached.get_layer("block1_conv1").get_weights()[0],
    )


def test_cached_run_saves_the_trained_head(tmp_path, caplog):
    cfg = config.load_experiment(
        "shapes_tiny", ["train.freeze_backbone=true", "train.epochs=3", "data.augment.hflip=0"]
    )
    assert fc.cacheable(cfg)
    assert fc.cacheable(
        config.load_experiment(
            "shapes_tiny", ["train.freeze_backbone=true", "data.augment.hflip=0.5"]
        )
    )
    randomly = config.load_experiment(
        "shapes_tiny", ["train.freeze_backbone=true", "data.augment.shift_scale_rotate=0.5"]
    )
    assert "shift_scale_rotate has no finite set of views" in fc.why_not_cacheable(randomly)
    with caplog.at_level(logging.INFO, logger="tfcam"):
        result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    assert any("cached features" in r.getMessage() for r in caplog.records)
    run = result.run_dir
    hist = pd.read_csv(run / "history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3]
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    # The saved model is the full classifier with the trained head: its validation accuracy,
    # computed here independently, is the one the run reported.
    model = load_model(run / "model.keras")
    splits = load_splits(cfg.data)
    ds = make_dataset(
        files=splits.files["val"],
        labels=splits.labels["val"],
        mode="eval",
        image_size=32,
        batch_size=8,
        num_classes=3,
    )
    pred = np.concatenate([model.predict(x, verbose=0).argmax(1) for x, _ in ds])
    acc = float((pred == np.asarray(splits.labels["val"])).mean())
    metrics = json.loads((run / "metrics.json").read_text())
    assert acc == metrics["val"]["accuracy"]
    assert abs(acc - best["value"]) < 1e-6  # restored to the best epoch, which the checkpoint saw


def test_views_of_flips_and_quarter_turns_with_their_probabilities():
    assert fc.views({}) == [("original", (), 1.0)]
    assert fc.views({"hflip": 0.5}) == [("original", (), 0.5), ("hflip", ("hflip",), 0.5)]
    assert fc.views({"hflip": 1.0}) == [("hflip", ("hflip",), 1.0)]  # never the original
    both = {name: p for name, _, p in fc.views({"hflip": 0.5, "vflip": 0.25, "pad_crop": 0})}
    assert both == {
        "original": 0.375,
        "vflip": 0.125,
        "hflip": 0.375,
        "hflip+vflip": 0.125,
    }
    turns = {name: p for name, _, p in fc.views({"rotate90": 0.6})}
    assert turns == pytest.approx({"original": 0.4, "rot90": 0.2, "rot180": 0.2, "rot270": 0.2})


def test_cached_views_are_the_features_of_the_augmented_images(tiny_classifier):
    import tensorflow as tf

    from tfcam.data import augment

    model = _classifier(tiny_classifier, 1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    targets = np.eye(3, dtype="float32")[[0, 1, 2, 0, 1, 2]]
    ds = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4)
    vs = fc.views({"hflip": 0.5, "vflip": 0.5})
    x, y = fc.extract(model, ds, [ops for _, ops, _ in vs])
    assert x.shape == (4, 6, 64) and y.shape == (6, 3)
    # Independently: the unfolded model up to its pooling layer, on images flipped by NumPy.
    pooled = keras.Model(model.input, model.get_layer("head_pool").output)
    flips = {
        "original": images,
        "hflip": images[:, :, ::-1],
        "vflip": images[:, ::-1],
        "hflip+vflip": images[:, ::-1, ::-1],
    }
    for i, (name, _, _) in enumerate(vs):
        want = np.asarray(pooled(flips[name], training=False))
        np.testing.assert_allclose(x[i], want, rtol=1e-4, atol=1e-4)
    assert not np.allclose(x[0], x[1], atol=1e-3)  # the views do differ
    # The quarter turns match the augmentation's own operation.
    turns = fc.views({"rotate90": 1.0})
    x, _ = fc.extract(model, ds, [ops for _, ops, _ in turns])
    for i, (name, _, _) in enumerate(turns):
        k = int(name[3:]) // 90
        want = np.asarray(pooled(np.rot90(images, k, axes=(1, 2)).copy(), training=False))
        np.testing.assert_allclose(x[i], want, rtol=1e-4, atol=1e-4)
    assert augment.AUGMENTATIONS["rotate90"] is augment.rotate90


def test_view_sampler_shows_every_image_once_per_epoch_as_a_view_drawn_by_probability():
    n, d = 50, 3
    features = np.stack(
        [np.full((n, d), v, "float32") + np.arange(n)[:, None] * 10 for v in (0, 1)]
    )
    targets = np.arange(n)
    sampler = fc.ViewSampler(features, targets, [0.75, 0.25], batch_size=16, seed=0)
    assert len(sampler) == 4
    chosen = []
    for _ in range(200):
        xs, ys = zip(*(sampler[i] for i in range(len(sampler))), strict=True)
        x, seen = np.concatenate(xs), np.concatenate(ys)
        assert sorted(seen.tolist()) == list(range(n))  # each image exactly once
        view = x[:, 0] - seen * 10  # which view each image was shown as
        assert set(np.unique(view)) <= {0.0, 1.0}
        np.testing.assert_array_equal(x, features[view.astype(int), seen])
        chosen.append(view.mean())
        sampler.on_epoch_end()
    assert abs(np.mean(chosen) - 0.25) < 0.01  # 10,000 draws: the standard error is 0.0043
    assert np.std(chosen) > 0  # drawn again each epoch


def test_best_head_stops_after_patience_and_restores_the_best_epoch():
    from tfcam.train.callbacks import BestHead

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.stop_training = False  # as Model.fit sets it
    stop = BestHead(patience=2)
    stop.set_model(model)
    stop.on_train_begin()
    losses = [0.9, 0.5, 0.4, 0.45, 0.41, 0.3]
    for epoch, loss in enumerate(losses):
        model.layers[0].kernel.assign(np.full((2, 1), epoch, "float32"))
        stop.on_epoch_end(epoch, {"val_loss": loss})
        if model.stop_training:
            break
    assert epoch == 4 and model.stop_training  # epochs 4 and 5 (1-based) no better than 0.4
    stop.on_train_end()
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), np.full((2, 1), 2.0))
    assert stop.summary() == {
        "last_epoch": 5,
        "best_epoch": 3,
        "best_val_loss": 0.4,
        "stopped_early": True,
    }
    assert "stopped at epoch 5" in stop.describe() and "epoch 3" in stop.describe()


def test_head_phase_with_flips_runs_on_cached_views_stops_on_val_loss_then_fine_tunes_from_the_best_head(
    tmp_path, caplog
):
    cfg = config.load_experiment(
        "shapes_tiny",
        [
            "train.freeze_backbone=true",
            "data.augment.hflip=0.5",
            "train.epochs=60",
            "train.head_patience=2",
            "train.learning_rate=0.05",
            "train.fine_tune.epochs=1",
            "train.fine_tune.unfreeze_top=2",
        ],
    )
    with caplog.at_level(logging.INFO, logger="tfcam"):
        result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    run = result.run_dir
    messages = [r.getMessage() for r in caplog.records]
    assert any("cached features" in m and "2 view(s): original, hflip" in m for m in messages)
    state = json.loads((run / "state.json").read_text())
    info = state["phase1"]
    assert info["feature_cache"] is True and info["views"] == ["original", "hflip"]
    hist = pd.read_csv(run / "history.csv")
    head = hist[hist["phase"] == 1]
    # Stopped early: the best epoch by validation loss, then two epochs no better.
    best_epoch = int(head.loc[head["val_loss"].idxmin(), "epoch"])
    assert info["stopped_early"] and len(head) < 60
    assert info["best_epoch"] == best_epoch and info["last_epoch"] == len(head) == best_epoch + 2
    # Phase 2 numbers its epochs right after phase 1's last one.
    assert hist["epoch"].tolist() == list(range(1, len(head) + 2))
    assert hist["phase"].tolist()[-1] == 2
    # Phase 2 started from the best head: the phase-1 end weights give its validation loss.
    model = load_model(run / "model.keras")
    model.load_weights(run / "checkpoints" / "phase1_end.weights.h5")
    splits = load_splits(cfg.data)
    ds = make_dataset(
        files=splits.files["val"],
        labels=splits.labels["val"],
        mode="eval",
        image_size=32,
        batch_size=8,
        num_classes=3,
    )
    probs = np.concatenate([model.predict(x, verbose=0) for x, _ in ds])
    onehot = np.eye(3)[splits.labels["val"]]
    loss = float(np.mean(-np.log(np.clip((probs * onehot).sum(1), 1e-7, 1))))
    assert abs(loss - head["val_loss"].min()) < 1e-4, (loss, head["val_loss"].tolist())


@pytest.mark.parametrize("name", ["folder", "imagewoof"])
def test_recipes_train_the_head_on_cached_flips_to_convergence(name):
    """The bundled transfer recipes keep their flips and the feature cache, and give the head
    room to converge (stopped by val_loss, not by a small epoch count)."""
    # The file in this checkout (by path: an editable install may map the names elsewhere).
    cfg = config.load_experiment(str(Path(__file__).parents[1] / "experiments" / f"{name}.yaml"))
    assert cfg.data.augment.get("hflip", 0) > 0
    assert fc.cacheable(cfg), fc.why_not_cacheable(cfg)
    assert cfg.train.epochs >= 50 and 0 < cfg.train.head_patience <= 10
    assert cfg.train.schedule == "constant"  # a cosine over the cap would barely decay anyway
