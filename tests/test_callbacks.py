"""Training pieces on their own: schedules, history rows, optimizer and loss wiring, NaN guard."""

from __future__ import annotations

import math

import keras
import numpy as np
import pandas as pd
import pytest

from tfcam import config
from tfcam.train import callbacks as cb
from tfcam.train.fit import _compile


def test_schedules_by_hand():
    step = cb.step_or_cosine_schedule("step", 0.1, 10, step_every=3, gamma=0.5)
    assert [step(e) for e in range(7)] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])
    cos = cb.step_or_cosine_schedule("cosine", 0.2, 4)
    assert [cos(e) for e in range(4)] == pytest.approx(
        [0.2, 0.1 * (1 + math.cos(math.pi / 4)), 0.1, 0.1 * (1 + math.cos(3 * math.pi / 4))]
    )
    const = cb.step_or_cosine_schedule("constant", 0.3, 4)
    assert {const(e) for e in range(5)} == {0.3}


def test_history_rows_are_replaced_when_an_epoch_reruns(tmp_path):
    path = tmp_path / "history.csv"
    h = cb.HistoryCSV(path, phase=1)
    for epoch, loss in ((0, 1.0), (1, 0.8), (2, 0.7)):
        h.on_epoch_begin(epoch)
        h.on_epoch_end(epoch, {"loss": loss, "accuracy": 0.5, "learning_rate": 0.1})
    h2 = cb.HistoryCSV(path, phase=2)  # a resume that re-runs epoch 2 (index 1) in phase 2
    h2.on_epoch_begin(1)
    h2.on_epoch_end(1, {"loss": 0.6, "accuracy": 0.6, "learning_rate": 0.01})
    df = pd.read_csv(path)
    assert df["epoch"].tolist() == [1, 2]
    assert df["loss"].tolist() == pytest.approx([1.0, 0.6])
    assert df["phase"].tolist() == [1, 2]
    assert list(df.columns[:4]) == ["epoch", "phase", "loss", "accuracy"]


@pytest.mark.parametrize(
    ("overrides", "optimizer"),
    [
        ([], keras.optimizers.Adam),
        (["train.optimizer=sgd", "train.nesterov=true"], keras.optimizers.SGD),
    ],
)
def test_compile_wires_optimizer_and_label_smoothing(overrides, optimizer):
    cfg = config.load_experiment(
        "shapes_tiny", [*overrides, "train.label_smoothing=0.2", "train.momentum=0.8"]
    )
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    _compile(model, cfg, 0.05)
    assert isinstance(model.optimizer, optimizer)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.05)
    if optimizer is keras.optimizers.SGD:
        assert model.optimizer.momentum == pytest.approx(0.8) and model.optimizer.nesterov
    # Label smoothing 0.2 over 2 classes: targets (0.9, 0.1); check the loss value by hand.
    p = np.array([[0.7, 0.3]], "float32")
    want = -(0.9 * np.log(0.7) + 0.1 * np.log(0.3))
    assert float(model.loss(np.array([[1.0, 0.0]], "float32"), p)) == pytest.approx(want, rel=1e-5)


def test_nan_guard_stops_at_the_first_bad_batch():
    guard = cb.NaNGuard()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # set by fit() in real use
    guard.set_model(model)
    guard.on_epoch_begin(2)
    guard.on_train_batch_end(0, {"loss": 1.0})
    assert guard.tripped_at is None and not guard.model.stop_training
    guard.on_train_batch_end(4, {"loss": float("nan")})
    guard.on_train_batch_end(5, {"loss": float("inf")})
    assert guard.tripped_at == (3, 5) and guard.model.stop_training


def test_batch_history_holds_each_batch_own_loss_not_the_running_mean(tmp_path):
    """With a learning rate of 0 the weights never move, so each batch's own loss is the loss of
    the model on that batch alone, computed here independently. Batches of 4, 4 and 2 images:
    the last one is smaller, which a plain ``k·mean_k − (k−1)·mean_{k−1}`` would get wrong."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(10, 5)).astype("float32")
    y = keras.utils.to_categorical(np.arange(10) % 3, 3)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
    path = tmp_path / "batch_history.csv"
    model.fit(
        x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[cb.BatchHistoryCSV(path)]
    )
    rows = pd.read_csv(path)
    assert rows["step"].tolist() == list(range(6)) and rows["epoch"].tolist() == [0, 0, 0, 1, 1, 1]
    ce = keras.losses.CategoricalCrossentropy()
    want = [float(ce(y[i : i + 4], model(x[i : i + 4]))) for i in (0, 4, 8)]
    np.testing.assert_allclose(rows["loss"].to_numpy(), want * 2, rtol=1e-4)
    # Keras's running mean would repeat the first value and then drift towards the epoch mean.
    assert not np.allclose(want, np.cumsum([4 * want[0], 4 * want[1], 2 * want[2]]) / [4, 8, 10])
