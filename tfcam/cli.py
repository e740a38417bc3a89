"""The ``tfcam`` command line: a thin shell over the library.

TensorFlow is imported inside the commands that need it, never at module level, so ``tfcam --help``
and every ``--help`` answer at once. Exit codes: 0 success; 2 a usage or input error (one line on
stderr naming the bad value and the valid choices, no traceback); 1 anything unexpected; 130 when
interrupted.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path

import click

from tfcam import __version__
from tfcam.errors import TrainingDiverged, UserError

log = logging.getLogger("tfcam")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            return f"tfcam: {record.levelname.lower()}: {msg}"
        return f"tfcam: {msg}"


def _setup_logging(quiet: bool) -> None:
    log.handlers[:] = []
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


# Native log lines that TensorFlow writes before its logging is set up (so TF_CPP_MIN_LOG_LEVEL
# cannot silence them): info lines, the absl banner, and the CUDA probe failing on CPU machines.
_NATIVE_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    rb"|E\d{4} [\d:. ]+ +\d+ cuda_(platform|executor|diagnostics)\.cc:\d+\] "
    rb"|To enable the following instructions: )"
)
_stderr_filter: dict = {}


def _filter_native_stderr() -> None:
    """Routes file descriptor 2 through a filter that drops TensorFlow's start-up chatter.

    Only for the real terminal stderr (not under test runners), and not when TFCAM_TF_LOGS=1.
    Everything else written to stderr passes through unchanged; at exit the filter is drained.
    """
    if _stderr_filter or os.environ.get("TFCAM_TF_LOGS") == "1" or sys.stderr is not sys.__stderr__:
        return
    try:
        if sys.stderr.fileno() != 2:
            return
    except (AttributeError, OSError, ValueError):
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with (
            os.fdopen(read_end, "rb") as src,
            os.fdopen(os.dup(original), "wb", buffering=0) as dst,
        ):
            for line in src:
                if not _NATIVE_NOISE.match(line):
                    dst.write(line)

    thread = threading.Thread(target=pump, name="tfcam-stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes the pipe's last write end: the pump sees EOF
        thread.join(timeout=5)

    _stderr_filter["thread"] = thread
    atexit.register(drain)


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's C++ start-up chatter off the terminal (call before TF is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    _filter_native_stderr()


def _fail(message: str, code: int) -> None:
    click.echo(f"tfcam: error: {message}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Maps exceptions to exit codes and one-line messages."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "tfcam",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except click.ClickException as e:
            _fail(" ".join(e.format_message().split()), 2)
        except UserError as e:
            _fail(" ".join(str(e).split()), 2)
        except TrainingDiverged as e:
            _fail(str(e), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:
            traceback.print_exc()
            _fail(f"unexpected {type(e).__name__}: {e}", 1)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="tfcam")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def cli(quiet: bool) -> None:
    """Transfer learning for image classification, and the heatmaps that show why.

    \b
    Start here:
      tfcam experiments                    list the bundled experiments
      tfcam fit --experiment shapes        train the synthetic default (no download)
      tfcam evaluate runs/shapes-…         metrics of a finished run
    """
    _setup_logging(quiet)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def experiments(as_json: bool) -> None:
    """List the bundled experiments with a one-line description each."""
    from tfcam.config import list_experiments

    items = list_experiments()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    width = max(map(len, items), default=0)
    for name, desc in items.items():
        click.echo(f"{name:<{width}}  {desc}")


def _abs_if_path(value: str) -> str:
    """Makes an existing path absolute, so a resumed run finds it from anywhere."""
    p = Path(value).expanduser()
    return str(p.resolve()) if p.exists() else value


@cli.command()
@click.option(
    "-e", "--experiment", metavar="NAME|PATH.yaml", help="A bundled experiment name or a YAML file."
)
@click.option(
    "--data-dir", metavar="DIR", help="Image folder (class subfolders), overrides data.data_dir."
)
@click.option(
    "--weights", metavar="imagenet|none|PATH", help="Backbone weights, overrides model.weights."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any config field, e.g. --set train.epochs=3 (repeatable).",
)
@click.option(
    "--run-dir", metavar="DIR", help="Where to write the run (default runs/<experiment>-<time>)."
)
@click.option(
    "--resume", "resume_dir", metavar="RUN_DIR", help="Continue a killed or interrupted run."
)
@click.option("--no-report", is_flag=True, help="Skip the HTML report at the end.")
@click.option(
    "--sweep",
    "sweeps",
    multiple=True,
    metavar="KEY=V1,V2,…",
    help="Train one run per combination of values (repeatable: a grid); --run-dir names the "
    "sweep folder.",
)
@click.option(
    "--strategy",
    type=click.Choice(["auto", "none", "mirrored", "multiworker"]),
    default="auto",
    show_default=True,
    help="tf.distribute strategy: mirrored over local GPUs, multiworker over the machines of "
    "TF_CONFIG (each runs this command; worker 0 writes the report).",
)
def fit(
    experiment, data_dir, weights, overrides, run_dir, resume_dir, no_report, strategy, sweeps
) -> None:
    """Train an experiment and write its run directory (or a sweep folder of runs).

    \b
    Examples:
      tfcam fit --experiment shapes
      tfcam fit --experiment folder --data-dir ~/photos --set model.backbone=resnet50
      tfcam fit --resume runs/shapes-20261123-101500
      tfcam fit -e shapes --sweep train.learning_rate=0.01,0.001 --sweep data.batch_size=32,64
      tfcam fit --resume runs/shapes-sweep-20261123-101500
    """
    if sweeps or (resume_dir and (Path(resume_dir) / "sweep.json").is_file()):
        _fit_sweep(experiment, data_dir, weights, overrides, run_dir, resume_dir, no_report,
                   strategy, sweeps)  # fmt: skip
        return
    if resume_dir:
        if experiment or data_dir or weights or overrides or run_dir:
            raise UserError(
                "--resume continues a run with its own saved config; do not combine it with "
                "--experiment, --data-dir, --weights, --set or --run-dir"
            )
    elif not experiment:
        raise UserError("Give --experiment NAME (see 'tfcam experiments') or --resume RUN_DIR")

    cfg = None if resume_dir else _experiment_config(experiment, data_dir, weights, overrides)

    _quiet_tensorflow()
    from tfcam.train.fit import fit as run_fit

    result = run_fit(
        cfg,
        resume_dir or run_dir,
        resume=bool(resume_dir),
        report=not no_report,
        strategy=strategy,
    )
    click.echo(f"Run directory: {result.run_dir}")
    for split, m in result.metrics.items():
        click.echo(
            f"{split}: accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  ({m['n']} images)"
        )
    click.echo(f"Wall time: {result.seconds:.1f} s")


def _fit_sweep(
    experiment, data_dir, weights, overrides, run_dir, resume_dir, no_report, strategy, sweeps
) -> None:
    if resume_dir and (experiment or data_dir or weights or overrides or run_dir or sweeps):
        raise UserError(
            "--resume continues a sweep with its own saved grid; do not combine it with "
            "--experiment, --data-dir, --weights, --set, --sweep or --run-dir"
        )
    if not resume_dir and not experiment:
        raise UserError("Give --experiment NAME with --sweep")
    _quiet_tensorflow()
    from tfcam.train.sweep import run_sweep

    result = run_sweep(
        experiment=experiment,
        data_dir=_abs_if_path(data_dir) if data_dir else None,
        weights=_abs_if_path(weights)
        if weights and weights not in ("imagenet", "none")
        else weights,
        overrides=list(overrides),
        sweeps=list(sweeps),
        sweep_dir=run_dir,
        resume=resume_dir,
        report=not no_report,
        strategy=strategy,
    )
    click.echo(f"Sweep folder: {result['path']}")
    for t in result["trials"]:
        reason = f"  ({t['reason']})" if t.get("reason") else ""
        click.echo(f"  {t['id']}: {t['status']}{reason}")
    if "compare" in result:
        import pandas as pd

        table = pd.read_csv(result["compare"]["files"]["csv"], index_col="run")
        click.echo(table.to_string(float_format=lambda v: f"{v:.4g}"))
        click.echo(f"Comparison: {result['compare']['files']['html']}")
    tb = Path(result["path"]) / "hparams"
    click.echo(f"HParams dashboard: tensorboard --logdir {tb}")


def _run_and_inputs(paths, model_path) -> tuple[str | None, list[str]]:
    """``[RUN_DIR] INPUT...``: the run (checked) and the inputs; with --model, all are inputs."""
    paths = list(paths)
    if model_path is not None:
        return None, paths
    if not paths:
        raise UserError("Give a run directory (or --model PATH.keras) and images")
    from tfcam.runs import Run

    Run(paths[0]).require_model()
    return paths[0], paths[1:]


def _experiment_config(experiment, data_dir, weights, overrides):
    """Loads an experiment with the command line's overrides, checked before TensorFlow loads."""
    from tfcam.config import load_experiment
    from tfcam.data.sources import check_data_config

    extra = {}
    if data_dir is not None:
        extra["data.data_dir"] = _abs_if_path(data_dir)
    if weights is not None:
        extra["model.weights"] = (
            weights if weights in ("imagenet", "none") else _abs_if_path(weights)
        )
    cfg = load_experiment(experiment, overrides, extra=extra)
    check_data_config(cfg.data, cfg.name)
    w = cfg.model.weights
    if w not in ("imagenet", "none") and not Path(w).is_file():
        raise UserError(
            f"Weights file not found: '{w}'. Use --weights imagenet, none or an existing file"
        )
    return cfg


@cli.command("augment-preview")
@click.option("-e", "--experiment", required=True, metavar="NAME|PATH.yaml", help="The experiment.")
@click.option("--data-dir", metavar="DIR", help="Overrides data.data_dir.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config field, e.g. --set data.augment.grid_distortion=1.",
)
@click.option(
    "--out", "out_path", default="augment_preview.png", show_default=True, metavar="OUT.png"
)
@click.option("--images", "n_images", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--variants", type=click.IntRange(min=1), default=5, show_default=True)
def augment_preview(experiment, data_dir, overrides, out_path, n_images, variants) -> None:
    """A grid of training images and augmented copies, as the experiment's data.augment makes them."""
    cfg = _experiment_config(experiment, data_dir, None, overrides)
    if not any(p > 0 for p in cfg.data.augment.values()):
        click.echo(
            "Note: this experiment has no augmentation; add some with --set data.augment.NAME=P",
            err=True,
        )
    _quiet_tensorflow()
    from tfcam.data.augment import augmented_samples
    from tfcam.viz.gallery import image_grid
    from tfcam.viz.plots import to_png

    names, images, augmented = augmented_samples(cfg, n_images, variants)
    tiles, titles = [], []
    for name, img, row in zip(names, images, augmented, strict=True):
        tiles += [img, *row]
        titles += [name[:28]] + [f"augmented {j + 1}" for j in range(len(row))]
    aug = ", ".join(f"{k} {v:g}" for k, v in cfg.data.augment.items() if v > 0) or "none"
    fig = image_grid(tiles, titles, cols=1 + variants, suptitle=f"{cfg.name}: {aug}")
    _write_bytes(Path(out_path), to_png(fig))
    click.echo(f"Wrote {out_path}")


@cli.command("lr-find")
@click.option("-e", "--experiment", required=True, metavar="NAME|PATH.yaml", help="The experiment.")
@click.option("--data-dir", metavar="DIR", help="Overrides data.data_dir.")
@click.option("--weights", metavar="imagenet|none|PATH", help="Overrides model.weights.")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config field."
)
@click.option("--start", type=float, default=1e-7, show_default=True, help="First learning rate.")
@click.option("--end", type=float, default=1.0, show_default=True, help="Last learning rate.")
@click.option("--steps", type=int, default=100, show_default=True, help="Batches in the sweep.")
@click.option(
    "--out",
    "out_dir",
    metavar="DIR",
    help="Output folder (default runs/lr-find-<experiment>-<time>).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def lr_find(experiment, data_dir, weights, overrides, start, end, steps, out_dir, as_json) -> None:
    """Learning-rate range test: loss against a geometrically growing rate, and a suggestion.

    \b
    Examples:
      tfcam lr-find --experiment shapes
      tfcam lr-find --experiment folder --data-dir ~/photos --steps 200 --end 0.1
    """
    cfg = _experiment_config(experiment, data_dir, weights, overrides)
    if not 0 < start < end:
        raise UserError(f"The rate range must satisfy 0 < --start < --end, got {start} … {end}")
    if steps < 5:
        raise UserError(f"--steps must be at least 5, got {steps}")
    from tfcam.runs import default_run_dir

    out = out_dir or default_run_dir(f"lr-find-{cfg.name}")
    _quiet_tensorflow()
    from tfcam.train.lr_finder import find_lr

    result = find_lr(cfg, out, start=start, end=end, steps=steps)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "suggestion": result.suggestion,
                    "steps_run": len(result.table),
                    "out": str(result.out_dir),
                }
            )
        )
        return
    click.echo(f"Suggested learning rate: {result.suggestion:.3g}  ({len(result.table)} batches)")
    click.echo(
        f"Curve: {result.out_dir / 'lr_finder.png'}  table: {result.out_dir / 'lr_finder.csv'}"
    )


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="RUN_DIR... | SWEEP_DIR")
@click.option(
    "--sort",
    type=click.Choice(["val_accuracy", "val_loss", "test_accuracy", "test_loss", "seconds"]),
    default="val_accuracy",
    show_default=True,
)
@click.option(
    "--out", "out_dir", metavar="DIR", help="Default: SWEEP_DIR/compare, or runs/compare-<time>."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def compare(paths, sort, out_dir, as_json) -> None:
    """Runs side by side: the config fields that differ, accuracy, loss, best epoch, time;
    overlaid learning curves and an HTML page linking each run's report.

    \b
    Examples:
      tfcam compare runs/shapes-20261123-101500 runs/shapes-20261123-111500
      tfcam compare runs/shapes-sweep-20261123-120000 --sort val_loss
    """
    from tfcam.report.compare import write_compare

    if out_dir is None:
        if len(paths) == 1 and (Path(paths[0]) / "sweep.json").is_file():
            out_dir = Path(paths[0]) / "compare"
        else:
            from tfcam.runs import default_run_dir

            out_dir = default_run_dir("compare")
    result = write_compare(list(paths), out_dir, sort)
    for w in result["warnings"]:
        log.warning("%s", w)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    import pandas as pd

    table = pd.read_csv(result["files"]["csv"], index_col="run")
    click.echo(table.to_string(float_format=lambda v: f"{v:.4g}"))
    click.echo(f"Page: {result['files']['html']}")


@cli.command("evaluate-cams")
@click.argument("run_dir", metavar="RUN_DIR")
@click.option(
    "-m",
    "--methods",
    default="gradcam,gradcam++,scorecam,layercam,eigencam,saliency",
    show_default=True,
    help="Comma-separated methods (tfcam explain --list-methods); the reference maps random and "
    "center are always added.",
)
@click.option("--layer", help="Layer for CAM methods (default: the last convolutional map).")
@click.option("--n", "n_images", type=click.IntRange(min=1), default=200, show_default=True)
@click.option(
    "--split", type=click.Choice(["train", "val", "test"]), default="val", show_default=True
)
@click.option(
    "--boxes",
    "boxes_csv",
    metavar="CSV",
    help="Object boxes (path,x0,y0,x1,y1) for the pointing games; shapes runs have their own.",
)
@click.option(
    "--step",
    type=click.IntRange(min=1),
    help="Pixels per deletion/insertion step (default: 1/32 of the image).",
)
@click.option(
    "--blur-sigma",
    type=click.FloatRange(min=0, min_open=True),
    help="Blur (px) of the insertion's starting image (default: 1/12 of the side).",
)
@click.option("--no-road", is_flag=True, help="Skip ROAD (the slowest metric).")
@click.option(
    "--max-n",
    type=click.IntRange(min=1),
    help="Score-CAM: only this many channels of highest variance (default: all, slow).",
)
@click.option(
    "--sanity-images",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="Images for the randomisation sanity check (0 skips it).",
)
@click.option("--out", "out_dir", metavar="DIR", help="Default: RUN_DIR/evaluate_cams.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def evaluate_cams_cmd(
    run_dir, methods, layer, n_images, split, boxes_csv, step, blur_sigma, no_road, max_n,
    sanity_images, out_dir, as_json,
) -> None:  # fmt: skip
    """Which heatmap to trust: pointing games, deletion/insertion, ROAD, average drop and a
    randomisation sanity check per method, on the run's own images.

    \b
    Examples:
      tfcam evaluate-cams runs/shapes-20261123-101500 -m gradcam,gradcam++,scorecam
      tfcam evaluate-cams RUN --n 100 --no-road --boxes boxes.csv --json
    """
    from tfcam.runs import Run

    Run(run_dir).require_model()
    _quiet_tensorflow()
    from tfcam.explain.evaluate_cams import evaluate_cams

    t0 = time.perf_counter()
    result = evaluate_cams(
        run_dir,
        [methods],
        layer=layer,
        n=n_images,
        split=split,
        boxes_csv=boxes_csv,
        step=step,
        blur_sigma=blur_sigma,
        road=not no_road,
        sanity_images=sanity_images,
        out_dir=out_dir,
        max_n=max_n,
    )
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    md = Path(result["files"]["markdown"]).read_text(encoding="utf-8")
    click.echo(md.rstrip())
    click.echo(f"Written to {Path(result['files']['csv']).parent} in {result['seconds']} s")


@cli.command()
@click.argument("run_dir", metavar="RUN_DIR")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def evaluate(run_dir, split, as_json) -> None:
    """Accuracy, loss and per-class precision/recall/F1 of a run; updates metrics.json."""
    from tfcam.runs import Run

    Run(run_dir).require_model()
    _quiet_tensorflow()
    from tfcam.train.evaluate import evaluate_run

    summary, per_class = evaluate_run(run_dir, split)
    if as_json:
        click.echo(json.dumps({"split": split, **summary}, indent=2))
        return
    click.echo(
        f"{split}: accuracy {summary['accuracy']:.4f}  loss {summary['loss']:.4f}  "
        f"macro F1 {summary['macro_f1']:.4f}  ({summary['n']} images)"
    )
    click.echo(per_class.to_string(float_format=lambda v: f"{v:.3f}"))


@cli.command()
@click.argument("run_dir", metavar="RUN_DIR")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option(
    "-k", "--top-k", default=3, show_default=True, help="How many classes to list per image."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def predict(run_dir, images, top_k, as_json) -> None:
    """Predict the class of each IMAGE with a run's model."""
    from tfcam.runs import Run

    Run(run_dir).require_model()
    _quiet_tensorflow()
    from tfcam.train.evaluate import predict_images

    results = predict_images(run_dir, list(images), top_k=top_k)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        tops = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top_k"])
        click.echo(f"{r['image']}: {r['predicted']} ({r['confidence']:.3f})   [{tops}]")


@cli.command()
@click.argument("run_dir", metavar="RUN_DIR")
def report(run_dir) -> None:
    """(Re)write a run's HTML report, RUN_DIR/report/index.html."""
    from tfcam.runs import Run

    Run(run_dir).require()
    _quiet_tensorflow()
    from tfcam.train.fit import build_report

    click.echo(f"Report: {build_report(run_dir)}")


@cli.command()
@click.argument("paths", nargs=-1, metavar="[RUN_DIR] INPUT...")
@click.option(
    "--model", "model_path", metavar="PATH.keras", help="Explain this model instead of a run's."
)
@click.option(
    "-m",
    "--method",
    "methods",
    multiple=True,
    default=("gradcam",),
    show_default=True,
    help="Method(s), repeatable or comma-separated; see --list-methods.",
)
@click.option(
    "--layer", "layers", multiple=True, help="Layer(s) for CAM methods (default: the backbone's)."
)
@click.option(
    "--target", help="Class name or index to explain (default: each image's predicted class)."
)
@click.option(
    "--out", "out_dir", metavar="DIR", help="Output folder (default: RUN_DIR/explanations)."
)
@click.option(
    "--alpha", default=0.4, show_default=True, type=click.FloatRange(0, 1), help="Heatmap weight."
)
@click.option(
    "--score", type=click.Choice(["logit", "probability"]), default="logit", show_default=True
)
@click.option(
    "--max-n", type=click.IntRange(min=1), help="Score-CAM: channels of highest variance to use."
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="SmoothGrad samples.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Integrated Gradients steps.",
)
@click.option("--aug-smooth", is_flag=True, help="Average over test-time augmentations.")
@click.option(
    "--eigen-smooth", is_flag=True, help="First principal component instead of the channel sum."
)
@click.option(
    "--class-names", metavar="FILE.json", help="With --model: class names (list or ImageNet index)."
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--list-layers", is_flag=True, help="Print the layers that can be explained and exit."
)
@click.option("--list-methods", is_flag=True, help="Print the methods and exit.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON only (per image: prediction, score, files)."
)
def explain(
    paths,
    model_path,
    methods,
    layers,
    target,
    out_dir,
    alpha,
    score,
    max_n,
    samples,
    steps,
    aug_smooth,
    eigen_smooth,
    class_names,
    batch_size,
    list_layers,
    list_methods,
    as_json,
) -> None:
    """Heatmaps for images: Grad-CAM and its family, gradients, guided backpropagation.

    \b
    Examples:
      tfcam explain runs/shapes-… photo.jpg folder/ --method gradcam,scorecam
      tfcam explain --model net.keras cat.jpg --method guided_gradcam --layer conv5_block3_out
    """
    from tfcam.explain.methods import DESCRIPTIONS, METHODS, parse_methods

    if list_methods:
        width = max(map(len, METHODS))
        click.echo("\n".join(f"{m:<{width}}  {DESCRIPTIONS[m]}" for m in METHODS))
        return
    chosen = parse_methods(methods)
    run_dir, inputs = _run_and_inputs(paths, model_path)
    if not inputs and not list_layers:
        raise UserError("Give at least one image or folder to explain")
    if inputs:
        from tfcam.explain.inputs import list_inputs

        list_inputs(inputs)  # fail on a missing path before TensorFlow loads
    _quiet_tensorflow()
    from tfcam.explain import api

    source = api.from_run(run_dir) if run_dir else api.from_model_file(model_path, class_names)
    if list_layers:
        from tfcam.explain.engine import default_layer, spatial_layers

        default = default_layer(source.model)
        for name in spatial_layers(source.model):
            click.echo(f"{name}{'  (default)' if name == default else ''}")
        return
    options = {
        "max_n": max_n,
        "samples": samples,
        "steps": steps,
        "aug_smooth": aug_smooth,
        "eigen_smooth": eigen_smooth,
    }
    files = api.list_inputs(inputs)
    show = not as_json and sys.stderr.isatty()
    with click.progressbar(
        length=len(files), label="Explaining", file=sys.stderr, hidden=not show
    ) as bar:
        records = api.explain_files(
            source,
            inputs,
            chosen,
            out_dir=out_dir,
            layers=layers or None,
            target=target,
            alpha=alpha,
            score=score,
            batch_size=batch_size,
            options=options,
            progress=bar.update,
        )
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    out = Path(next(iter(next(iter(records[0]["outputs"].values())).values()))).parent.parent
    for r in records:
        click.echo(
            f"{r['image']}: predicted {r['predicted']} ({r['probability']:.3f}), explained {r['target']}"
        )
    click.echo(
        f"Wrote {sum(len(r['outputs']) for r in records)} overlay(s) with heatmaps and panels under {out}"
    )


@cli.command()
@click.argument("paths", nargs=-1, metavar="[RUN_DIR] INPUT...")
@click.option(
    "--model", "model_path", metavar="PATH.keras", help="Use this model instead of a run's."
)
@click.option(
    "--layer", "layers", multiple=True, help="Layer(s) (default: the backbone's early layer)."
)
@click.option(
    "--count", type=click.IntRange(min=1), default=16, show_default=True, help="Channels per grid."
)
@click.option(
    "--order", type=click.Choice(["first", "most_active"]), default="first", show_default=True
)
@click.option(
    "--out", "out_dir", metavar="DIR", help="Output folder (default: RUN_DIR/explanations)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def features(paths, model_path, layers, count, order, out_dir, as_json) -> None:
    """Feature-map grids: the activations of a layer, one small map per channel.

    \b
    Examples:
      tfcam features runs/shapes-… photo.png --layer block1_relu --order most_active
      tfcam features --model vgg19.keras cat.jpg --layer block1_conv2 --count 64
    """
    run_dir, inputs = _run_and_inputs(paths, model_path)
    if not inputs:
        raise UserError("Give at least one image or folder")
    from tfcam.explain.inputs import list_inputs

    list_inputs(inputs)
    _quiet_tensorflow()
    from tfcam.explain import api

    source = api.from_run(run_dir) if run_dir else api.from_model_file(model_path)
    records = api.write_feature_maps(
        source, inputs, layers=layers or None, count=count, order=order, out_dir=out_dir
    )
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for r in records:
        for layer, path in r["outputs"].items():
            click.echo(f"{r['image']}: {layer} channels {r['channels'][layer]} -> {path}")


@cli.command("receptive-field")
@click.argument("run_dir", required=False, metavar="[RUN_DIR]")
@click.option(
    "--backbone", help="A registry backbone (built with random weights; see `tfcam fit`)."
)
@click.option(
    "--input-size",
    type=click.IntRange(min=1),
    help="Input side in pixels (--backbone, or a model without a fixed size).",
)
@click.option("--model", "model_path", metavar="PATH.keras", help="Any Keras 3 model file.")
@click.option(
    "--weights",
    help="With --backbone: imagenet, none (default) or a no-top weights file (matters for --plot and --image).",
)
@click.option("--layer", help="One layer (default: a table of every layer).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
@click.option(
    "--plot",
    "plot_path",
    metavar="OUT.png",
    help="With --layer: the effective receptive field; without: field size per layer.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="IMG|FOLDER",
    help="With --layer: draw the strongest units' patches (a folder: top patches across its images).",
)
@click.option(
    "--top",
    "top_k",
    type=click.IntRange(min=1),
    default=9,
    show_default=True,
    help="Patches to draw.",
)
@click.option(
    "--channel",
    type=click.IntRange(min=0),
    help="Rank units by this channel (default: each unit's strongest; for a folder, the most active channel).",
)
@click.option(
    "--out",
    "out_dir",
    metavar="DIR",
    help="Folder for patch images (default: RUN_DIR/receptive_field or ./receptive_field).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Check the analytic box against the input gradient's support (exit 1 if they disagree).",
)
@click.option(
    "--erf-images",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="--plot: noise images to average (or the --image files).",
)
def receptive_field_cmd(
    run_dir,
    backbone,
    input_size,
    model_path,
    weights,
    layer,
    as_json,
    plot_path,
    images,
    top_k,
    channel,
    out_dir,
    verify,
    erf_images,
) -> None:
    """Receptive fields: size R, stride S and padding P of every layer, per axis.

    The centre of unit x lies at input pixel -P + x·S + (R-1)/2 (google-research/receptive_field's
    convention); the table needs no forward pass.

    \b
    Examples:
      tfcam receptive-field --backbone vgg16 --layer block5_pool --json
      tfcam receptive-field --backbone resnet50 --input-size 320
      tfcam receptive-field runs/shapes-… --layer block3_relu --image photo.png --top 5 --verify
      tfcam receptive-field --model net.keras --layer conv4 --plot erf.png
    """
    given = [
        n for n, v in (("RUN_DIR", run_dir), ("--backbone", backbone), ("--model", model_path)) if v
    ]
    if len(given) != 1:
        raise UserError(
            "Give exactly one of RUN_DIR, --backbone NAME or --model PATH.keras"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if weights and not backbone:
        raise UserError("--weights goes with --backbone (a run or model file has its own weights)")
    if images and layer is None:
        raise UserError("--image needs --layer (run without it to see the layers)")
    resize = "stretch"
    default_out = Path("receptive_field")
    if backbone:
        from tfcam.models.registry import get_backbone

        bb = get_backbone(backbone)
        size = input_size or bb.default_size
        if size < bb.min_size:
            raise UserError(
                f"Backbone '{backbone}' needs inputs of at least {bb.min_size} px, got {size}"
            )
    elif run_dir:
        from tfcam.runs import Run

        run = Run(run_dir).require_model()
        default_out = run.path / "receptive_field"
    else:
        if not Path(model_path).is_file():
            raise UserError(f"Model file not found: '{model_path}'")
    if images:
        from tfcam.explain.inputs import list_inputs

        list_inputs(images)  # a missing path fails before TensorFlow loads
    _quiet_tensorflow()
    from tfcam.explain import receptive_field as rf
    from tfcam.models.build import load_model

    if backbone:
        from tfcam.models.build import build_classifier

        model = build_classifier(backbone=backbone, num_classes=2, image_size=size, weights=weights)
        input_size = None
    elif run_dir:
        cfg = run.config()
        resize = cfg.data.resize
        model = load_model(run.model_path)
    else:
        model = load_model(model_path)
    fields = rf.receptive_fields(model, input_size)
    if layer is None:
        _rf_table(rf, model, fields, as_json, plot_path, verify)
        return
    if layer not in fields:
        raise rf.layer_choice_error(layer, list(fields))
    field = fields[layer]
    record = field.as_dict()
    lines = [_rf_line(field)]
    failed = False
    if verify:
        v = rf.verify(model, layer, fields=fields)
        record["verify"] = v.as_dict()
        failed = not v.ok
        lines.append(
            f"empirical check, unit {v.unit}: gradient support {v.support} vs analytic box "
            f"{v.analytic} (top, left, bottom, right): {'agree' if v.ok else 'DISAGREE'}"
        )
    if plot_path:
        import numpy as np

        from tfcam.viz.plots import effective_field_plot, to_png

        field._need_local()
        pics = None
        if images:
            from tfcam.data.pipeline import read_images
            from tfcam.explain.inputs import list_inputs

            pics = read_images([str(f) for f in list_inputs(images)], field.input_shape, resize)
        erf = rf.effective_receptive_field(model, layer, pics, n_random=erf_images)
        fig = effective_field_plot(
            np.sqrt(erf.map),
            erf.centre,
            erf.radius95,
            field.box(*erf.unit),
            title=f"{layer}: effective receptive field, {erf.images} image(s)",
            colorbar_label="√ share of gradient magnitude",
        )
        _write_bytes(Path(plot_path), to_png(fig))
        record["effective"] = erf.as_dict()
        lines.append(
            f"effective receptive field (Luo et al. 2016): 95% of the gradient within "
            f"{2 * erf.radius95 + 1:.0f}×{2 * erf.radius95 + 1:.0f} px of the centre, theoretical "
            f"{field.size[0]}×{field.size[1]}; plot: {plot_path}"
        )
    if images:
        out = Path(out_dir) if out_dir else default_out
        rec = rf.write_patches(model, field, images, out, k=top_k, channel=channel, resize=resize)
        record["patches"] = rec["patches"]
        record["files"] = rec["files"]
        lines.append("wrote " + ", ".join(rec["files"]))
    if as_json:
        click.echo(json.dumps(record))
    else:
        click.echo("\n".join(lines))
    if failed:
        _fail(f"the analytic field of '{layer}' disagrees with the gradient's support", 1)


def _rf_line(field) -> str:
    if field.kind != "local":
        return f"{field.layer}: no box per unit, the field is {field.kind}: {field.reason}"
    (ry, rx), (sy, sx), (py, px) = field.size, field.stride, field.padding
    h, w = field.shape
    extra = (
        "; also sees the whole image through a globally pooled branch"
        if field.global_context
        else ""
    )
    return (
        f"{field.layer}: size {ry}×{rx}, stride {sy}×{sx}, padding {py}×{px} (output {h}×{w}; "
        f"unit (y, x) sees rows {-py}+{sy}y … {ry - 1 - py}+{sy}y, columns {-px}+{sx}x … "
        f"{rx - 1 - px}+{sx}x{extra})"
    )


def _rf_table(rf, model, fields, as_json, plot_path, verify) -> None:
    table = rf.fields_table(fields)
    failed = []
    if verify:
        local = [n for n, f in fields.items() if f.kind == "local" and f.layer_type != "InputLayer"]
        step = max(1, len(local) // 12)
        checked = {}
        for name in local[::step]:
            v = rf.verify(model, name, fields=fields)
            checked[name] = "ok" if v.ok else "FAILED"
            if not v.ok:
                failed.append(name)
        table["verify"] = [checked.get(n, "") for n in table["layer"]]
    if plot_path:
        from tfcam.viz.plots import field_growth_plot, to_png

        _write_bytes(Path(plot_path), to_png(field_growth_plot(table, model.name)))
    if as_json:
        out = [f.as_dict() for f in fields.values()]
        if verify:
            for o, mark in zip(out, table["verify"], strict=True):
                if mark:
                    o["verify"] = mark == "ok"
        click.echo(json.dumps(out))
    else:
        import pandas as pd

        with pd.option_context(
            "display.max_rows", None, "display.width", 200, "display.max_colwidth", 70
        ):
            left = {
                c: f"{{:<{table[c].astype(str).str.len().max()}}}".format
                for c in ("layer", "type", "note")
            }
            click.echo(table.to_string(index=False, formatters=left, justify="left").rstrip())
    if failed:
        _fail(
            f"the analytic field disagrees with the gradient's support at: {', '.join(failed)}", 1
        )


def _write_bytes(path: Path, data: bytes) -> None:
    from tfcam.io import atomic_path

    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="tfcam")


if __name__ == "__main__":
    main()
