"""Training end to end: the run directory contract, odd files, two phases, NaN stop, resume after kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import write_image
from PIL import Image

from tfcam import config
from tfcam.data.pipeline import read_images
from tfcam.errors import TrainingDiverged, UserError
from tfcam.train.fit import fit

RUN_FILES = (
    "config.yaml",
    "class_names.json",
    "splits.csv",
    "data_report.json",
    "history.csv",
    "metrics.json",
    "model.keras",
    "state.json",
    "predictions_val.csv",
    "report/index.html",
    "checkpoints/best.keras",
)


def test_run_directory_contract(tiny_run):
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), name
    assert list((tiny_run / "tensorboard").rglob("events.out.tfevents.*")), (
        "TensorBoard event files"
    )
    assert not [p for p in tiny_run.rglob(".*") if p.is_file()], "no temporary files left behind"
    cfg = config.load_experiment("shapes_tiny")
    assert config.from_dict(yaml.safe_load((tiny_run / "config.yaml").read_text())) == cfg
    assert json.loads((tiny_run / "class_names.json").read_text()) == list(cfg.data.shapes.classes)
    assert json.loads((tiny_run / "state.json").read_text())["status"] == "completed"

    hist = pd.read_csv(tiny_run / "history.csv")
    assert hist["epoch"].tolist() == [1, 2] and hist["phase"].tolist() == [1, 1]
    for col in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert hist[col].notna().all(), col


def test_metrics_agree_with_an_independent_evaluation(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert set(metrics) == {"val", "test"}
    names = json.loads((tiny_run / "class_names.json").read_text())
    splits = pd.read_csv(tiny_run / "splits.csv")
    val = splits[splits["split"] == "val"]
    model = keras.saving.load_model(tiny_run / "model.keras")
    x = read_images(val["path"].tolist(), 32)
    probs = model.predict(x, verbose=0)
    y = np.array([names.index(c) for c in val["label"]])
    assert metrics["val"]["n"] == len(val)
    assert metrics["val"]["accuracy"] == pytest.approx(float((probs.argmax(1) == y).mean()))
    want_loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1)).mean())
    assert metrics["val"]["loss"] == pytest.approx(want_loss, rel=1e-4)
    assert np.array(metrics["val"]["confusion"]).sum() == len(val)
    # The final model is the best checkpoint (train.restore_best): same val accuracy as best.json.
    best = json.loads((tiny_run / "checkpoints" / "best.json").read_text())
    assert best["value"] == pytest.approx(metrics["val"]["accuracy"], abs=1e-6)
    preds = pd.read_csv(tiny_run / "predictions_val.csv")
    assert (preds["label"] == preds["predicted"]).mean() == pytest.approx(
        metrics["val"]["accuracy"]
    )


def _odd_folder(root: Path) -> tuple[set[str], set[str]]:
    """Every format the loader must read, plus broken files; returns (good, broken) paths."""
    rng = np.random.default_rng(0)
    good, broken = set(), set()
    for ci, cls in enumerate(("dark", "light")):
        d = root / cls
        base = 60 + 120 * ci

        def arr(h=24, w=32, base=base):
            return np.clip(rng.normal(base, 25, (h, w, 3)), 0, 255).astype(np.uint8)

        for i in range(3):
            good.add(str(write_image(d / f"plain{i}.jpg", arr())))
        good.add(str(write_image(d / "x.png", arr())))
        good.add(str(write_image(d / "x.bmp", arr())))
        good.add(str(write_image(d / "grey.jpg", arr()[..., 0])))
        good.add(
            str(write_image(d / "rgba.png", np.dstack([arr(), np.full((24, 32), 255, np.uint8)])))
        )
        good.add(str(write_image(d / "tiny.png", arr(1, 1))))
        p = d / "cmyk.jpg"
        Image.fromarray(arr()).convert("CMYK").save(p)
        good.add(str(p))
        p = d / "g16.png"
        Image.fromarray(arr()[..., 0].astype(np.uint16) * 257).save(p)
        good.add(str(p))
        p = d / "anim.gif"
        Image.fromarray(arr()).save(p, save_all=True, append_images=[Image.fromarray(arr())])
        good.add(str(p))
        (d / "zero.jpg").write_bytes(b"")
        (d / "notes.jpg").write_text("a text file that pretends to be a JPEG")
        jpeg = (d / "plain0.jpg").read_bytes()
        (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
        (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.bytes(200))
        broken |= {str(d / n) for n in ("zero.jpg", "notes.jpg", "truncated.jpg", "garbage.png")}
    # One very large JPEG: decoded at 1/8 scale while training at 32 px.
    big = np.zeros((12000, 12000, 3), np.uint8)
    big[::16] = 200
    p = root / "light" / "huge.jpg"
    Image.fromarray(big).save(p, quality=50)
    del big
    good.add(str(p))
    return good, broken


def test_odd_files_are_read_and_broken_ones_skipped(tmp_path, caplog):
    good, broken = _odd_folder(tmp_path / "data")
    cfg = config.load_experiment(
        "folder",
        [
            "model.backbone=simple_cnn",
            "model.weights=none",
            "data.image_size=32",
            "data.batch_size=8",
            "train.epochs=1",
            "train.freeze_backbone=false",
            "data.val_fraction=0.25",
        ],
        extra={"data.data_dir": str(tmp_path / "data")},
    )
    with caplog.at_level("WARNING", logger="tfcam"):
        result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    report = json.loads((result.run_dir / "data_report.json").read_text())
    assert {item["path"] for item in report["skipped"]} == {str(Path(p).resolve()) for p in broken}
    used = set(pd.read_csv(result.run_dir / "splits.csv")["path"])
    assert used == {str(Path(p).resolve()) for p in good}
    assert sum(sum(c.values()) for c in report["counts"].values()) == len(good)
    assert report["image_sizes"]["max_hw"] == [12000, 12000]
    assert any("tiny.png" in item["path"] for item in report["suspicious"])
    # One warning lists every skipped file.
    skipped_warnings = [r.getMessage() for r in caplog.records if "Skipped" in r.getMessage()]
    assert len(skipped_warnings) == 1
    for p in broken:
        assert Path(p).name in skipped_warnings[0]
    assert (result.run_dir / "model.keras").is_file()


def test_two_phases_freeze_then_fine_tune(tmp_path, tiny_classifier):
    cfg = config.load_experiment(
        "shapes_tiny",
        [
            "train.epochs=1",
            "train.freeze_backbone=true",
            "train.fine_tune.epochs=1",
            "train.fine_tune.unfreeze_top=4",
            "train.fine_tune.learning_rate=0.0001",
        ],
    )
    result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    hist = pd.read_csv(result.run_dir / "history.csv")
    assert hist["epoch"].tolist() == [1, 2] and hist["phase"].tolist() == [1, 2]
    assert hist["learning_rate"].tolist() == pytest.approx([0.003, 0.0001])

    # Phase 1 left the frozen backbone exactly as initialised (same seed, same build), batch-norm
    # statistics included: frozen batch normalisation runs in inference mode.
    build = {"num_classes": 3, "image_size": 32, "options": {"width": 8}, "dropout": 0.0}
    fresh = tiny_classifier(seed=cfg.train.seed, **build)
    after_phase1 = tiny_classifier(**build)
    after_phase1.load_weights(result.run_dir / "checkpoints" / "phase1_end.weights.h5")
    for name in ("block1_conv1", "block1_conv1_bn", "block4_conv2"):
        for a, b in zip(
            fresh.get_layer(name).get_weights(),
            after_phase1.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(
        fresh.get_layer("predictions").get_weights()[0],
        after_phase1.get_layer("predictions").get_weights()[0],
    )


def test_binary_model_trains_and_reports_two_class_metrics(tmp_path):
    cfg = config.load_experiment(
        "shapes_tiny", ["data.shapes.classes=circle,star", "model.binary=true", "train.epochs=1"]
    )
    result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    model = keras.saving.load_model(result.run_dir / "model.keras")
    assert model.output.shape[-1] == 1
    m = result.metrics["val"]
    assert set(m["per_class"]) == {"circle", "star"}
    assert np.array(m["confusion"]).shape == (2, 2)


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    cfg = config.load_experiment(
        "shapes_tiny", ["train.optimizer=sgd", "train.learning_rate=1e30", "train.epochs=2"]
    )
    with pytest.raises(
        TrainingDiverged,
        match=r"loss became NaN or infinite at epoch \d+, batch \d+.*learning rate",
    ):
        fit(cfg, tmp_path / "run", verbose=0, report=False)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["status"] == "diverged"
    assert not (tmp_path / "run" / "model.keras").exists()
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    assert not np.isfinite(hist["loss"].iloc[-1])


def test_existing_run_directory_is_never_overwritten(tiny_run):
    before = (tiny_run / "metrics.json").read_bytes()
    with pytest.raises(UserError, match="already exists and is not empty.*--resume"):
        fit(config.load_experiment("shapes_tiny"), tiny_run, verbose=0)
    with pytest.raises(UserError, match="already complete"):
        fit(None, tiny_run, resume=True, verbose=0)
    assert (tiny_run / "metrics.json").read_bytes() == before


def test_sigkill_during_third_epoch_then_resume(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [
        sys.executable,
        "-m",
        "tfcam.cli",
        "fit",
        "-e",
        "shapes_tiny",
        "--run-dir",
        str(run_dir),
        "--set",
        "train.epochs=5",
        "--set",
        "data.shapes.train_per_class=150",
        "--set",
        "data.batch_size=8",
        "--no-report",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    history = run_dir / "history.csv"
    deadline = time.time() + 300
    killed_during = None
    while time.time() < deadline and proc.poll() is None:
        if history.is_file() and len(pd.read_csv(history)) >= 2:
            proc.send_signal(signal.SIGKILL)
            killed_during = len(pd.read_csv(history)) + 1
            break
        time.sleep(0.02)
    proc.wait(timeout=60)
    assert killed_during == 3, (
        f"expected to kill during epoch 3, output: {proc.stdout.read().decode()[-2000:]}"
    )
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "model.keras").exists()

    out = subprocess.run(
        [sys.executable, "-m", "tfcam.cli", "fit", "--resume", str(run_dir), "--no-report"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Epoch 1/5" not in out.stdout, "the resumed run must not start over"
    hist = pd.read_csv(history)
    assert hist["epoch"].tolist() == [1, 2, 3, 4, 5]
    model = keras.saving.load_model(run_dir / "model.keras")
    assert model.get_layer("predictions").output.shape[-1] == 3
    assert json.loads((run_dir / "state.json").read_text())["status"] == "completed"


def test_resume_after_the_last_phase_keeps_its_weights(tmp_path):
    # Killed after training finished but before model.keras was written: the resume must not
    # start from fresh weights (nor train again), but finish from the phase's saved end state.
    cfg = config.load_experiment("shapes_tiny", ["train.restore_best=false", "train.epochs=1"])
    result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    run_dir = result.run_dir
    first = keras.saving.load_model(run_dir / "model.keras")
    (run_dir / "model.keras").unlink()
    state = json.loads((run_dir / "state.json").read_text())
    (run_dir / "state.json").write_text(json.dumps({**state, "status": "interrupted"}))
    fit(None, run_dir, resume=True, verbose=0, report=False)
    again = keras.saving.load_model(run_dir / "model.keras")
    for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert pd.read_csv(run_dir / "history.csv")["epoch"].tolist() == [1]


def test_gpu_switches_are_wired_and_harmless_on_cpu(tmp_path, caplog, monkeypatch, tiny_classifier):
    import logging

    import tensorflow as tf

    from tfcam.train import fit as fit_mod

    cfg = config.load_experiment(
        "shapes_tiny", ["train.epochs=1", "train.mixed_precision=true", "train.jit_compile=true"]
    )
    compiled = {}
    real_compile = keras.Model.compile

    def spy(self, *a, **k):
        compiled["jit_compile"] = k.get("jit_compile")
        return real_compile(self, *a, **k)

    monkeypatch.setattr(keras.Model, "compile", spy)
    with caplog.at_level(logging.WARNING, logger="tfcam"):
        result = fit(cfg, tmp_path / "run", verbose=0, report=False)
    assert compiled["jit_compile"] is True
    assert not tf.config.list_physical_devices("GPU")
    assert any("mixed_precision is for GPUs" in r.getMessage() for r in caplog.records)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert np.isfinite(result.metrics["val"]["loss"])
    # Where a GPU exists the policy is applied (checked through the same function).
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0"])
    try:
        assert fit_mod.set_precision(cfg) == "mixed_float16"
        m = tiny_classifier(num_classes=3, image_size=32)
        assert m.get_layer("predictions").compute_dtype == "float32"
        assert m.get_layer("block1_conv1").compute_dtype == "float16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
