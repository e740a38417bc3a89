"""One writer at a time: the run directory's and the sweep folder's lock (``RUN/.lock``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import run_cli

from tfcam import config

CLI = [sys.executable, "-m", "tfcam.cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _fake_run(path: Path) -> Path:
    """A run directory with a config and nothing trained: enough for --resume and report to
    reach the lock."""
    path.mkdir(parents=True)
    cfg = config.load_experiment("shapes_tiny")
    (path / "config.yaml").write_text(config.to_yaml(cfg))
    return path


def _hold(folder: Path, command: str = "tfcam fit -e shapes_tiny") -> subprocess.Popen:
    """Another process holding the writer's lock of ``folder`` until it is killed."""
    code = (
        "import sys, time; from tfcam.runs import DirectoryLock; "
        "lock = DirectoryLock(sys.argv[1]).acquire(sys.argv[2]); "
        "sys.stdout.write('held\\n'); sys.stdout.flush(); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(folder), command],
        stdout=subprocess.PIPE,
        text=True,
        env={**ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert proc.stdout.readline() == "held\n"
    info = json.loads((folder / ".lock").read_text())
    assert info["pid"] == proc.pid and info["command"] == command
    return proc


def _one_line_exit_2(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_resume_and_report_while_another_process_writes_the_run_exit_2_naming_it(tmp_path):
    run = _fake_run(tmp_path / "run")
    holder = _hold(run)
    try:
        before = sorted(p.name for p in run.iterdir())
        _one_line_exit_2(
            run_cli("fit", "--resume", run), "in use by", f"PID {holder.pid} (tfcam fit -e"
        )
        _one_line_exit_2(run_cli("report", run), f"PID {holder.pid}")
        _one_line_exit_2(run_cli("fit", "-e", "shapes_tiny", "--run-dir", run), f"PID {holder.pid}")
        assert sorted(p.name for p in run.iterdir()) == before  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    from tfcam.runs import lock_run

    run = _fake_run(tmp_path / "run")
    holder = _hold(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    stale = json.loads((run / ".lock").read_text())
    assert stale["pid"] == holder.pid  # the file is still there, naming a dead process
    with lock_run(run) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with lock_run(run):  # re-entrant within one process (fit writing its report)
            pass
        assert lock.path.is_file()
    assert not (run / ".lock").exists()  # removed on release


def test_resume_of_a_sweep_being_written_exits_2(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    spec = {"experiment": "shapes_tiny", "data_dir": None, "weights": None, "overrides": [],
            "grid": {"train.epochs": ["1"]}, "trials": []}  # fmt: skip
    (sweep / "sweep.json").write_text(json.dumps(spec))
    holder = _hold(sweep)
    try:
        _one_line_exit_2(run_cli("fit", "--resume", sweep), "Sweep folder", f"PID {holder.pid}")
        _one_line_exit_2(
            run_cli("fit", "-e", "shapes_tiny", "--sweep", "train.epochs=1,2", "--run-dir", sweep),
            f"PID {holder.pid}",
        )
    finally:
        holder.kill()
        holder.wait()


#: ``tfcam fit`` whose two copies wait for each other just before they create the run directory
#: (after TensorFlow has loaded, whose import time varies by seconds): the same moment, to the
#: millisecond, which a race needs.
SYNCED_FIT = """
import os, sys, time
from pathlib import Path
import tfcam.train.fit as fit_module
barrier, argv = Path(sys.argv[1]), sys.argv[2:]
sys.argv = ["tfcam", *argv]
check = fit_module.check_data_config
def check_then_wait(*args, **kwargs):
    check(*args, **kwargs)
    (barrier / str(os.getpid())).touch()
    deadline = time.time() + 300
    while len(list(barrier.iterdir())) < 2 and time.time() < deadline:
        time.sleep(0.0005)
fit_module.check_data_config = check_then_wait
from tfcam.cli import main
main(argv)
"""


@pytest.mark.slow
def test_two_fits_started_together_on_one_run_dir_exactly_one_wins(tmp_path):
    run, barrier = tmp_path / "run", tmp_path / "barrier"
    barrier.mkdir()
    cmd = ["fit", "-e", "shapes_tiny", "--run-dir", str(run), "--no-report",
           "--set", "train.epochs=1"]  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SYNCED_FIT, str(barrier), *cmd, "--set", f"train.seed={seed}"],
            env={**ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (11, 22)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert len(list(barrier.iterdir())) == 2  # both reached the starting line
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [
        (p.returncode, err[-2000:]) for p, (_, err) in zip(procs, outs, strict=True)
    ]
    winner = next(i for i, p in enumerate(procs) if p.returncode == 0)
    loser_err = outs[1 - winner][1]
    assert "Traceback" not in loser_err
    assert loser_err.strip().splitlines()[-1].startswith("tfcam: error: Run directory")
    assert f"is in use by PID {procs[winner].pid} (tfcam fit -e shapes_tiny" in loser_err
    # The winner's files are intact and its own: its seed, one epoch, a finished state.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["seed"] == (11, 22)[winner]
    assert json.loads((run / "state.json").read_text())["status"] == "completed"
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1]
    assert (run / "model.keras").is_file() and not (run / ".lock").exists()


@pytest.mark.parametrize("command", ["report", "evaluate"])
def test_commands_writing_into_a_finished_run_take_its_lock(tiny_run, command):
    holder = _hold(tiny_run)
    try:
        _one_line_exit_2(run_cli(command, tiny_run), f"PID {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
        (tiny_run / ".lock").unlink()  # the killed holder's file: not part of the shared run
