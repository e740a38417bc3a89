"""``tfcam fit``: data → model → two training phases → run directory.

Phase 1 trains the head over a frozen backbone (batch normalisation in inference mode), or the
whole network when ``train.freeze_backbone`` is false (training from scratch). Phase 2, when
``train.fine_tune.epochs > 0``, unfreezes the top of the backbone and trains on at a lower
learning rate. Every epoch is backed up so that ``--resume`` continues a killed run from the last
finished epoch, in whichever phase it was.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcam.config import ExperimentConfig, check_data_config, fine_tune_start
from tfcam.data.pipeline import make_dataset, scan_files
from tfcam.data.sources import (
    Splits,
    load_splits,
    read_splits_csv,
    write_splits_csv,
)
from tfcam.errors import TrainingDiverged, UserError
from tfcam.io import atomic_path, write_json
from tfcam.models.build import (
    backbone_layers,
    build_classifier,
    load_model,
    load_weights,
    set_backbone_trainable,
)
from tfcam.runs import Run, default_run_dir, lock_run, read_history
from tfcam.train import callbacks as cb
from tfcam.train import feature_cache as fc
from tfcam.train.checks import check_config_layers, check_diverged
from tfcam.train.evaluate import evaluate_model_on_split
from tfcam.train.panels import tensorboard_panels
from tfcam.train.provenance import recorded
from tfcam.train.resume import phase2_start, prepare_resume

log = logging.getLogger("tfcam")


@dataclass
class FitResult:
    """What a finished ``fit`` produced."""

    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def fit(
    cfg: ExperimentConfig | None = None,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    verbose: int | str = "auto",
    report: bool = True,
    strategy: str = "auto",
    force: bool = False,
) -> FitResult:
    """Trains an experiment into a run directory.

    Args:
        cfg: The experiment (ignored on resume: the run's own ``config.yaml`` is used).
        run_dir: Where to write; defaults to ``runs/<experiment>-<timestamp>``.
        resume: Continue the run in ``run_dir`` from its last finished epoch.
        verbose: Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch.
        report: Write ``report/index.html`` at the end (the chief worker only).
        strategy: ``auto``, ``none``, ``mirrored`` or ``multiworker`` (see
            :mod:`tfcam.train.distribute`).
        force: With ``resume``, train a run that already finished again from its first epoch
            (see :func:`tfcam.train.resume.prepare_resume`).

    Returns:
        The run directory, its metrics and the wall time.

    Raises:
        UserError: Bad data, config or run directory; the run is being written by another
            process (its writer's lock, :class:`tfcam.runs.DirectoryLock`, is held while this
            runs); a resumed run that already finished (without ``force``).
        TrainingDiverged: The loss became NaN or infinite (the last good checkpoint is kept).
    """
    t0 = time.perf_counter()
    from tfcam.train.distribute import choose

    choose(strategy)  # a bad name or a missing TF_CONFIG fails before anything is written
    if resume:
        if run_dir is None:
            raise UserError("--resume needs the run directory to continue")
        run = Run(run_dir).require()
        lock = lock_run(run.path)  # one writer: a second fit or --resume fails here, naming it
        try:
            cfg = run.config()
            status = run.state().get("status", "unknown")
            state = prepare_resume(run, cfg, force=force)
            log.info("Resuming %s (status: %s)", run.path, status)
        except BaseException:
            lock.release()
            raise
    else:
        if cfg is None:
            raise ValueError("fit() needs a config unless resume=True")
        check_data_config(cfg.data, cfg.name)
        run = Run(run_dir if run_dir is not None else default_run_dir(cfg.name))
        existed = run.path.exists()
        lock = run.create()
        state = {}
    discard = False
    try:
        with lock, recorded(run.path):  # provenance.json: command, versions, device, times
            try:
                return _fit_locked(
                    cfg, run, state, t0, verbose=verbose, report=report, strategy=strategy
                )
            except UserError:
                # A mistake found before the first epoch (one class's folder, a bad option):
                # a new run leaves nothing behind, as every other bad input does.
                if not resume and not run.history_path.is_file():
                    run.clear()
                    discard = not existed
                raise
    finally:
        if discard:
            with contextlib.suppress(OSError):
                run.path.rmdir()


def _fit_locked(cfg, run, state, t0, *, verbose, report, strategy) -> FitResult:
    """:func:`fit` once the run is created or checked, with its lock held."""
    if not run.config_path.is_file():
        run.write_config(cfg)
    run.update_state(status="running", **state)

    try:
        result, placement = _fit(cfg, run, verbose=verbose, strategy=strategy)
    except KeyboardInterrupt:
        run.update_state(status="interrupted")
        raise
    except TrainingDiverged as e:
        run.update_state(status="diverged", error=str(e))
        raise
    except BaseException as e:
        run.update_state(status="failed", error=f"{type(e).__name__}: {e}"[:500])
        raise
    result.seconds = time.perf_counter() - t0
    done = {"retrain": False} if state.get("retrain") else {}
    run.update_state(status="completed", seconds=round(result.seconds, 1), **done)
    if report and placement.is_chief:
        from tfcam.explain.report_figures import build_report

        build_report(run.path)
    return result


def prepare_data(cfg: ExperimentConfig, run: Run) -> Splits:
    """Lists, checks and splits the images; writes ``splits.csv``, ``class_names.json`` and
    ``data_report.json``. On resume the run's saved split is reused as it is."""
    if (
        run.splits_path.is_file()
        and run.class_names_path.is_file()
        and run.data_report_path.is_file()
    ):
        return read_splits_csv(run.splits_path, run.class_names())

    splits = load_splits(cfg.data, progress=log.info)
    all_files = [f for split in splits.files.values() for f in split]
    scan = scan_files(all_files, image_size=cfg.data.image_size, progress=log.info)
    good = splits.drop(set(scan.bad) | scan.left_out)
    empty = [c for c, n in good.counts()["train"].items() if n == 0]
    if empty:
        raise UserError(
            f"No usable training images for class(es) {', '.join(empty)} in '{splits.root}' "
            f"({len(scan.bad)} files could not be read, {len(scan.left_out)} left out for their "
            "aspect ratio)"
        )
    if "val" not in good.files or not good.files["val"]:
        raise UserError(
            "No validation images: add a val/ folder or set data.val_fraction above 0 "
            f"(received data.val_fraction={cfg.data.val_fraction})"
        )
    if scan.bad:
        shown = "; ".join(f"{Path(p).name} ({r})" for p, r in list(scan.bad.items())[:20])
        more = f"; and {len(scan.bad) - 20} more" if len(scan.bad) > 20 else ""
        log.warning(
            "Skipped %d of %d files that cannot be used as images: %s%s (all listed in %s)",
            len(scan.bad),
            len(all_files),
            shown,
            more,
            run.data_report_path,
        )
    if scan.suspicious:
        shown = "; ".join(f"{Path(p).name} ({r})" for p, r in list(scan.suspicious.items())[:10])
        log.warning(
            "%d images look odd (%d of them left out of training): %s (listed in data_report.json)",
            len(scan.suspicious),
            len(scan.left_out),
            shown,
        )

    sizes = np.array(list(scan.sizes.values()) or [(0, 0)])
    report = {
        "source": cfg.data.source,
        "root": splits.root,
        "how": splits.how,
        "classes": splits.class_names,
        "counts": good.counts(),
        "totals": {s: len(f) for s, f in good.files.items()},
        "skipped": [{"path": p, "reason": r} for p, r in {**splits.skipped, **scan.bad}.items()],
        "suspicious": [{"path": p, "reason": r} for p, r in scan.suspicious.items()],
        "image_sizes": {
            "min_hw": sizes.min(axis=0).tolist(),
            "median_hw": np.median(sizes, axis=0).astype(int).tolist(),
            "max_hw": sizes.max(axis=0).tolist(),
        },
    }
    write_splits_csv(run.splits_path, good)
    write_json(run.class_names_path, good.class_names)
    write_json(run.data_report_path, report)
    return good


def _optimizer(name: str, lr: float, cfg: ExperimentConfig) -> keras.optimizers.Optimizer:
    t = cfg.train
    wd = t.weight_decay or None
    if name == "sgd":
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=t.momentum, nesterov=t.nesterov, weight_decay=wd
        )
    return keras.optimizers.Adam(learning_rate=lr, weight_decay=wd)


def _compile(model: keras.Model, cfg: ExperimentConfig, lr: float) -> None:
    if cfg.model.binary:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=cfg.train.label_smoothing)
        metrics = [keras.metrics.BinaryAccuracy(name="accuracy")]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    model.compile(
        optimizer=_optimizer(cfg.train.optimizer, lr, cfg),
        loss=loss,
        metrics=metrics,
        jit_compile=bool(cfg.train.jit_compile),
    )


def build_model(cfg: ExperimentConfig, n_classes: int) -> keras.Model:
    """The experiment's classifier (``model.*`` and ``data.image_size``)."""
    m = cfg.model
    return build_classifier(
        backbone=m.backbone,
        num_classes=n_classes,
        image_size=cfg.data.image_size,
        weights=m.weights,
        options=m.options,
        head=m.head,
        hidden_units=m.hidden_units,
        dropout=m.dropout,
        binary=m.binary,
        spp_levels=m.spp_levels,
        variable_size=cfg.data.resize == "native",
    )


def set_precision(cfg: ExperimentConfig) -> str:
    """Applies ``train.mixed_precision`` as Keras's global dtype policy; returns the policy name.

    On a machine without a GPU, float16 compute only slows things down, so the switch is ignored
    there with a warning (the run stays float32 and its numbers stay comparable).
    """
    import tensorflow as tf

    want = "mixed_float16" if cfg.train.mixed_precision else "float32"
    if want == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
        log.warning("train.mixed_precision is for GPUs; no GPU here, training in float32")
        want = "float32"
    keras.mixed_precision.set_global_policy(want)
    return want


def _fit(cfg: ExperimentConfig, run: Run, *, verbose: int | str, strategy: str = "none"):
    from tfcam.train.distribute import make_strategy, shard_by_data

    placement = make_strategy(strategy)  # first: a multi-worker runtime starts here
    keras.utils.set_random_seed(cfg.train.seed)
    set_precision(cfg)
    splits = prepare_data(cfg, run)
    d, m, t = cfg.data, cfg.model, cfg.train
    n_classes = len(splits.class_names)
    common = dict(
        image_size=d.image_size,
        batch_size=d.batch_size,
        num_classes=n_classes,
        resize=d.resize,
        binary=m.binary,
        cache=d.cache,
    )
    train_ds = make_dataset(
        files=splits.files["train"],
        labels=splits.labels["train"],
        mode="train",
        augment=d.augment,
        seed=t.seed,
        **common,
    )
    val_ds = make_dataset(
        files=splits.files["val"], labels=splits.labels["val"], mode="eval", **common
    )
    if placement.distributed:
        train_ds, val_ds = shard_by_data(train_ds), shard_by_data(val_ds)

    with placement.strategy.scope():
        model = _train(cfg, run, placement, splits, common, train_ds, val_ds, verbose)
    return _finish(cfg, run, placement, splits, model), placement


def _train(cfg, run, placement, splits, common, train_ds, val_ds, verbose) -> keras.Model:
    """Both phases under the strategy; returns the final (best or last epoch's) model."""
    m, t = cfg.model, cfg.train
    n_classes = len(splits.class_names)
    model = build_model(cfg, n_classes)
    check_config_layers(cfg, model)  # a wrong layer name stops here, not after phase 1
    if placement.distributed:
        # Batch statistics over the global batch (all replicas), as one machine would compute
        # them, so the moving averages stay identical on every worker.
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = True
    log.info(
        "Model: %s (%s), %d classes, %s parameters",
        m.backbone,
        "random initialisation" if m.weights == "none" else f"weights {m.weights}",
        n_classes,
        f"{model.count_params():,}",
    )
    guard = cb.NaNGuard()
    best = cb.BestCheckpoint(run.checkpoints, monitor=t.monitor, guard=guard)
    state = run.state()
    if verbose == "auto":
        import sys

        verbose = 1 if sys.stdout.isatty() else 2

    panels = tensorboard_panels(cfg, run, splits, enabled=placement.is_chief)
    head_stop = cb.BestHead(t.head_patience)

    def callbacks(phase: int, base_lr: float, first_epoch: int, n_epochs: int) -> list:
        sched = cb.step_or_cosine_schedule(
            t.schedule, base_lr, n_epochs, step_every=t.step_every, gamma=t.gamma
        )
        cbs = [
            guard,
            keras.callbacks.LearningRateScheduler(lambda e, _lr: sched(e - first_epoch)),
            cb.HistoryCSV(run.history_path, phase),
            best,
            keras.callbacks.TensorBoard(
                log_dir=str(run.tensorboard), write_graph=False, profile_batch=0
            ),
            cb.BatchHistoryCSV(run.path / "batch_history.csv"),
            panels,
        ]
        if t.keep_epoch_checkpoints:
            cbs.append(cb.EpochCheckpoint(run.checkpoints, model, guard=guard))
        if t.early_stopping_patience:
            cbs.append(
                keras.callbacks.EarlyStopping(monitor=t.monitor, patience=t.early_stopping_patience)
            )
        if phase == 1 and t.freeze_backbone:
            cbs.append(head_stop)  # the head to convergence; the next phase starts from its best
        cbs.append(cb.AtomicBackupAndRestore(run.checkpoints / f"backup_phase{phase}", guard=guard))
        return cbs

    def prepare_phase1() -> str:
        if t.freeze_backbone:
            set_backbone_trainable(model, False)
            return "frozen backbone"
        set_backbone_trainable(model, True, train_batchnorm=True)
        return "whole network trainable"

    def prepare_phase2() -> str:
        n = set_backbone_trainable(
            model,
            True,
            from_layer=fine_tune_start(cfg, [layer.name for layer in backbone_layers(model)]),
            top=ft.unfreeze_top,
            train_batchnorm=ft.train_batchnorm,
        )
        return f"{n} backbone layers unfrozen"

    ft = t.fine_tune
    phases = []
    if t.epochs > 0:
        phases.append((1, t.learning_rate, 0, t.epochs, prepare_phase1))
    if ft.epochs > 0:
        phases.append((2, ft.learning_rate, t.epochs, ft.epochs, prepare_phase2))
    done = state.get("phase_done", 0)
    for phase, lr, first, n_epochs, prepare in phases:
        # Each finished phase leaves its final weights, so a resume can skip it exactly.
        end_weights = run.checkpoints / f"phase{phase}_end.weights.h5"
        if phase <= done and end_weights.is_file():
            load_weights(model, end_weights)
            continue
        what = prepare()
        if phase == 2:  # right after phase 1's last epoch, fewer than train.epochs if it stopped
            first = phase2_start(cfg, read_history(run.history_path))
        no_cache = fc.why_not_cacheable(cfg) or ("distributed" if placement.distributed else None)
        phase_info = {}
        if phase == 1 and not no_cache:
            train_eval = make_dataset(
                files=splits.files["train"], labels=splits.labels["train"], mode="eval", **common
            )
            phase_info = fc.fit_head(
                model,
                cfg,
                train_eval,
                val_ds,
                compile_head=lambda head, lr=lr: _compile(head, cfg, lr),
                first=first,
                n_epochs=n_epochs,
                verbose=verbose,
                callbacks=callbacks(phase, lr, first, n_epochs),
                best=best,
                panels=panels,
                what=what,
                lr=lr,
            )
        else:
            if phase == 1 and t.freeze_backbone:
                log.info("Phase 1 without the feature cache: %s", no_cache)
                phase_info = {"feature_cache": False, "why_not": no_cache}
            _compile(model, cfg, lr)
            log.info("Phase %d: %d epoch(s), %s, learning rate %g", phase, n_epochs, what, lr)
            model.fit(
                train_ds,
                validation_data=val_ds,
                initial_epoch=first,
                epochs=first + n_epochs,
                verbose=verbose,
                shuffle=False,
                callbacks=callbacks(phase, lr, first, n_epochs),
            )
        check_diverged(guard, best, lr)
        if phase == 1 and t.freeze_backbone:
            phase_info.update(head_stop.summary())
            log.info("Phase 1: %s", head_stop.describe())
        with atomic_path(end_weights) as tmp:
            model.save_weights(str(tmp))
        run.update_state(phase_done=phase, **({"phase1": phase_info} if phase_info else {}))

    # Final model: the best checkpoint's weights, or the last epoch's.
    if t.restore_best and best.model_path.is_file():
        info = best.info()
        best_model = load_model(best.model_path)
        model.set_weights(best_model.get_weights())
        log.info(
            "Final model: best epoch %s (%s %.4f)",
            info.get("epoch"),
            info.get("monitor"),
            info.get("value"),
        )
    return model


def _finish(cfg, run, placement, splits, model) -> FitResult:
    """Saves the final model and evaluates it on each split of ``train.evaluate_splits``."""
    t = cfg.train
    if placement.distributed:
        # The final model leaves the strategy: a plain copy is saved and evaluated by each worker
        # on the whole of each split (a distributed predict would see only this worker's shard).
        import dataclasses

        weights = model.get_weights()
        plain_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights="none"))
        model = build_model(plain_cfg, len(splits.class_names))
        model.set_weights(weights)
    with atomic_path(run.model_path) as tmp:
        model.save(tmp)

    metrics = {}
    for split in t.evaluate_splits:
        if splits.files.get(split):
            summary, _ = evaluate_model_on_split(model, run, split)
            metrics[split] = summary
    for phase in (1, 2):
        _remove_tree(run.checkpoints / f"backup_phase{phase}")
    return FitResult(run_dir=run.path, metrics=metrics)


def _remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
