"""Feature cache: one epoch on cached features equals one epoch through the full model; a cached
run ends with the trained head inside its saved model."""

from __future__ import annotations

import json
import logging

import keras
import numpy as np
import pandas as pd

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
    assert not fc.cacheable(
        config.load_experiment(
            "shapes_tiny", ["train.freeze_backbone=true", "data.augment.hflip=0.5"]
        )
    )
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
