"""``tfcam fit --sweep KEY=V1,V2 …``: a grid of trials, one run directory each, in one folder.

A sweep folder holds ``sweep.json`` (the experiment, the base overrides, the grid and each
trial's status), ``trials/<id>/`` (one ordinary run directory per trial), ``hparams/`` (a
TensorBoard log directory for the HParams dashboard: the grid's domains, and per trial its values
and final metrics) and, at the end, ``compare/`` (``tfcam compare`` of the trials).

Every trial's configuration is built and checked before the first one trains, so a value that
cannot be parsed or is out of range stops the sweep with nothing trained. A trial that fails
(loss became NaN, data or config problem found while training) is recorded as failed with its
reason and the sweep goes on. ``--resume SWEEP_DIR`` skips finished trials (completed or failed),
continues an interrupted one from its last finished epoch, and runs the rest.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfcam.errors import TrainingDiverged, UserError
from tfcam.io import read_json, write_json

log = logging.getLogger("tfcam")

SWEEP_FILE = "sweep.json"


def parse_sweeps(items: list[str]) -> dict[str, list[str]]:
    """``["train.learning_rate=0.01,0.0001", …]`` → ``{"train.learning_rate": ["0.01", "0.0001"]}``.

    Raises:
        UserError: No ``=``, no values, a repeated key or a repeated value.
    """
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(
                f"Invalid --sweep '{item}': expected key=value1,value2, e.g. "
                "train.learning_rate=0.01,0.0001"
            )
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise UserError(f"Invalid --sweep '{item}': no values after '='")
        if len(set(vals)) != len(vals):
            raise UserError(f"Invalid --sweep '{item}': a value is repeated")
        if key in out:
            raise UserError(f"--sweep {key} is given twice; put all its values in one --sweep")
        out[key] = vals
    return out


def _slug(assignments: dict[str, str]) -> str:
    parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in assignments.items()]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "-".join(parts))[:120]


@dataclass
class Trial:
    id: str
    assignments: dict[str, str]
    run_dir: str
    status: str = "pending"
    reason: str | None = None
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "assignments": self.assignments,
            "run_dir": self.run_dir,
            "status": self.status,
            "reason": self.reason,
            "seconds": self.seconds,
        }


class Sweep:
    """A sweep folder and its ``sweep.json``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def file(self) -> Path:
        return self.path / SWEEP_FILE

    def load(self) -> dict:
        if not self.file.is_file():
            raise UserError(f"'{self.path}' is not a sweep folder (no {SWEEP_FILE})")
        return read_json(self.file)

    def save(self, spec: dict) -> None:
        write_json(self.file, spec)

    def trials(self, spec: dict) -> list[Trial]:
        return [Trial(**t) for t in spec["trials"]]


def plan(grid: dict[str, list[str]]) -> list[Trial]:
    """Every combination of the grid, in order (the first key varies slowest)."""
    keys = list(grid)
    trials = []
    for i, combo in enumerate(itertools.product(*(grid[k] for k in keys)), start=1):
        a = dict(zip(keys, combo, strict=True))
        tid = f"{i:02d}-{_slug(a)}"
        trials.append(Trial(tid, a, f"trials/{tid}"))
    return trials


def build_configs(experiment, data_dir, weights, overrides, trials) -> list:
    """Each trial's checked configuration; the first bad one stops everything.

    Raises:
        UserError: Naming the trial's field and value.
    """
    from tfcam.config import load_experiment

    configs = []
    for t in trials:
        sets = [*overrides, *(f"{k}={v}" for k, v in t.assignments.items())]
        try:
            configs.append(
                load_experiment(
                    experiment, sets, data_dir=data_dir, weights=weights, check_paths=True
                )
            )
        except UserError as e:
            given = ", ".join(f"{k}={v}" for k, v in t.assignments.items())
            raise UserError(f"Sweep trial {t.id} ({given}): {e}") from None
    return configs


def _hparams_config(path: Path, grid: dict[str, list[str]]) -> None:
    """The HParams experiment: one discrete hyperparameter per swept key, the final metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    params = []
    for key, values in grid.items():
        parsed = [_number(v) for v in values]
        if all(isinstance(v, (int, float)) for v in parsed):
            params.append(hp.HParam(key, hp.Discrete([float(v) for v in parsed])))
        else:
            params.append(hp.HParam(key, hp.Discrete([str(v) for v in values])))
    metrics = [
        hp.Metric("val_accuracy", display_name="validation accuracy"),
        hp.Metric("val_loss", display_name="validation loss"),
        hp.Metric("test_accuracy", display_name="test accuracy"),
    ]
    with tf.summary.create_file_writer(str(path)).as_default():
        hp.hparams_config(hparams=params, metrics=metrics)


def _number(v: str):
    try:
        f = float(v)
    except ValueError:
        return v
    return f


def _hparams_session(path: Path, trial: Trial, metrics: dict) -> None:
    """One session of the HParams dashboard: the trial's values and its final metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    values = {
        k: (float(n) if isinstance((n := _number(v)), float) else str(v))
        for k, v in trial.assignments.items()
    }
    with tf.summary.create_file_writer(str(path / trial.id)).as_default():
        hp.hparams(values, trial_id=trial.id)
        for split in ("val", "test"):
            for m in ("accuracy", "loss"):
                value = metrics.get(split, {}).get(m)
                if value is not None:
                    tf.summary.scalar(f"{split}_{m}", value, step=1)


def run_sweep(
    *,
    experiment: str | None = None,
    data_dir: str | None = None,
    weights: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    sweeps: list[str] | tuple[str, ...] = (),
    sweep_dir: str | Path | None = None,
    resume: str | Path | None = None,
    report: bool = True,
    strategy: str = "auto",
) -> dict:
    """Runs (or resumes) a sweep; returns ``{"path", "trials": [...], "compare": ...}``.

    Raises:
        UserError: Bad sweep, bad trial value (before anything trains), bad resume folder.
    """
    from tfcam.runs import is_empty, lock_run

    if resume is not None:
        sweep = Sweep(resume)
        sweep.load()  # not a sweep folder: fail before creating a lock file in it
        lock = lock_run(sweep.path, "Sweep folder")
        try:
            spec = sweep.load()  # read again under the lock: the last writer's version
            experiment, data_dir, weights = spec["experiment"], spec["data_dir"], spec["weights"]
            overrides, grid = spec["overrides"], spec["grid"]
            trials = sweep.trials(spec)
            configs = build_configs(experiment, data_dir, weights, overrides, trials)
        except BaseException:
            lock.release()
            raise
    else:
        from tfcam.config import absolute_path

        # Stored in sweep.json for --resume, so made absolute (a resume may start elsewhere).
        data_dir = absolute_path(data_dir) if data_dir else None
        if weights and weights not in ("imagenet", "none"):
            weights = absolute_path(weights)
        grid = parse_sweeps(list(sweeps))
        trials = plan(grid)
        configs = build_configs(experiment, data_dir, weights, list(overrides), trials)
        if sweep_dir is None:
            from tfcam.runs import default_run_dir

            sweep_dir = default_run_dir(f"{configs[0].name}-sweep")
        sweep = Sweep(sweep_dir)
        lock = lock_run(sweep.path, "Sweep folder")  # of two sweeps started together, one wins
        if not is_empty(sweep.path):
            lock.release()
            raise UserError(
                f"Sweep folder '{sweep.path}' exists and is not empty; use --resume to continue it"
            )
        spec = {
            "experiment": experiment,
            "data_dir": data_dir,
            "weights": weights,
            "overrides": list(overrides),
            "grid": grid,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "trials": [t.to_json() for t in trials],
        }
        sweep.save(spec)
        log.info(
            "Sweep of %d trials (%s) in %s",
            len(trials),
            " × ".join(f"{k}: {len(v)}" for k, v in grid.items()),
            sweep.path,
        )
    with lock:
        return _run_trials(sweep, spec, trials, configs, grid, report=report, strategy=strategy)


def _run_trials(sweep, spec, trials, configs, grid, *, report, strategy) -> dict:
    """Trains the trials not finished yet, in order, then compares them (sweep folder locked)."""
    hparams_dir = sweep.path / "hparams"
    if not (hparams_dir).exists():
        _hparams_config(hparams_dir, grid)

    import keras

    from tfcam.runs import Run
    from tfcam.train.fit import fit as run_fit

    def save() -> None:
        spec["trials"] = [t.to_json() for t in trials]
        sweep.save(spec)

    for k, (trial, cfg) in enumerate(zip(trials, configs, strict=True), start=1):
        where = sweep.path / trial.run_dir
        if trial.status in ("completed", "failed"):
            log.info("Trial %d/%d %s: %s, skipped", k, len(trials), trial.id, trial.status)
            continue
        started = (where / "config.yaml").is_file()
        run_status = Run(where).state().get("status") if started else None
        resume_trial = started and run_status not in (None, "completed")
        if run_status == "completed" or (where / "model.keras").is_file():
            trial.status = "completed"  # finished, but the sweep was killed before recording it
            save()
            continue
        if where.exists() and not resume_trial:
            import shutil

            shutil.rmtree(where)  # a trial killed before it wrote its config: start it again
        log.info(
            "Trial %d/%d %s: %s%s",
            k,
            len(trials),
            trial.id,
            ", ".join(f"{a}={v}" for a, v in trial.assignments.items()),
            " (resuming)" if resume_trial else "",
        )
        trial.status = "running"
        save()
        t0 = time.perf_counter()
        keras.backend.clear_session()
        try:
            result = run_fit(
                None if resume_trial else cfg,
                where,
                resume=resume_trial,
                report=report,
                strategy=strategy,
            )
        except KeyboardInterrupt:
            trial.status = "interrupted"
            save()
            raise
        except (TrainingDiverged, UserError) as e:
            trial.status, trial.reason = "failed", " ".join(str(e).split())[:500]
            log.warning("Trial %s failed: %s", trial.id, trial.reason)
        except Exception as e:  # an unexpected error in one trial should not end the sweep
            trial.status, trial.reason = "failed", f"{type(e).__name__}: {e}"[:500]
            log.warning("Trial %s failed: %s", trial.id, trial.reason)
        else:
            trial.status = "completed"
            _hparams_session(hparams_dir, trial, result.metrics)
        trial.seconds = round(time.perf_counter() - t0, 1)
        save()

    out = {"path": str(sweep.path), "trials": [t.to_json() for t in trials]}
    if any(t.status == "completed" for t in trials):
        from tfcam.report.compare import write_compare

        out["compare"] = write_compare([sweep.path], sweep.path / "compare")
    return out
