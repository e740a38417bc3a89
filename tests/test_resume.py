"""``tfcam fit --resume`` decides from all the evidence of a run, not from ``state.json`` alone."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from conftest import run_cli

from tfcam import config
from tfcam.train import callbacks as cb
from tfcam.train.fit import fit


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-epoch shapes_tiny run (copied by each test that changes it)."""
    cfg = config.load_experiment("shapes_tiny", ["train.epochs=1"])
    return fit(cfg, tmp_path_factory.mktemp("resume") / "done", verbose=0, report=False).run_dir


def _snapshot(run):
    model = run / "model.keras"
    return model.read_bytes(), model.stat().st_mtime_ns, (run / "history.csv").read_bytes()


def _exit_2(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[:9]),  # truncated
        lambda p: p.write_bytes(b"\x00\xff garbage {"),
        lambda p: p.unlink(),
    ],
    ids=["truncated", "garbage", "missing"],
)
def test_a_finished_run_with_a_lost_state_is_never_trained_again(finished, tmp_path, damage):
    run = shutil.copytree(finished, tmp_path / "run")
    damage(run / "state.json")
    before = _snapshot(run)
    _exit_2(run_cli("fit", "--resume", run), "already complete", "model.keras", "--force")
    assert _snapshot(run) == before


def test_force_trains_a_finished_run_again(finished, tmp_path):
    run = shutil.copytree(finished, tmp_path / "run")
    (run / "state.json").write_text("{")
    _, old_mtime, _ = _snapshot(run)
    r = run_cli("fit", "--resume", run, "--force", "--no-report")
    assert r.exit_code == 0, (r.output, r.stderr)
    assert (run / "model.keras").stat().st_mtime_ns != old_mtime
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1]
    state = json.loads((run / "state.json").read_text())
    assert state["status"] == "completed" and state["retrain"] is False
    _exit_2(run_cli("fit", "-e", "shapes_tiny", "--force"), "--force goes with --resume")


def test_an_unreadable_history_is_a_clear_error_and_nothing_changes(finished, tmp_path):
    run = shutil.copytree(finished, tmp_path / "run")
    (run / "model.keras").unlink()  # killed before the model was saved: resumable
    (run / "state.json").write_text(json.dumps({"status": "interrupted", "phase_done": 0}))
    (run / "history.csv").write_bytes(b"\x00\x01\x02 not,a\nhistory\n\xff")
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    _exit_2(run_cli("fit", "--resume", run), "history.csv", "damaged")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_history_rows_past_the_last_checkpoint_are_dropped_on_resume(tmp_path, monkeypatch):
    # Killed after epoch 2's history row but before its backup: the backup says 1 epoch.
    real_end = cb.HistoryCSV.on_epoch_end

    def killed_after_row_2(self, epoch, logs=None):
        real_end(self, epoch, logs)
        if epoch + 1 == 2:
            raise KeyboardInterrupt

    cfg = config.load_experiment("shapes_tiny", ["train.epochs=3"])
    monkeypatch.setattr(cb.HistoryCSV, "on_epoch_end", killed_after_row_2)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "run", verbose=0, report=False)
    run = tmp_path / "run"
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1, 2]
    meta = json.loads((run / "checkpoints/backup_phase1/training_metadata.json").read_text())
    assert meta["epoch"] == 1

    # The resume is stopped again before its first epoch ends: the history must already agree
    # with the weights it continues from (epoch 2's row described weights that were lost).
    def stopped(self, epoch, logs=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cb.HistoryCSV, "on_epoch_end", real_end)
    monkeypatch.setattr(cb.HistoryCSV, "on_epoch_begin", stopped)
    with pytest.raises(KeyboardInterrupt):
        fit(None, run, resume=True, verbose=0, report=False)
    assert pd.read_csv(run / "history.csv")["epoch"].tolist() == [1]

    monkeypatch.undo()
    fit(None, run, resume=True, verbose=0, report=False)
    hist = pd.read_csv(run / "history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3]
    assert json.loads((run / "state.json").read_text())["status"] == "completed"
