"""``tfcam receptive-field``: the receptive fields of a run's model, a backbone or a model file."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tfcam.cli.group import cli, fail
from tfcam.cli.options import count_option, json_option, layer_option, model_option, out_option
from tfcam.cli.stderr import quiet_tensorflow
from tfcam.errors import UserError


@cli.command("receptive-field")
@click.argument("run_dir", required=False, metavar="[RUN_DIR]")
@click.option(
    "--backbone",
    help="A registry backbone (built with random weights; `tfcam backbones` lists them).",
)
@count_option(
    "--input-size", help="Input side in pixels (--backbone, or a model without a fixed size)."
)
@model_option("Any Keras 3 model file.")
@click.option(
    "--weights",
    help="With --backbone: imagenet, none (default) or a no-top weights file (matters for --plot and --image).",
)
@layer_option("One layer (default: a table of every layer).")
@json_option()
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
@count_option("--top", "top_k", default=9, help="Patches to draw.")
@count_option(
    "--channel",
    minimum=0,
    help="Rank units by this channel (default: each unit's strongest; for a folder, the most active channel).",
)
@out_option("Folder for patch images (default: RUN_DIR/receptive_field or ./receptive_field).")
@click.option(
    "--verify",
    is_flag=True,
    help="Check the analytic box against the input gradient's support (exit 1 if they disagree).",
)
@count_option(
    "--erf-images", default=8, help="--plot: noise images to average (or the --image files)."
)
def receptive_field_cmd(run_dir, backbone, input_size, model_path, weights, layer, as_json,
                        plot_path, verify, out_dir, **kw) -> None:  # fmt: skip
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
    default_out = _check(run_dir, backbone, input_size, model_path, weights, layer, kw["images"])
    quiet_tensorflow()
    from tfcam.explain import receptive_field as rf

    model, size, resize = rf.load_model_for_fields(run_dir=run_dir, backbone=backbone,
        model_path=model_path, input_size=input_size, weights=weights)  # fmt: skip
    fields = rf.receptive_fields(model, size)
    if layer is None:
        rows, table, failed = rf.describe_table(model, fields, verify=verify, plot_path=plot_path)
        click.echo(json.dumps(rows) if as_json else rf.table_text(table))
        if failed:
            fail(
                f"the analytic field disagrees with the gradient's support at: {', '.join(failed)}",
                1,
            )
        return
    record, lines, failed = rf.describe_layer(model, layer, fields=fields, verify=verify,
        plot_path=plot_path, out_dir=Path(out_dir) if out_dir else default_out, resize=resize,
        **kw)  # fmt: skip
    click.echo(json.dumps(record) if as_json else "\n".join(lines))
    if failed:
        fail(f"the analytic field of '{layer}' disagrees with the gradient's support", 1)


def _check(run_dir, backbone, input_size, model_path, weights, layer, images) -> Path:
    """Checks the command line before TensorFlow loads; returns the default patch folder."""
    given = [n for n, v in (("RUN_DIR", run_dir), ("--backbone", backbone), ("--model", model_path)) if v]  # fmt: skip
    if len(given) != 1:
        raise UserError(
            "Give exactly one of RUN_DIR, --backbone NAME or --model PATH.keras"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if weights and not backbone:
        raise UserError("--weights goes with --backbone (a run or model file has its own weights)")
    if images and layer is None:
        raise UserError("--image needs --layer (run without it to see the layers)")
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

        default_out = Run(run_dir).require_model().path / "receptive_field"
    elif not Path(model_path).is_file():
        raise UserError(f"Model file not found: '{model_path}'")
    if images:
        from tfcam.explain.inputs import list_inputs

        list_inputs(images)  # a missing path fails before TensorFlow loads
    return default_out
