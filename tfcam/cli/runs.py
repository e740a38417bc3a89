"""Commands that read a finished run: evaluate, predict, report, compare."""

from __future__ import annotations

import json
import logging

import click

from tfcam.cli.group import cli
from tfcam.cli.options import (
    count_option,
    echo_table,
    json_option,
    out_option,
    require_run,
    run_writer,
    split_option,
)
from tfcam.cli.stderr import quiet_tensorflow
from tfcam.io import printable

log = logging.getLogger("tfcam")


@cli.command()
@click.argument("run_dir", metavar="RUN_DIR")
@split_option()
@json_option()
def evaluate(run_dir, split, as_json) -> None:
    """Accuracy, loss and per-class precision/recall/F1 of a run; updates metrics.json."""
    require_run(run_dir)
    quiet_tensorflow()
    from tfcam.train.evaluate import evaluate_run

    with run_writer(run_dir):  # updates metrics.json and predictions_<split>.csv
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
@click.argument("images", nargs=-1, required=True, metavar="IMAGE|FOLDER...")
@count_option("-k", "--top-k", default=3, help="How many classes to list per image.")
@json_option("Print JSON only: one entry per image (path, class, confidence, top k).")
def predict(run_dir, images, top_k, as_json) -> None:
    """Predict the class of each image with a run's model; a folder means every image in it.

    Folders are searched as tfcam explain searches them: recursively, in sorted order, files
    with an image suffix (.jpg, .jpeg, .png, .bmp, .gif, .webp), hidden files left out.

    \b
    Examples:
      tfcam predict runs/shapes-… photo.jpg
      tfcam predict runs/shapes-… photos/ --json
    """
    from tfcam.explain.inputs import list_inputs

    require_run(run_dir)
    files = list_inputs(images)  # a missing path or an empty folder fails before TF loads
    quiet_tensorflow()
    from tfcam.train.evaluate import predict_images

    results = predict_images(run_dir, [str(f) for f in files], top_k=top_k)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for r in results:
        tops = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top_k"])
        click.echo(f"{printable(r['image'])}: {r['predicted']} ({r['confidence']:.3f})   [{tops}]")


@cli.command()
@click.argument("run_dir", metavar="RUN_DIR")
def report(run_dir) -> None:
    """(Re)write a run's HTML report, RUN_DIR/report/index.html."""
    require_run(run_dir, model=False)
    quiet_tensorflow()
    from tfcam.explain.report_figures import build_report

    with run_writer(run_dir):
        path = build_report(run_dir)
    click.echo(f"Report: {path}")


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="RUN_DIR... | SWEEP_DIR")
@click.option(
    "--sort",
    type=click.Choice(["val_accuracy", "val_loss", "test_accuracy", "test_loss", "seconds"]),
    default="val_accuracy",
    show_default=True,
    help="Order the runs by this (accuracies highest first, losses and time lowest first).",
)
@out_option("Default: SWEEP_DIR/compare, or runs/compare-<time>.")
@json_option()
def compare(paths, sort, out_dir, as_json) -> None:
    """Runs side by side: the config fields that differ, accuracy, loss, best epoch, time;
    overlaid learning curves and an HTML page linking each run's report.

    \b
    Examples:
      tfcam compare runs/shapes-20261123-101500 runs/shapes-20261123-111500
      tfcam compare runs/shapes-sweep-20261123-120000 --sort val_loss
    """
    from tfcam.report.compare import default_compare_dir, write_compare

    result = write_compare(list(paths), out_dir or default_compare_dir(paths), sort)
    for w in result["warnings"]:
        log.warning("%s", w)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    echo_table(result["files"]["csv"])
    click.echo(f"Page: {result['files']['html']}")
