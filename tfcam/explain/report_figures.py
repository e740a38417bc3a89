"""The model-dependent figures of a run's report: galleries with Grad-CAM, CAMs per class and per
layer, feature maps, guided backpropagation, receptive-field patches.

They are drawn once into ``RUN/report/figures/`` with a manifest, ``figures.json``, that
:mod:`tfcam.report.html` (which never imports TensorFlow) turns into page sections. Only a handful
of images are explained, chosen from ``predictions_val.csv``, so the cost does not grow with the
size of the validation set.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from tfcam.data.pipeline import read_images
from tfcam.errors import UserError
from tfcam.explain.api import explain
from tfcam.explain.engine import Explainer, explainable_layers, spatial_layers
from tfcam.explain.files import from_run
from tfcam.io import atomic_path
from tfcam.progress import task
from tfcam.report.html import FIGURE_SCALE

log = logging.getLogger("tfcam")

#: Images per gallery (the report stays small whatever the size of the validation set).
GALLERY_SIZE = 12
#: Classes shown in the "CAM for every class" figure (the most probable ones when there are more).
MAX_CLASS_CAMS = 8
#: Stages shown in the per-layer grid.
MAX_STAGES = 5


def _spatial_shapes(model, names: list[str], input_size) -> dict[str, tuple]:
    """``{layer: (h, w)}`` of the outputs, static where known, else from one pass over zeros."""
    shapes = {n: tuple(model.get_layer(n).output.shape[1:3]) for n in names}
    if all(None not in s for s in shapes.values()) or input_size is None:
        return shapes
    import keras

    probe = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names])
    outs = probe(np.zeros((1, *input_size, 3), "float32"), training=False)
    return {n: tuple(int(d) for d in o.shape[1:3]) for n, o in zip(names, outs, strict=True)}


def _transformer_stages(model, input_size=None) -> list[str]:
    """A transformer's explainable token layers from the patch embedding to the default layer:
    every block is a stage (they all share one grid)."""
    from tfcam.explain.engine import model_size
    from tfcam.explain.tokens import token_grid, token_layers, unreachable_patches

    size = model_size(model, input_size)
    grid = token_grid(model, size) if size else None
    tokens = token_layers(model, grid)
    cut = unreachable_patches(model, grid, tokens) if tokens else set()
    return [n for n in tokens if n not in cut and n != "encoder_norm"]


def stage_layers(model, limit: int = MAX_STAGES, input_size=None) -> list[str]:
    """The last layer at each spatial resolution (the output of each stage), at most ``limit``,
    evenly spread over the network's depth, deepest included. A model that takes any size is
    measured at ``input_size``. A transformer's stages are its blocks, evenly spread up to the
    default layer."""
    blocks = _transformer_stages(model, input_size)
    if blocks:
        idx = np.linspace(0, len(blocks) - 1, min(limit, len(blocks))).round().astype(int)
        return [blocks[i] for i in sorted(set(idx))]
    skip = ("InputLayer", "Preprocess", "Rescaling", "Normalization", "ZeroPadding2D", "Cropping2D")
    names = [n for n in spatial_layers(model) if type(model.get_layer(n)).__name__ not in skip]
    names = [n for n in names if type(model.get_layer(n)).__name__ != "FillPadding"]
    shapes = _spatial_shapes(model, names, input_size)
    last_by_size: dict[tuple, str] = {}
    order: list[tuple] = []
    for name in names:
        shape = shapes[name]
        if shape not in last_by_size:
            order.append(shape)
        last_by_size[shape] = name
    stages = [last_by_size[s] for s in order if min(s) > 1]
    if len(stages) > limit:
        idx = np.linspace(0, len(stages) - 1, limit).round().astype(int)
        stages = [stages[i] for i in sorted(set(idx))]
    return stages


def build_report(run_dir: str | os.PathLike) -> Path:
    """A run's whole report: draws the model figures, then writes ``report/index.html``.

    ``tfcam fit`` (and each trial of a sweep) calls it at the end of training, ``tfcam report``
    on its own. A failure in the figures (an odd model) leaves a report without them rather
    than no report.

    Returns:
        The path of the page.
    """
    from tfcam.report.html import write_report
    from tfcam.runs import Run

    Run(run_dir).config()  # a missing or damaged config is the one thing a report cannot skip
    try:
        build_report_figures(run_dir)
    except OSError as e:
        if e.errno in _UNWRITABLE:  # the page could not be written either: say so once
            raise
        _figures_failed(e)
    except Exception as e:  # the page is still worth having
        _figures_failed(e)
    return write_report(run_dir)


#: Errors of a folder that cannot be written (read-only, full, not ours).
_UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


def _figures_failed(e: Exception) -> None:
    log.warning(
        "Report figures failed (%s: %s); writing the report without them",
        type(e).__name__,
        str(e).splitlines()[0][:200] if str(e) else "",
    )


def build_report_figures(
    run_dir: str | os.PathLike,
    *,
    gallery_size: int = GALLERY_SIZE,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Draws the model-dependent figures of a run and writes their manifest.

    Args:
        run_dir: A finished run (with ``model.keras`` and ``predictions_val.csv``).
        gallery_size: Images per gallery.
        progress: Called with the name of each figure as it starts (progress also shows as a
            :func:`tfcam.progress.task` of the report's sections).

    Returns:
        The path of ``figures.json``: ``{"sections": [{"id", "title", "text", "figures":
        [{"file", "caption"}]}]}``, files relative to the report folder.
    """
    import warnings

    with (
        warnings.catch_warnings(),
        task("Drawing report figures", total=len(SECTIONS), unit="section") as bar,
    ):
        # Early layers often have constant CAMs; the figures show them as such.
        warnings.simplefilter("ignore")

        def step(name: str) -> None:
            if bar.detail:  # the section before this one is done
                bar.advance()
            bar.describe(name)
            if progress:
                progress(name)

        path = _build(run_dir, gallery_size, step)
        bar.advance(bar.total - bar.done)  # sections without data count as done
        return path


#: The sections :func:`_build` draws, in order (for the progress count).
SECTIONS = (
    "galleries",
    "class CAMs",
    "per-layer CAMs",
    "feature maps and gradients",
    "receptive field",
)


def _build(run_dir, gallery_size: int, progress) -> Path:
    from tfcam.explain.features import layer_activations
    from tfcam.explain.receptive_field import receptive_fields, top_units
    from tfcam.viz.gallery import class_cams, image_grid, layer_grid
    from tfcam.viz.overlay import feature_grid, gradient_image, overlay, panel, to_uint8
    from tfcam.viz.patches import crop, display_scale, draw_boxes, patch_grid
    from tfcam.viz.plots import to_png

    source = from_run(run_dir)
    run_path = Path(run_dir)
    report_dir = run_path / "report"
    fig_dir = report_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    names = source.class_names
    explainer = Explainer(source.model, class_names=names, input_size=source.image_size)
    cam_layer = explainer.resolve_layers(None)[0]
    sections: list[dict] = []

    def step(name: str) -> None:
        if progress:
            progress(name)

    def save(fig, name: str) -> str:
        with atomic_path(fig_dir / name) as tmp:
            Path(tmp).write_bytes(to_png(fig, dpi=80 * FIGURE_SCALE))
        return f"figures/{name}"

    def load(paths: list[str]) -> np.ndarray:
        return read_images(paths, source.image_size, source.resize)

    def show(img: np.ndarray) -> np.ndarray:
        """Small model inputs are enlarged for viewing (nearest neighbour)."""
        s = display_scale(*img.shape[:2], target=160)
        return np.repeat(np.repeat(to_uint8(img), s, axis=0), s, axis=1) if s > 1 else to_uint8(img)

    preds_path = run_path / "predictions_val.csv"
    preds = pd.read_csv(preds_path) if preds_path.is_file() else pd.DataFrame()
    preds = preds[[os.path.isfile(p) for p in preds["path"]]] if len(preds) else preds

    # Galleries -----------------------------------------------------------------------------
    if len(preds):
        step("galleries")
        wrong = preds[preds["label"] != preds["predicted"]].sort_values(
            "confidence", ascending=False
        )
        right = preds[preds["label"] == preds["predicted"]].sort_values(
            "confidence", ascending=False
        )
        figures = []
        for kind, rows in (("misclassified", wrong.head(gallery_size)), ("correct", right)):
            if kind == "correct":  # a spread over the confidence range, not only the easiest
                idx = (
                    np.linspace(0, len(rows) - 1, min(gallery_size, len(rows))).round().astype(int)
                )
                rows = rows.iloc[sorted(set(idx))]
            if not len(rows):
                continue
            x = load(list(rows["path"]))
            e = explain(explainer, x, "gradcam", layers=cam_layer)
            titles = [
                f"true {r.label}\npred {r.predicted} ({r.confidence:.2f})"
                for r in rows.itertuples()
            ]
            colours = ["crimson" if kind == "misclassified" else "black"] * len(rows)
            files = [Path(p).name for p in rows["path"]]
            grid = dict(title_colours=colours, captions=files, cols=4, cell=2.3, fontsize=9)
            overlays = [show(overlay(x[i], e.heatmap[i])) for i in range(len(x))]
            if kind == "misclassified":
                figures.append(
                    {
                        "file": save(
                            image_grid([show(i) for i in x], titles, **grid),
                            "misclassified.png",
                        ),
                        "caption": f"The {len(rows)} most confidently misclassified validation "
                        f"images (of {len(wrong)} errors in {len(preds)}).",
                    }
                )
            figures.append(
                {
                    "file": save(
                        image_grid(overlays, titles, **grid),
                        f"{kind}_gradcam.png",
                    ),
                    "caption": (
                        f"The same images with Grad-CAM at {cam_layer} for the predicted class: "
                        "what the model looked at when it went wrong."
                        if kind == "misclassified"
                        else f"{len(rows)} correctly classified validation images across the "
                        f"confidence range, with Grad-CAM at {cam_layer}."
                    ),
                }
            )
        if not len(wrong):
            figures.insert(0, {"file": None, "caption": "No validation image is misclassified."})
        sections.append(
            {"id": "galleries", "title": "Misclassified and correct images", "figures": figures}
        )

        # One image, every class ----------------------------------------------------------
        step("class CAMs")
        pick = wrong.head(1) if len(wrong) else right.head(1)
        x = load(list(pick["path"]))
        probs = explain(explainer, x, "gradcam", layers=cam_layer).probabilities[0]
        classes = np.argsort(-probs)[:MAX_CLASS_CAMS]
        classes = np.sort(classes) if len(names) <= MAX_CLASS_CAMS else classes
        maps = explain(
            explainer,
            np.repeat(x, len(classes), axis=0),
            "gradcam",
            layers=cam_layer,
            targets=[int(c) for c in classes],
        ).heatmap
        fig = class_cams(
            show(x[0]),
            [show(overlay(x[0], m)) for m in maps],
            [names[c] for c in classes],
            probs[classes],
            true=str(pick.iloc[0]["label"]),
        )
        sections.append(
            {
                "id": "class-cams",
                "title": "Grad-CAM for every class",
                "text": f"{Path(pick.iloc[0]['path']).name}: where each class finds its evidence"
                + (
                    f" (the {MAX_CLASS_CAMS} most probable classes)"
                    if len(names) > MAX_CLASS_CAMS
                    else ""
                ),
                "figures": [
                    {
                        "file": save(fig, "class_cams.png"),
                        "caption": f"{Path(pick.iloc[0]['path']).name}: Grad-CAM at {cam_layer} "
                        "for each class, titled with its probability (★: the prediction).",
                    }
                ],
            }
        )

        # Stages ----------------------------------------------------------------------------
        step("per-layer CAMs")
        stages = stage_layers(explainer.model, input_size=explainer.input_size)
        sample = preds.iloc[np.linspace(0, len(preds) - 1, min(4, len(preds))).round().astype(int)]
        x = load(list(sample["path"]))
        usable = []
        for n in stages:  # a stage the prediction does not depend on is left out
            try:
                explain(explainer, x[:1], "gradcam", layers=n)
                usable.append(n)
            except UserError:
                pass
        stages = usable or [cam_layer]
        e = explain(explainer, x, "gradcam", layers=stages)
        fig = layer_grid(
            [show(i) for i in x],
            {n: [show(overlay(x[i], e.heatmaps[n][i])) for i in range(len(x))] for n in stages},
            row_titles=[str(r) for r in sample["label"]],
            suptitle="Grad-CAM at each stage (predicted class)",
        )
        sections.append(
            {
                "id": "layers",
                "title": "Grad-CAM at every stage",
                "text": "Early stages respond to edges and texture, late ones to the object.",
                "figures": [
                    {
                        "file": save(fig, "layer_cams.png"),
                        "caption": f"Grad-CAM of the predicted class at the last layer of each "
                        f"stage, for {len(x)} validation images (rows: their true class).",
                    }
                ],
            }
        )

        # Feature maps, guided backpropagation -------------------------------------------------
        step("feature maps and gradients")
        from tfcam.explain.features import feature_maps, select_channels

        early = (
            source.early_layer
            if source.early_layer in explainable_layers(explainer.model, explainer.input_size)
            else stages[0]
        )
        x = load(list(sample["path"][:2]))
        acts = feature_maps(explainer, x[:1], early)[early][0]
        figs = [
            {
                "file": save(
                    feature_grid(
                        acts,
                        select_channels(acts, 16, "most_active"),
                        title=f"{early}: the 16 most active channels",
                    ),
                    "feature_maps.png",
                ),
                "caption": f"Feature maps of {early} for {Path(sample.iloc[0]['path']).name}.",
            }
        ]
        gb = explain(explainer, x, "guided_backprop")
        ggc = explain(explainer, x, "guided_gradcam", layers=cam_layer)
        cam = explain(explainer, x, "gradcam", layers=cam_layer)
        for i in range(len(x)):
            fig = panel(
                [
                    show(x[i]),
                    show(gradient_image(gb.raw["guided_backprop"][i])),
                    show(gradient_image(next(iter(ggc.raw.values()))[i])),
                    show(overlay(x[i], cam.heatmap[i])),
                ],
                ["image", "guided backprop", "guided Grad-CAM", "Grad-CAM"],
                suptitle=f"{Path(sample.iloc[i]['path']).name}: target "
                f"{names[int(cam.targets[i])]}",
                tile_inches=2.2,
            )
            figs.append(
                {
                    "file": save(fig, f"guided_{i}.png"),
                    "caption": f"{Path(sample.iloc[i]['path']).name}: guided backpropagation "
                    "(Springenberg et al. 2015), Guided Grad-CAM and Grad-CAM at "
                    f"{cam_layer} (Selvaraju et al. 2017) for the class "
                    f"{names[int(cam.targets[i])]}.",
                }
            )
        sections.append({"id": "features", "title": "Feature maps and gradients", "figures": figs})

        # Receptive field ----------------------------------------------------------------------
        step("receptive field")
        fields = receptive_fields(explainer.model, input_size=explainer.input_size)
        rf_layer = (
            next(
                (
                    n
                    for n in reversed(stages)
                    if fields.get(n)
                    and fields[n].kind == "local"
                    and max(fields[n].size) < max(source.image_size)
                ),
                None,
            )
            or stages[0]
        )
        field = fields[rf_layer]
        if field.kind == "local":
            img = x[0]
            rf_acts = layer_activations(
                explainer.model, rf_layer, img[None], input_size=explainer.input_size
            )
            units = top_units(rf_acts[0], field, 6)
            scale = display_scale(*img.shape[:2])
            boxes = draw_boxes(img, [u.box for u in units], scale=scale)
            grid = patch_grid(
                [boxes] + [crop(img, u.box) for u in units],
                ["strongest units"] + [f"#{u.channel} {u.value:.2g}" for u in units],
                cols=7,
                suptitle=f"{rf_layer}: field {field.size[0]}×{field.size[1]} px, stride "
                f"{field.stride[0]}",
            )
            sections.append(
                {
                    "id": "receptive-field",
                    "title": "Receptive field",
                    "text": f"The six most active units of {rf_layer} and the input patches they see "
                    f"(size {field.size[0]}, stride {field.stride[0]}, padding {field.padding[0]}).",
                    "figures": [
                        {
                            "file": save(grid, "receptive_field.png"),
                            "caption": f"Left: boxes of the six strongest units of {rf_layer} "
                            f"on {Path(sample.iloc[0]['path']).name}; then the patch each sees.",
                        }
                    ],
                }
            )
    manifest = {"sections": sections, "cam_layer": cam_layer}
    path = report_dir / "figures.json"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return path
