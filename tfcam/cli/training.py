"""Commands that train or prepare training: experiments, backbones, fit (and sweeps),
augment-preview, lr-find."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import click

from tfcam.cli.group import cli
from tfcam.cli.options import (
    count_option,
    echo_table,
    experiment_options,
    force_option,
    json_option,
    out_option,
    shortcut_options,
)
from tfcam.cli.stderr import quiet_tensorflow
from tfcam.errors import UserError
from tfcam.io import printable

log = logging.getLogger("tfcam")


@cli.command()
@json_option()
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


@cli.command()
@json_option("Print JSON only: one entry per backbone, with every field of its registry row.")
@click.option("--markdown", is_flag=True, help="Print the table of the README (Markdown).")
def backbones(as_json: bool, markdown: bool) -> None:
    """List the registered backbones: family, source, parameters, size, explanation layer.

    Parameters are those of the network without its top, at the default options; the size is
    the default input side and, in brackets, the smallest. Any name goes to --backbone.

    \b
    Examples:
      tfcam backbones
      tfcam backbones --json
      tfcam fit DIR --backbone convnext_tiny --weights none
    """
    from tfcam.models.registry import markdown_table, options_text, rows

    if as_json and markdown:
        raise UserError("Give --json or --markdown, not both")
    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    items = rows()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    table = [
        (
            r["name"],
            r["family"],
            r["source"],
            f"{r['parameters'] / 1e6:.1f}M",
            f"{r['default_size']} ({r['min_size']})",
            r["explanation_layer"],
            options_text(r["options"]),
        )
        for r in items
    ]
    header = ("name", "family", "source", "params", "size", "explanation layer", "options")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, *table]:
        click.echo("  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip())


@cli.command("config")
@click.argument("name", required=False, metavar="[NAME|PATH.yaml]")
@experiment_options(
    required=False,
    experiment_help="Same as NAME.",
    set_help="Override a config field, e.g. --set train.epochs=3 (repeatable).",
)
@shortcut_options()
@click.option("--keys", "list_keys", is_flag=True, help="Print every settable key, one a line.")
def config_cmd(name, experiment, data_dir, weights, overrides, list_keys) -> None:
    """Print an experiment's resolved config as commented YAML: every key, its value after
    --set and the shortcuts, and what it means (default: shapes).

    The output loads back as an experiment file.

    \b
    Examples:
      tfcam config imagewoof --backbone mobilenet_v2
      tfcam config shapes --set train.epochs=3 > mine.yaml && tfcam fit -e mine.yaml
      tfcam config --keys
    """
    from tfcam.config import load_experiment, valid_keys

    if name and experiment and name != experiment:
        raise UserError(f"Give the experiment once: NAME '{name}' or --experiment '{experiment}'")
    if list_keys:
        click.echo("\n".join(valid_keys()))
        return
    from tfcam.config_docs import commented_yaml

    cfg = load_experiment(name or experiment or "shapes", overrides, data_dir=data_dir,
                          weights=weights)  # fmt: skip
    click.echo(commented_yaml(cfg), nl=False)


@cli.command()
@click.argument("data", required=False, metavar="[DATA_DIR]")
@experiment_options(
    required=False,
    experiment_help="A bundled experiment name or a YAML file (default: folder with a "
    "DATA_DIR, else shapes).",
    data_dir_help="Image folder (class subfolders), overrides data.data_dir; same as DATA_DIR.",
    weights_help="Backbone weights, overrides model.weights.",
    set_help="Override any config field, e.g. --set train.epochs=3 (repeatable).",
)
@shortcut_options()
@click.option(
    "--run-dir", metavar="DIR", help="Where to write the run (default runs/<experiment>-<time>)."
)
@click.option(
    "--resume", "resume_dir", metavar="RUN_DIR", help="Continue a killed or interrupted run."
)
@force_option("With --resume: train a run that already finished again, replacing its model.")
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
def fit(data, experiment, data_dir, weights, overrides, run_dir, resume_dir, force, no_report,
        strategy, sweeps):  # fmt: skip
    """Train an experiment and write its run directory (or a sweep folder of runs).

    DATA_DIR (or --data-dir) alone trains the 'folder' experiment on it; with nothing at all, the
    synthetic 'shapes' default trains (no download).

    \b
    Examples:
      tfcam fit
      tfcam fit ~/photos --epochs 5 --backbone resnet50
      tfcam fit -e imagewoof --backbone mobilenet_v2 --data-dir ~/data/imagewoof
      tfcam fit --resume runs/shapes-20261123-101500
      tfcam fit --resume runs/shapes-20261123-101500 --force   # train a finished run again
      tfcam fit -e shapes --sweep train.learning_rate=0.01,0.001 --sweep data.batch_size=32,64
      tfcam fit --resume runs/shapes-sweep-20261123-101500
    """
    given = experiment or data or data_dir or weights or overrides or run_dir
    experiment, data_dir, chosen = _what_to_train(data, experiment, data_dir, resume_dir)
    if force and not resume_dir:
        raise UserError("--force goes with --resume RUN_DIR (to train a finished run again)")
    if sweeps or (resume_dir and (Path(resume_dir) / "sweep.json").is_file()):
        _fit_sweep(experiment, data_dir, weights, overrides, run_dir, resume_dir, no_report,
                   strategy, sweeps, given, force)  # fmt: skip
        return
    if resume_dir and given:
        raise UserError(
            "--resume continues a run with its own saved config; do not combine it with "
            "--experiment, --data-dir, --weights, --set or --run-dir"
        )
    cfg = None if resume_dir else _load(experiment, overrides, data_dir, weights)
    if chosen:
        log.info("%s", chosen)
    quiet_tensorflow()
    from tfcam.train.fit import fit as run_fit

    result = run_fit(cfg, resume_dir or run_dir, resume=bool(resume_dir), report=not no_report,
                     strategy=strategy, force=force)  # fmt: skip
    _echo_footer(result)


def _what_to_train(data, experiment, data_dir, resume_dir):
    """``(experiment, data folder, note)``: DATA_DIR is --data-dir; without -e, a folder implies
    the folder experiment and nothing at all the embedded default (noted on stderr later)."""
    if data is not None:
        if data_dir is not None:
            raise UserError(
                f"Give the data folder once: DATA_DIR '{data}' or --data-dir '{data_dir}'"
            )
        data_dir = data
    if resume_dir or experiment:
        return experiment, data_dir, None
    experiment = "folder" if data_dir is not None else "shapes"
    return (
        experiment,
        data_dir,
        (f"Experiment: {experiment} (choose another with -e NAME; see tfcam experiments)"),
    )


def _echo_footer(result) -> None:
    """The final metrics once, then where everything is and what to run next."""
    run = Path(result.run_dir)
    for split, m in result.metrics.items():
        click.echo(
            f"{split}: accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  ({m['n']} images)"
        )
    rows = [("Run directory", str(run)), ("Wall time", f"{result.seconds:.1f} s")]
    report = run / "report" / "index.html"
    if report.is_file():
        rows.append(("Report", str(report)))
    rows.append(("TensorBoard", f"tensorboard --logdir {shlex.quote(str(run / 'tensorboard'))}"))
    image = _an_image(run)
    rows.append(("Explain", f"tfcam explain {shlex.quote(str(run))} {image}"))
    width = max(len(k) for k, _ in rows) + 1
    for key, value in rows:
        click.echo(f"{key + ':':<{width}} {printable(value)}")


def _an_image(run: Path) -> str:
    """A validation image of the run for the suggested ``tfcam explain`` (IMAGE if none)."""
    import csv

    try:
        with open(run / "splits.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("split") == "val":
                    return shlex.quote(row["path"])
    except (OSError, ValueError, KeyError):
        pass
    return "IMAGE..."


def _load(experiment, overrides, data_dir=None, weights=None):
    """The experiment with the command line's overrides, checked before TensorFlow loads."""
    from tfcam.config import load_experiment

    return load_experiment(
        experiment, overrides, data_dir=data_dir, weights=weights, check_paths=True
    )


def _fit_sweep(
    experiment, data_dir, weights, overrides, run_dir, resume_dir, no_report, strategy, sweeps,
    given, force=False,
) -> None:  # fmt: skip
    if force:
        raise UserError("--force trains one finished run again; it does not apply to sweeps")
    if resume_dir and (given or sweeps):
        raise UserError(
            "--resume continues a sweep with its own saved grid; do not combine it with "
            "--experiment, --data-dir, --weights, --set, --sweep or --run-dir"
        )
    quiet_tensorflow()
    from tfcam.train.sweep import run_sweep

    result = run_sweep(
        experiment=experiment,
        data_dir=data_dir,
        weights=weights,
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
        echo_table(result["compare"]["files"]["csv"])
        click.echo(f"Comparison: {result['compare']['files']['html']}")
    click.echo(f"HParams dashboard: tensorboard --logdir {Path(result['path']) / 'hparams'}")


@cli.command("augment-preview")
@experiment_options(
    weights=False, set_help="Override a config field, e.g. --set data.augment.grid_distortion=1."
)
@shortcut_options("image_size")
@out_option("The picture to write.", metavar="OUT.png", default="augment_preview.png",
            show_default=True)  # fmt: skip
@count_option("--images", "n_images", default=4, help="Training images, one row each.")
@count_option("--variants", default=5, help="Augmented copies of each image.")
def augment_preview(experiment, data_dir, overrides, out_path, n_images, variants) -> None:
    """A grid of training images and augmented copies, as the experiment's data.augment makes them."""
    cfg = _load(experiment, overrides, data_dir)
    if not any(p > 0 for p in cfg.data.augment.values()):
        click.echo(
            "Note: this experiment has no augmentation; add some with --set data.augment.NAME=P",
            err=True,
        )
    quiet_tensorflow()
    from tfcam.data.preview import write_augment_preview

    write_augment_preview(cfg, out_path, n_images, variants)
    click.echo(f"Wrote {out_path}")


@cli.command("lr-find")
@experiment_options()
@shortcut_options("batch_size", "backbone", "image_size")
@click.option("--start", type=float, default=1e-7, show_default=True, help="First learning rate.")
@click.option("--end", type=float, default=1.0, show_default=True, help="Last learning rate.")
@count_option("--steps", default=100, help="Batches in the sweep (at least 5).")
@out_option("Output folder (default runs/lr-find-<experiment>-<time>).")
@json_option()
def lr_find(experiment, data_dir, weights, overrides, start, end, steps, out_dir, as_json) -> None:
    """Learning-rate range test: loss against a geometrically growing rate, and a suggestion.

    \b
    Examples:
      tfcam lr-find --experiment shapes
      tfcam lr-find --experiment folder --data-dir ~/photos --steps 200 --end 0.1
    """
    cfg = _load(experiment, overrides, data_dir, weights)
    if not 0 < start < end:
        raise UserError(f"The rate range must satisfy 0 < --start < --end, got {start} … {end}")
    if steps < 5:
        raise UserError(f"--steps must be at least 5, got {steps}")
    from tfcam.runs import default_run_dir

    quiet_tensorflow()
    from tfcam.train.lr_finder import find_lr

    result = find_lr(cfg, out_dir or default_run_dir(f"lr-find-{cfg.name}"), start=start,
                     end=end, steps=steps)  # fmt: skip
    out, n = result.out_dir, len(result.table)
    if as_json:
        click.echo(json.dumps({"suggestion": result.suggestion, "steps_run": n, "out": str(out)}))
        return
    click.echo(f"Suggested learning rate: {result.suggestion:.3g}  ({n} batches)")
    click.echo(f"Curve: {out / 'lr_finder.png'}  table: {out / 'lr_finder.csv'}")
