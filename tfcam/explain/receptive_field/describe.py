"""Describing receptive fields: one layer in full, or every layer as a table.

What ``tfcam receptive-field`` reports, as data: JSON records, lines of text and the table; the
command line only prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras

from tfcam.explain.receptive_field.analytic import (
    Field,
    field_line,
    fields_table,
    layer_choice_error,
)
from tfcam.explain.receptive_field.effective import effective_field_figure
from tfcam.explain.receptive_field.patches import write_patches
from tfcam.explain.receptive_field.verification import verify as verify_field
from tfcam.explain.receptive_field.verification import verify_layers

if TYPE_CHECKING:
    import pandas as pd


def _write_png(path, data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically (a reader never sees half a file)."""
    from tfcam.io import atomic_path

    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(data)


def load_model_for_fields(
    *,
    run_dir=None,
    backbone: str | None = None,
    model_path=None,
    input_size: int | None = None,
    weights: str | None = None,
) -> tuple[keras.Model, int | None, str]:
    """The model ``tfcam receptive-field`` describes: a run's, a registry backbone built at
    ``input_size`` (random weights unless ``weights``), or a model file's.

    Returns:
        ``(model, input_size, resize)``: the size to analyse at (None when the model fixes it)
        and how images are brought to it (the run's ``data.resize``, else ``stretch``).
    """
    from tfcam.models.build import build_classifier, load_model

    if backbone:
        from tfcam.models.registry import get_backbone

        size = input_size or get_backbone(backbone).default_size
        model = build_classifier(backbone=backbone, num_classes=2, image_size=size, weights=weights)
        return model, None, "stretch"
    if run_dir:
        from tfcam.runs import Run

        run = Run(run_dir).require_model()
        return load_model(run.model_path), input_size, run.config().data.resize
    return load_model(model_path), input_size, "stretch"


def table_text(table: pd.DataFrame) -> str:
    """The fields table as aligned text, names left-aligned, every row shown."""
    import pandas as pd

    with pd.option_context(
        "display.max_rows", None, "display.width", 200, "display.max_colwidth", 70
    ):
        left = {
            c: f"{{:<{table[c].astype(str).str.len().max()}}}".format
            for c in ("layer", "type", "note")
        }
        return table.to_string(index=False, formatters=left, justify="left").rstrip()


def describe_layer(
    model: keras.Model,
    layer: str,
    *,
    fields: dict[str, Field],
    verify: bool = False,
    plot_path=None,
    images: Sequence[str] = (),
    erf_images: int = 8,
    out_dir,
    top_k: int = 9,
    channel: int | None = None,
    resize: str = "stretch",
) -> tuple[dict, list[str], bool]:
    """One layer's field, and what was asked about it.

    Args:
        model: The model.
        layer: The layer's name.
        fields: The model's fields (:func:`receptive_fields`).
        verify: Check the analytic box against the input gradient's support (:func:`verify`).
        plot_path: Write the effective receptive field's plot (PNG) here.
        images: Image files or folders: draw the strongest units' patches (:func:`write_patches`);
            with ``plot_path``, also the images the effective field is averaged over.
        erf_images: Noise images for the effective field when no ``images`` are given.
        out_dir: Folder for the patch images.
        top_k: Patches to draw.
        channel: Rank units by this channel.
        resize: How images are brought to the input size (``stretch`` or ``letterbox``).

    Returns:
        ``(record, lines, failed)``: the JSON record (the field, plus ``verify``, ``effective``,
        ``patches`` and ``files`` when asked), lines of text for people, and whether the
        empirical check disagrees with the analytic field.

    Raises:
        UserError: An unknown layer (the message lists the nearest names), or a plot or patches
            asked of a layer without a box per unit.
    """
    if layer not in fields:
        raise layer_choice_error(layer, list(fields))
    field = fields[layer]
    record = field.as_dict()
    lines = [field_line(field)]
    failed = False
    if verify:
        v = verify_field(model, layer, fields=fields)
        record["verify"] = v.as_dict()
        failed = not v.ok
        lines.append(
            f"empirical check, unit {v.unit}: gradient support {v.support} vs analytic box "
            f"{v.analytic} (top, left, bottom, right): {'agree' if v.ok else 'DISAGREE'}"
        )
    if plot_path:
        from tfcam.viz.plots import to_png

        field.require_local()
        pics = None
        if images:
            from tfcam.data.pipeline import read_images
            from tfcam.explain.inputs import list_inputs

            pics = read_images([str(f) for f in list_inputs(images)], field.input_shape, resize)
        erf, fig = effective_field_figure(model, layer, field, pics, n_random=erf_images)
        _write_png(plot_path, to_png(fig))
        record["effective"] = erf.as_dict()
        lines.append(
            f"effective receptive field (Luo et al. 2016): 95% of the gradient within "
            f"{2 * erf.radius95 + 1:.0f}×{2 * erf.radius95 + 1:.0f} px of the centre, theoretical "
            f"{field.size[0]}×{field.size[1]}; plot: {plot_path}"
        )
    if images:
        rec = write_patches(
            model, field, images, Path(out_dir), k=top_k, channel=channel, resize=resize
        )
        record["patches"] = rec["patches"]
        record["files"] = rec["files"]
        lines.append("wrote " + ", ".join(rec["files"]))
    return record, lines, failed


def describe_table(
    model: keras.Model,
    fields: dict[str, Field],
    *,
    verify: bool = False,
    plot_path=None,
) -> tuple[list[dict], pd.DataFrame, list[str]]:
    """Every layer's field.

    Args:
        model: The model.
        fields: Its fields (:func:`receptive_fields`).
        verify: Check a sample of the local layers (:func:`verify_layers`): the table gets a
            ``verify`` column (``ok``, ``FAILED`` or empty) and the JSON rows a ``verify`` boolean.
        plot_path: Write the field-growth plot (PNG) here.

    Returns:
        ``(rows, table, failed)``: one JSON dict per layer, the table (:func:`fields_table`), and
        the layers whose empirical check disagrees with the analytic field.
    """
    table = fields_table(fields)
    failed: list[str] = []
    if verify:
        checked = {}
        for name, v in verify_layers(model, fields).items():
            checked[name] = "ok" if v.ok else "FAILED"
            if not v.ok:
                failed.append(name)
        table["verify"] = [checked.get(n, "") for n in table["layer"]]
    if plot_path:
        from tfcam.viz.plots import field_growth_plot, to_png

        _write_png(plot_path, to_png(field_growth_plot(table, model.name)))
    rows = [f.as_dict() for f in fields.values()]
    if verify:
        for row, mark in zip(rows, table["verify"], strict=True):
            if mark:
                row["verify"] = mark == "ok"
    return rows, table, failed
