"""--strategy: two MultiWorkerMirroredStrategy workers on 127.0.0.1 end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

CLI = [sys.executable, "-c", "from tfcam.cli import main; main()"]


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _weights(path):
    from tfcam.models.build import load_model

    return load_model(path).get_weights()


def test_two_workers_train_shapes_to_identical_weights(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        }
        procs.append(
            subprocess.Popen(
                [
                    *CLI,
                    "fit",
                    "-e",
                    "shapes_tiny",
                    "--strategy",
                    "multiworker",
                    "--set",
                    "train.epochs=1",
                    "--run-dir",
                    str(tmp_path / f"worker{i}"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=420)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a worker did not finish in 7 minutes")
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    assert "worker 0 of 2 (chief), 2 replica(s) in all" in outs[0]
    assert "worker 1 of 2 (not chief), 2 replica(s) in all" in outs[1]

    w0 = _weights(tmp_path / "worker0" / "model.keras")
    w1 = _weights(tmp_path / "worker1" / "model.keras")
    assert len(w0) == len(w1) > 10
    for a, b in zip(w0, w1, strict=True):
        assert np.array_equal(a, b)  # bit for bit, batch-norm statistics included
    # The global batch (16) is split over the workers: 48 training images make 3 steps.
    assert len(pd.read_csv(tmp_path / "worker0" / "batch_history.csv")) == 3
    # Only the chief writes the report.
    assert (tmp_path / "worker0" / "report" / "index.html").is_file()
    assert not (tmp_path / "worker1" / "report").exists()
    m0 = json.loads((tmp_path / "worker0" / "metrics.json").read_text())
    m1 = json.loads((tmp_path / "worker1" / "metrics.json").read_text())
    assert m0["val"] == m1["val"]


def test_mirrored_on_a_cpu_matches_no_strategy(tmp_path):
    """One replica on the CPU trains as no strategy does. One batch holds the whole training set:
    under a strategy, Keras takes a first batch for building before the epoch starts, which moves
    the shuffled order along by one iteration; with a single batch the order does not matter."""
    runs = {}
    for name in ("none", "mirrored"):
        run = tmp_path / name
        r = run_cli(
            "fit",
            "-e",
            "shapes_tiny",
            "--strategy",
            name,
            "--set",
            "train.epochs=2",
            "--set",
            "train.optimizer=sgd",  # Adam would blow numerical noise up to ±lr
            "--set",
            "data.batch_size=64",
            "--no-report",
            "--run-dir",
            str(run),
        )
        assert r.exit_code == 0, (r.output, r.exception)
        runs[name] = _weights(run / "model.keras")
    for a, b in zip(runs["none"], runs["mirrored"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)  # synchronised batch norm: E[x²] - E[x]²


def test_multiworker_needs_tf_config(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    r = run_cli(
        "fit", "-e", "shapes_tiny", "--strategy", "multiworker", "--run-dir", str(tmp_path / "r")
    )
    assert r.exit_code == 2
    assert "reads the cluster from TF_CONFIG, which is not set" in r.output
    assert not (tmp_path / "r").exists()  # nothing written before the check
    monkeypatch.setenv("TF_CONFIG", "{not json")
    r = run_cli(
        "fit", "-e", "shapes_tiny", "--strategy", "multiworker", "--run-dir", str(tmp_path / "r")
    )
    assert r.exit_code == 2 and "TF_CONFIG must be JSON" in r.output
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}
        ),
    )
    r = run_cli(
        "fit", "-e", "shapes_tiny", "--strategy", "multiworker", "--run-dir", str(tmp_path / "r")
    )
    assert r.exit_code == 2 and "task index 3 is not one of the 1 workers" in r.output
    r = run_cli("fit", "-e", "shapes_tiny", "--strategy", "ring")
    assert r.exit_code == 2 and "auto" in r.output and "multiworker" in r.output
