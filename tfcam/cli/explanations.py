"""Commands that explain a model: explain, features, evaluate-cams."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from tfcam import progress
from tfcam.cli.group import cli
from tfcam.cli.options import (
    count_option,
    json_option,
    layer_option,
    method_option,
    model_option,
    out_option,
    require_run,
    run_and_inputs,
    run_and_inputs_argument,
    run_writer,
    split_option,
)
from tfcam.cli.stderr import quiet_tensorflow
from tfcam.errors import UserError
from tfcam.io import printable

_METHOD_OPTIONS = ("max_n", "samples", "steps", "aug_smooth", "eigen_smooth")


@cli.command()
@run_and_inputs_argument()
@model_option("Explain this model instead of a run's.")
@method_option(("gradcam",), "Method(s), repeatable or comma-separated; see --list-methods.")
@layer_option("Layer(s) for CAM methods (default: the backbone's).", multiple=True)
@click.option(
    "--target", help="Class name or index to explain (default: each image's predicted class)."
)
@out_option("Output folder (default: RUN_DIR/explanations).")
@click.option(
    "--alpha", default=0.4, show_default=True, type=click.FloatRange(0, 1), help="Heatmap weight."
)
@click.option(
    "--score",
    type=click.Choice(["logit", "probability"]),
    default="logit",
    show_default=True,
    help="What the gradients differentiate: the class's logit or its softmax probability.",
)
@count_option("--max-n", help="Score-CAM: channels of highest variance to use.")
@count_option("--samples", default=20, help="SmoothGrad samples.")
@count_option("--steps", default=64, help="Integrated Gradients steps.")
@click.option("--aug-smooth", is_flag=True, help="Average over test-time augmentations.")
@click.option(
    "--eigen-smooth", is_flag=True, help="First principal component instead of the channel sum."
)
@click.option(
    "--class-names", metavar="FILE.json", help="With --model: class names (list or ImageNet index)."
)
@count_option("--batch-size", default=16, help="Images per batch.")
@count_option(
    "--overlay-size",
    default=448,
    minimum=32,
    help="Longer side (px) of overlays and panel tiles, at each image's own aspect.",
)
@click.option(
    "--list-layers", is_flag=True, help="Print the layers that can be explained and exit."
)
@click.option("--list-methods", is_flag=True, help="Print the methods and exit.")
@json_option("Print JSON only (per image: prediction, score, files).")
def explain(paths, model_path, methods, layers, class_names, list_layers, list_methods, as_json,
            **kw) -> None:  # fmt: skip
    """Heatmaps for images: Grad-CAM and its family, gradients, guided backpropagation,
    attention rollout and gradient-weighted attention (transformers).

    \b
    Examples:
      tfcam explain runs/shapes-… photo.jpg folder/ --method gradcam,scorecam
      tfcam explain --model net.keras cat.jpg --method guided_gradcam --layer conv5_block3_out
    """
    from tfcam.explain.inputs import list_inputs
    from tfcam.explain.methods import method_lines, parse_methods

    if list_methods:
        click.echo("\n".join(method_lines()))
        return
    chosen = parse_methods(methods)
    run_dir, inputs = run_and_inputs(paths, model_path)
    if not inputs and not list_layers:
        raise UserError("Give at least one image or folder to explain")
    n_files = len(list_inputs(inputs)) if inputs else 0  # a missing path fails before TF loads
    quiet_tensorflow()
    from tfcam.explain import files

    source = files.load_source(run_dir, model_path, class_names)
    if list_layers:
        click.echo("\n".join(files.layer_lines(source.model)))
        return
    options = {k: kw.pop(k) for k in _METHOD_OPTIONS}
    with (
        run_writer(run_dir, kw["out_dir"]),
        progress.task("Explaining", total=n_files, unit="image") as bar,
    ):
        done = files.explain_files(source, inputs, chosen, layers=layers or None, options=options,
                                   progress=bar.update, **kw)  # fmt: skip
    _echo_explained(done, as_json)


def _echo_explained(done, as_json: bool) -> None:
    """Per image: prediction and target; then where the pictures are (or everything as JSON)."""
    if as_json:
        click.echo(json.dumps(done.records, indent=2))
        return
    for r in done.records:
        click.echo(
            f"{printable(r['image'])}: predicted {r['predicted']} ({r['probability']:.3f}), explained {r['target']}"
        )
    click.echo(
        f"Wrote {done.files_written} overlay(s) with heatmaps and panels under {done.out_dir}"
    )
    if done.index is not None:
        click.echo(f"Page: {done.index}")


@cli.command()
@run_and_inputs_argument()
@model_option()
@layer_option("Layer(s) (default: the backbone's early layer).", multiple=True)
@count_option("--count", default=16, help="Channels per grid.")
@click.option(
    "--order",
    type=click.Choice(["first", "most_active"]),
    default="first",
    show_default=True,
    help="Which channels: the first ones, or the most active on each image.",
)
@out_option("Output folder (default: RUN_DIR/explanations).")
@json_option()
def features(paths, model_path, layers, count, order, out_dir, as_json) -> None:
    """Feature-map grids: the activations of a layer, one small map per channel.

    \b
    Examples:
      tfcam features runs/shapes-… photo.png --layer block1_relu --order most_active
      tfcam features --model vgg19.keras cat.jpg --layer block1_conv2 --count 64
    """
    run_dir, inputs = run_and_inputs(paths, model_path)
    if not inputs:
        raise UserError("Give at least one image or folder")
    from tfcam.explain.inputs import list_inputs

    list_inputs(inputs)
    quiet_tensorflow()
    from tfcam.explain import files

    source = files.load_source(run_dir, model_path)
    with run_writer(run_dir, out_dir):
        records = files.write_feature_maps(
            source, inputs, layers=layers or None, count=count, order=order, out_dir=out_dir
        )
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for r in records:
        for layer, path in r["outputs"].items():
            click.echo(
                f"{printable(r['image'])}: {layer} channels {r['channels'][layer]} -> {path}"
            )


@cli.command("evaluate-cams")
@click.argument("run_dir", metavar="RUN_DIR")
@method_option(
    ("gradcam", "gradcam++", "scorecam", "layercam", "eigencam", "saliency"),
    "Method(s), repeatable or comma-separated (tfcam explain --list-methods); the reference maps "
    "random and center are always added.",
)
@layer_option("Layer for CAM methods (default: the last convolutional map).")
@count_option("--n", "n_images", default=200, help="Images of the split to evaluate.")
@split_option()
@click.option(
    "--boxes",
    "boxes_csv",
    metavar="CSV",
    help="Object boxes (path,x0,y0,x1,y1) for the pointing games; shapes runs have their own.",
)
@count_option("--step", help="Pixels per deletion/insertion step (default: 1/32 of the image).")
@click.option(
    "--blur-sigma",
    type=click.FloatRange(min=0, min_open=True),
    help="Blur (px) of the insertion's starting image (default: 1/12 of the side).",
)
@click.option("--no-road", is_flag=True, help="Skip ROAD (the slowest metric).")
@count_option(
    "--max-n", help="Score-CAM: only this many channels of highest variance (default: all, slow)."
)
@count_option(
    "--sanity-images",
    default=16,
    minimum=0,
    help="Images for the randomisation sanity check (0 skips it).",
)
@out_option("Default: RUN_DIR/evaluate_cams.")
@json_option()
def evaluate_cams_cmd(run_dir, methods, n_images, no_road, as_json, **kw) -> None:
    """Which heatmap to trust: pointing games, deletion/insertion, ROAD, average drop and a
    randomisation sanity check per method, on the run's own images.

    \b
    Examples:
      tfcam evaluate-cams runs/shapes-20261123-101500 -m gradcam,gradcam++,scorecam
      tfcam evaluate-cams RUN --n 100 --no-road --boxes boxes.csv --json
    """
    require_run(run_dir)
    quiet_tensorflow()
    from tfcam.explain.evaluate_cams import evaluate_cams

    t0 = time.perf_counter()
    with run_writer(run_dir, kw["out_dir"]):
        result = evaluate_cams(run_dir, list(methods), n=n_images, road=not no_road, **kw)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(Path(result["files"]["markdown"]).read_text(encoding="utf-8").rstrip())
    click.echo(f"Written to {Path(result['files']['csv']).parent} in {result['seconds']} s")
