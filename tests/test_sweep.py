"""Sweeps (`tfcam fit --sweep`), their resumption after a kill, and `tfcam compare`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

CLI = [sys.executable, "-c", "from tfcam.cli import main; main()"]
METRICS = ["val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_epoch", "seconds"]


def _hparams_sessions(logdir: Path) -> dict[str, dict]:
    """``{run: {hparam: value}}`` from the HParams plugin's session summaries, as TensorBoard
    reads them."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    m = EventMultiplexer().AddRunsFromDirectory(str(logdir))
    m.Reload()
    out = {}
    for run, tags in m.PluginRunToTagToContent("hparams").items():
        for tag, content in tags.items():
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if tag == "_hparams_/session_start_info":
                hp = data.session_start_info.hparams
                out[run] = {
                    k: (v.number_value if v.HasField("number_value") else v.string_value)
                    for k, v in hp.items()
                }
            elif tag == "_hparams_/experiment":
                out["<experiment>"] = {
                    h.name: len(h.domain_discrete.values) for h in data.experiment.hparam_infos
                }
    return out


def test_two_by_two_sweep_runs_four_trials_with_hparams_and_compare(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        "fit",
        "-e",
        "shapes_tiny",
        "--sweep",
        "train.learning_rate=0.01,0.001",
        "--sweep",
        "data.batch_size=8,16",
        "--set",
        "train.epochs=1",
        "--no-report",
        "--run-dir",
        str(sweep),
    )
    assert r.exit_code == 0, (r.output, r.exception)
    spec = json.loads((sweep / "sweep.json").read_text())
    assert [t["status"] for t in spec["trials"]] == ["completed"] * 4
    for t in spec["trials"]:
        run = sweep / t["run_dir"]
        for name in ("config.yaml", "model.keras", "metrics.json", "history.csv", "splits.csv"):
            assert (run / name).is_file(), (run, name)
        assert json.loads((run / "state.json").read_text())["status"] == "completed"
        import yaml

        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert str(cfg["train"]["learning_rate"]) == str(
            float(t["assignments"]["train.learning_rate"])
        )
        assert cfg["data"]["batch_size"] == int(t["assignments"]["data.batch_size"])

    sessions = _hparams_sessions(sweep / "hparams")
    assert sessions.pop("<experiment>") == {"train.learning_rate": 2, "data.batch_size": 2}
    assert len(sessions) == 4
    assert sorted((v["train.learning_rate"], v["data.batch_size"]) for v in sessions.values()) == [
        (0.001, 8.0),
        (0.001, 16.0),
        (0.01, 8.0),
        (0.01, 16.0),
    ]

    r = run_cli("compare", str(sweep), "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    result = json.loads(r.stdout)
    assert result["columns"] == ["data.batch_size", "train.learning_rate", *METRICS]
    assert len(result["runs"]) == 4
    accs = [row["val_accuracy"] for row in result["runs"]]
    assert accs == sorted(accs, reverse=True)
    for row in result["runs"]:
        m = json.loads((Path(row["path"]) / "metrics.json").read_text())
        assert row["val_accuracy"] == pytest.approx(m["val"]["accuracy"], abs=1e-4)
    html = (sweep / "compare" / "index.html").read_text()
    assert html.count("report/index.html") == 0  # --no-report: no reports to link
    assert (sweep / "compare" / "learning_curves.png").stat().st_size > 5000


def test_killed_sweep_resumes_only_the_third_and_fourth_trials(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [*CLI, "fit", "-e", "shapes_tiny", "--sweep", "train.learning_rate=0.01,0.001",
           "--sweep", "data.batch_size=8,16", "--set", "train.epochs=4", "--no-report",
           "--run-dir", str(sweep)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    third = None
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if (sweep / "sweep.json").is_file():
                try:
                    spec = json.loads((sweep / "sweep.json").read_text())
                except json.JSONDecodeError:
                    spec = None
                if spec and spec["trials"][2]["status"] == "running":
                    third = sweep / spec["trials"][2]["run_dir"]
                    hist = third / "history.csv"
                    if hist.is_file() and len(hist.read_text().strip().splitlines()) >= 2:
                        break  # the third trial has finished an epoch: kill it mid-training
            if proc.poll() is not None:
                pytest.fail("the sweep ended before its third trial could be killed")
            time.sleep(0.05)
        else:
            pytest.fail("the third trial did not start in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    spec = json.loads((sweep / "sweep.json").read_text())
    assert [t["status"] for t in spec["trials"]] == ["completed", "completed", "running", "pending"]
    first_two = [sweep / t["run_dir"] / "model.keras" for t in spec["trials"][:2]]
    stamps = [p.stat().st_mtime_ns for p in first_two]

    out = subprocess.run([*CLI, "fit", "--resume", str(sweep)], env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stderr
    ids = [t["id"] for t in spec["trials"]]
    assert f"Trial 1/4 {ids[0]}: completed, skipped" in log
    assert f"Trial 2/4 {ids[1]}: completed, skipped" in log
    assert f"Trial 3/4 {ids[2]}: " in log and "(resuming)" in log
    assert f"Trial 4/4 {ids[3]}: train.learning_rate=0.001, data.batch_size=16" in log
    assert [p.stat().st_mtime_ns for p in first_two] == stamps  # not trained again
    history = pd.read_csv(third / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]  # resumed, each epoch once

    table = pd.read_csv(sweep / "compare" / "compare.csv", index_col="run")
    assert sorted(table.index) == sorted(ids)
    assert len(table) == 4


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("train.learning_rate=0.01,abc", "train.learning_rate: 'abc' (expected a number)"),
        ("train.learning_rate=0.01,-1", "train.learning_rate: -1.0 (must be positive)"),
        ("data.batch_size=8,0", "data.batch_size: 0 (must be at least 1)"),
        ("train.lerning_rate=0.1", "Unknown config key 'train.lerning_rate'"),
        ("train.epochs", "expected key=value1,value2"),
    ],
)
def test_bad_sweep_value_exits_2_before_training(tmp_path, sweep, expected):
    r = run_cli("fit", "-e", "shapes_tiny", "--sweep", sweep, "--run-dir", str(tmp_path / "s"))
    assert r.exit_code == 2, r.output
    assert expected in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "s").exists()  # nothing was written, nothing trained


def test_a_diverging_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "s"
    r = run_cli(
        "fit",
        "-e",
        "shapes_tiny",
        "--sweep",
        "train.learning_rate=1e30,0.001",
        "--set",
        "train.optimizer=sgd",
        "--set",
        "train.epochs=1",
        "--no-report",
        "--run-dir",
        str(sweep),
    )
    assert r.exit_code == 0, (r.output, r.exception)
    trials = json.loads((sweep / "sweep.json").read_text())["trials"]
    assert trials[0]["status"] == "failed" and "NaN or infinite" in trials[0]["reason"]
    assert trials[1]["status"] == "completed"
    table = pd.read_csv(sweep / "compare" / "compare.csv", index_col="run")
    assert table.loc[trials[0]["id"], "status"] == "diverged"


def test_compare_flags_runs_with_different_class_sets(tmp_path):
    runs = []
    for name, classes in (("three", "[circle,square,triangle]"), ("two", "[circle,square]")):
        r = run_cli(
            "fit",
            "-e",
            "shapes_tiny",
            "--set",
            f"data.shapes.classes={classes}",
            "--set",
            "train.epochs=1",
            "--no-report",
            "--run-dir",
            str(tmp_path / name),
        )
        assert r.exit_code == 0, (r.output, r.exception)
        runs.append(str(tmp_path / name))
    r = run_cli("compare", *runs, "--out", str(tmp_path / "cmp"), "--json")
    assert r.exit_code == 0, (r.output, r.exception)
    result = json.loads(r.stdout)
    assert len(result["warnings"]) == 1
    w = result["warnings"][0]
    assert "different class sets" in w and "not compared" in w
    assert "A: circle, square, triangle (3)" in w and "B: circle, square (2)" in w
    assert result["columns"][0] == "classes"
    assert {row["run"]: row["classes"] for row in result["runs"]} == {"three": "A", "two": "B"}
    assert "different class sets" in r.stderr
    html = (tmp_path / "cmp" / "index.html").read_text()
    assert "different class sets" in html

    bad = run_cli("compare", str(tmp_path))
    assert bad.exit_code == 2 and "neither a run directory" in bad.output


def test_run_sweep_as_a_library_call(tmp_path):
    from tfcam.errors import UserError
    from tfcam.train.sweep import run_sweep

    sweep = tmp_path / "sweep"
    out = run_sweep(
        experiment="shapes_tiny",
        sweeps=["train.learning_rate=0.01,0.001"],
        overrides=["train.epochs=1", "train.tensorboard_cams=0"],
        sweep_dir=sweep,
        report=False,
    )
    ids = ["01-learning_rate=0.01", "02-learning_rate=0.001"]
    assert out["path"] == str(sweep)
    assert [t["id"] for t in out["trials"]] == ids
    spec = json.loads((sweep / "sweep.json").read_text())
    assert spec["experiment"] == "shapes_tiny" and spec["data_dir"] is None
    assert spec["overrides"] == ["train.epochs=1", "train.tensorboard_cams=0"]
    assert spec["grid"] == {"train.learning_rate": ["0.01", "0.001"]}
    assert spec["trials"] == out["trials"]
    import yaml

    for t, lr in zip(spec["trials"], (0.01, 0.001), strict=True):
        assert t["status"] == "completed" and t["reason"] is None and t["seconds"] > 0
        assert t["assignments"] == {"train.learning_rate": str(lr)}
        run = sweep / t["run_dir"]
        assert run == sweep / "trials" / t["id"]
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["train"]["learning_rate"] == lr and cfg["train"]["epochs"] == 1
        history = pd.read_csv(run / "history.csv")
        assert history["epoch"].tolist() == [1]  # the override reached training …
        assert history["learning_rate"].tolist() == pytest.approx([lr])  # … and so did the trial's
        assert json.loads((run / "state.json").read_text())["status"] == "completed"
        assert (run / "model.keras").is_file() and not (run / "report").exists()
    # The compare of the trials, in the returned value and on disk.
    rows = {r["run"]: r for r in out["compare"]["runs"]}
    assert set(rows) == set(ids)
    for t in spec["trials"]:
        m = json.loads((sweep / t["run_dir"] / "metrics.json").read_text())
        assert rows[t["id"]]["val_accuracy"] == pytest.approx(m["val"]["accuracy"])
        assert rows[t["id"]]["train.learning_rate"] == float(
            t["assignments"]["train.learning_rate"]
        )
    assert (sweep / "compare" / "compare.csv").is_file() and (sweep / "hparams").is_dir()
    # A second sweep into the same folder is refused; a bad value is refused before anything.
    with pytest.raises(UserError, match="exists and is not empty; use --resume"):
        run_sweep(experiment="shapes_tiny", sweeps=["train.learning_rate=0.1"], sweep_dir=sweep)
    with pytest.raises(UserError, match=r"Sweep trial 02-epochs=0 \(train.epochs=0\)"):
        run_sweep(experiment="shapes_tiny", sweeps=["train.epochs=1,0"], sweep_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()
