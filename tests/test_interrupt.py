"""Ctrl-C: exit code 130 and "interrupted" for every long command; a second Ctrl-C stops at once
and still leaves no half-written file. Real processes and real SIGINTs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_image

CLI = [sys.executable, "-m", "tfcam.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
FIT = ["fit", "-e", "shapes_tiny", "--no-report", "--set", "train.epochs=4",
       "--set", "data.shapes.train_per_class=150", "--set", "data.batch_size=8"]  # fmt: skip


def _start(args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *map(str, args)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **kw,
    )  # fmt: skip


def _wait_for(proc, ready, timeout=300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return
        if proc.poll() is not None:
            pytest.fail(f"ended before it could be interrupted: {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("never got going")


def _history_rows(run: Path) -> int:
    try:
        return len(pd.read_csv(run / "history.csv"))
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_ctrl_c_during_fit_exits_130_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    proc = _start([*FIT, "--run-dir", run])
    _wait_for(proc, lambda: _history_rows(run) >= 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "tfcam: error: interrupted"
    assert "Traceback" not in err
    assert json.loads((run / "state.json").read_text())["status"] == "interrupted"
    assert not (run / ".lock").exists()

    out = subprocess.run([*CLI, "fit", "--resume", str(run), "--no-report"], env=ENV,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]
    assert json.loads((run / "state.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_leaving_no_half_written_file(tmp_path):
    run = tmp_path / "run"
    proc = _start([*FIT, "--run-dir", run])
    _wait_for(proc, lambda: _history_rows(run) >= 1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert time.time() - t0 < 15, "the second Ctrl-C must not wait for anything"
    assert "interrupted" in err.strip().splitlines()[-1]
    # No temporary file of an atomic write (".name.XXXX.suffix") and every table parses.
    leftovers = [p for p in run.rglob(".*") if p.is_file() and p.name != ".lock"]
    assert not leftovers, leftovers
    for path in run.rglob("*.json"):
        json.loads(path.read_text())
    for path in run.rglob("*.csv"):
        pd.read_csv(path)
    assert json.loads((run / "state.json").read_text())["status"] in ("running", "interrupted")


def test_ctrl_c_during_explain_exits_130(tiny_run, tmp_path):
    rng = np.random.default_rng(0)
    for i in range(300):
        write_image(tmp_path / "in" / f"{i:03d}.png", rng.integers(0, 255, (32, 32, 3), "uint8"))
    out = tmp_path / "out"
    proc = _start(["explain", tiny_run, tmp_path / "in", "-m", "gradcam,scorecam", "--out", out])
    _wait_for(proc, lambda: out.is_dir() and any(out.rglob("*.png")))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "tfcam: error: interrupted"
    assert not [p for p in out.rglob(".*") if p.is_file()]
