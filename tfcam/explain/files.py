"""Image files in, pictures out: what ``tfcam explain`` and ``tfcam features`` write.

For every image and method :func:`explain_files` writes three PNGs into ``OUT/<image stem>/``:
``<method>[-<layer>]_overlay.png`` (colormap over the photo at its own aspect, the longer side
``overlay_size`` pixels), ``…_heatmap.png`` (the bare map, 8-bit grey at the model's input size)
and ``…_panel.png`` (photo, map and overlay side by side under the file name and the prediction),
drawn by :mod:`tfcam.explain.pictures` while the model goes on; then ``OUT/index.html``, a table
of them all (:mod:`tfcam.report.explain_index`).
:func:`write_feature_maps` writes ``OUT/<image stem>/features-<layer>.png``. The model comes from a
run directory or any ``.keras`` classifier (:class:`ModelSource`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcam.data.display import Window, input_window, read_for_explanation
from tfcam.data.pipeline import read_images
from tfcam.errors import UserError
from tfcam.explain.api import explain
from tfcam.explain.attention import check_applies
from tfcam.explain.engine import Explainer, explainer_for
from tfcam.explain.inputs import list_inputs
from tfcam.explain.methods import TABLE
from tfcam.explain.pictures import OVERLAY_SIZE, ImageJob, Maps, header_lines, method_label
from tfcam.explain.pictures import output_paths as _output_paths
from tfcam.io import atomic_path

log = logging.getLogger("tfcam")


def load_class_names(path: str | os.PathLike | None, n_classes: int) -> list[str]:
    """Class names from a JSON list, or from a Keras ImageNet-style index ``{"0": [id, name]}``."""
    if path is None:
        return [str(i) for i in range(n_classes)]
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"Cannot read class names from '{path}': {e}") from None
    if isinstance(data, dict):
        data = [
            data[str(i)][-1] if isinstance(data[str(i)], list) else data[str(i)]
            for i in range(len(data))
        ]
    if len(data) != n_classes:
        raise UserError(
            f"'{path}' has {len(data)} class names but the model has {n_classes} classes"
        )
    return [str(x) for x in data]


@dataclass
class ModelSource:
    """A model to explain with the facts needed to feed it."""

    model: keras.Model
    class_names: list[str]
    image_size: tuple[int, int]
    resize: str = "stretch"
    default_out: Path = Path("explanations")
    early_layer: str | None = None


def from_run(run_dir: str | os.PathLike) -> ModelSource:
    from tfcam.models.build import load_model
    from tfcam.runs import Run

    run = Run(run_dir).require_model()
    cfg = run.config()
    model = load_model(run.model_path)
    size = (cfg.data.image_size, cfg.data.image_size)
    from tfcam.models.registry import BACKBONES

    bb = BACKBONES.get(cfg.model.backbone)
    return ModelSource(
        model,
        run.class_names(),
        size,
        cfg.data.resize,
        run.path / "explanations",
        bb.early_layer if bb else None,
    )


def from_model_file(path: str | os.PathLike, class_names_file=None) -> ModelSource:
    from tfcam.models.build import load_model

    model = load_model(path)
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise UserError(
            f"Model '{path}' must take fixed-size images [N, H, W, 3]; its input is {tuple(shape)}"
        )
    width = int(model.outputs[0].shape[-1])
    names = load_class_names(class_names_file, 2 if width == 1 else width)
    return ModelSource(model, names, (int(shape[1]), int(shape[2])))


def load_source(
    run_dir: str | os.PathLike | None,
    model_path: str | os.PathLike | None = None,
    class_names_file: str | os.PathLike | None = None,
) -> ModelSource:
    """A run's model (:func:`from_run`), else a model file's (:func:`from_model_file`)."""
    if run_dir is not None:
        return from_run(run_dir)
    return from_model_file(model_path, class_names_file)


def layer_lines(model: keras.Model) -> list[str]:
    """``--list-layers``: every layer with a spatial or token output, the default one marked; a
    transformer's token layers say the patch grid they are seen as."""
    from tfcam.explain.engine import default_layer, explainable_layers, model_size
    from tfcam.explain.tokens import token_grid, token_layers, unreachable_patches

    default = default_layer(model)
    size = model_size(model)
    grid = token_grid(model, size) if size else None
    tokens = token_layers(model, grid)
    cut = unreachable_patches(model, grid, tokens) if grid else set()
    lines = []
    for n in explainable_layers(model):
        note = "  (default)" if n == default else ""
        if n in tokens:
            note += f"  (tokens as a {grid.rows}×{grid.cols} patch grid"
            note += ", class token only: not explainable)" if n in cut else ")"
        lines.append(n + note)
    return lines


#: Longest output folder name, in UTF-8 bytes (file systems allow 255; room is left for "-NN").
MAX_NAME_BYTES = 120
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                     *(f"LPT{i}" for i in range(10))}  # fmt: skip


def safe_name(path: str | os.PathLike, fallback: str = "image") -> str:
    """A folder name made from an input's file name that stays one plain name inside ``--out``
    whatever the input is called: no path separator, no leading or trailing dot or space (so
    never ``.`` or ``..``: ``...jpg`` would otherwise write one level up), no control character,
    bytes that are not UTF-8 replaced, at most :data:`MAX_NAME_BYTES` bytes, never empty.

    Args:
        path: The input file.
        fallback: The name when nothing usable is left (``.jpg``).
    """
    stem = Path(path).stem
    # Bytes that are not UTF-8 come as lone surrogates (PEP 383); show them as U+FFFD, then "_".
    stem = os.fsencode(stem).decode("utf-8", "replace") if stem else stem
    chars = ("_" if (not c.isprintable() or c in '/\\:*?"<>|\ufffd') else c for c in stem)
    name = "".join(chars).strip(". ")
    name = name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", "ignore").rstrip(". ")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = f"_{name}"
    return name or fallback


class _ImageFolders:
    """``OUT/<name>/`` per image, ``name`` from :func:`safe_name`; a name taken before (also
    by case, for case-insensitive file systems) gets ``<name>-2/``, ``<name>-3/`` … so two inputs
    named alike (``a/img.png``, ``b/img.png``, ``..jpg`` and ``.jpg``) never overwrite each
    other's pictures."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.taken: set[str] = {"index.html"}  # the page beside the folders

    def __call__(self, path: Path) -> Path:
        base = safe_name(path)
        name, n = base, 1
        while name.casefold() in self.taken:
            n += 1
            name = f"{base}-{n}"
        self.taken.add(name.casefold())
        folder = self.out_dir / name
        # One plain name under out_dir by construction; checked all the same (a write outside
        # --out must never happen).
        if folder.parent != self.out_dir or name in (".", ".."):
            raise AssertionError(f"output name {name!r} escapes {self.out_dir}")
        return folder


@dataclass
class ExplainedFiles:
    """What :func:`explain_files` wrote.

    Attributes:
        records: One per image: ``image``, ``predicted``, ``probability``, ``target``, ``score``
            and ``outputs`` (``{method[-layer]: {"overlay", "heatmap", "panel": path}}``), plus
            ``galleries`` (``{method: path}``) when several layers were explained.
        out_dir: The folder holding one subfolder per image.
        skipped: Inputs that could not be read, each with the reason.
        index: The page showing them all, ``out_dir/index.html``.
    """

    records: list[dict[str, Any]]
    out_dir: Path
    skipped: list[str] = field(default_factory=list)
    index: Path | None = None

    @property
    def files_written(self) -> int:
        """Overlay sets written (one per image, method and layer)."""
        return sum(len(r["outputs"]) for r in self.records)


def explain_files(
    source: ModelSource,
    inputs: Sequence[str | os.PathLike],
    methods: Sequence[str],
    *,
    out_dir: str | os.PathLike | None = None,
    layers: Sequence[str] | None = None,
    target: str | None = None,
    alpha: float = 0.4,
    score: str = "logit",
    batch_size: int = 16,
    options: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    overlay_size: int = OVERLAY_SIZE,
) -> ExplainedFiles:
    """Explains image files and writes overlays, heatmaps and panels
    (:mod:`tfcam.explain.pictures`), then the page of them all, ``out_dir/index.html``.

    Args:
        source: The model and how to feed it (:func:`from_run` or :func:`from_model_file`).
        inputs: Image files and folders.
        methods: Method names.
        out_dir: Output folder (default: the source's ``explanations/``).
        layers: Layer names for CAM methods (default from the registry); several give one
            output set per layer.
        target: A class name or index for every image (default: each image's predicted class).
        alpha: Heatmap weight in the overlays.
        score: ``logit`` or ``probability``.
        batch_size: Images loaded and explained at a time.
        options: Method options (``max_n``, ``samples``, ``steps``, ``aug_smooth`` …).
        progress: Called with the number of images done after each batch.
        overlay_size: Longer side, in pixels, of the overlays and of each panel tile (the photo
            at its own aspect, small photos enlarged).

    Returns:
        An :class:`ExplainedFiles`: one record per image (predicted class, its probability, the
        explained target and score, the written paths per method) and the output folder.
    """
    from tfcam.explain.pictures import PictureWriter, draw_image

    files = list_inputs(inputs)
    out_dir = Path(out_dir) if out_dir is not None else source.default_out
    # The model's cached explainer: a second call in one process (a notebook, the benchmark)
    # reuses its compiled passes instead of tracing them again (about 2 s for MobileNetV2).
    explainer = explainer_for(
        source.model,
        class_names=tuple(source.class_names),
        score=score,
        batch_size=batch_size,
        input_size=tuple(source.image_size),
    )
    layer_names = explainer.resolve_layers(list(layers) if layers else None)
    for method in methods:  # a method that cannot apply to this model fails before any image
        check_applies(explainer, method)
    if target is not None:
        explainer.resolve_targets(target, 1)  # fail early on an unknown class
    options = dict(options or {})
    folder_of = _ImageFolders(out_dir)
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    # The model explains batch after batch while worker threads draw and write the pictures.
    with PictureWriter() as writer:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            chunk, x, photos = _read_batch(batch, source, overlay_size, skipped)
            if chunk:
                explained = {}
                for method in methods:
                    method_layers = layer_names if TABLE[method].uses_layer else layer_names[:1]
                    explained[method] = explain(explainer, x, method, layers=method_layers,
                                                targets=target, **options)  # fmt: skip
                for i, f in enumerate(chunk):
                    rec, job = _image_job(explainer, f, photos[i], i, explained, folder_of(f))
                    records.append(rec)
                    writer.submit(draw_image, job, alpha=alpha)
            if progress:
                progress(len(batch))
    if skipped:
        log.warning("Skipped %d unreadable input(s): %s", len(skipped), "; ".join(skipped[:20]))
    if not records:
        raise UserError("None of the inputs could be read as an image")
    from tfcam.report.explain_index import write_explain_index

    index = write_explain_index(out_dir, records, skipped)
    return ExplainedFiles(records, out_dir, skipped, index)


def _read_batch(
    batch: Sequence[Path], source: ModelSource, size: int, skipped: list[str]
) -> tuple[list[Path], np.ndarray, list[tuple[np.ndarray, Window]]]:
    """The readable files of a batch, their model inputs and their photos at display size
    (with where the input sits in each); the others added to ``skipped``."""
    chunk, images, photos = [], [], []
    for f in batch:
        try:
            x, photo, hw = read_for_explanation(f, source.image_size, source.resize, size)
        except UserError as e:
            skipped.append(f"{f.name} ({str(e).split(': ', 1)[-1]})")
            continue
        chunk.append(f)
        images.append(x)
        photos.append((photo, input_window(hw, source.image_size, source.resize)))
    return chunk, (np.stack(images) if images else np.zeros((0, 1, 1, 3), np.float32)), photos


def _image_job(
    explainer: Explainer, path: Path, photo: tuple[np.ndarray, Window], i: int, explained: dict,
    folder: Path,
) -> tuple[dict[str, Any], ImageJob]:  # fmt: skip
    """One image's record (prediction, target, score, paths) and what to draw for it.

    Args:
        explainer: The engine (class names).
        path: The image file.
        photo: Its photo at display size and where the model's input sits in it.
        i: Its index in the batch.
        explained: ``{method: Explanation}`` of the batch.
        folder: Its output folder.
    """
    first = next(iter(explained.values()))
    p = first.probabilities[i]
    rec: dict[str, Any] = {
        "image": str(path),
        "outputs": {},
        "predicted": class_label(explainer, int(p.argmax())),
        "probability": float(p.max()),
        "target": class_label(explainer, int(first.targets[i])),
        "score": float(first.scores[i]),
    }
    header = header_lines(path.name, rec["predicted"], rec["probability"], rec["target"])
    maps, galleries = [], {}
    for method, e in explained.items():
        several = len(e.heatmaps) > 1
        for name, heat in e.heatmaps.items():
            key = f"{method}-{name}" if several else method
            raw = e.raw[name][i]
            paths = _output_paths(folder, key)
            label = method_label(method, name)
            maps.append(Maps(key, label, heat[i], raw if raw.ndim == 3 else None, paths))
            rec["outputs"][key] = {k: str(v) for k, v in paths.items()}
        if several:  # one figure per image: the method at every layer
            gallery = folder / f"{method}_layers.png"
            what = f"{method} at every layer"
            galleries[gallery] = (
                header_lines(path.name, rec["predicted"], rec["probability"], rec["target"], what),
                [(n, h[i]) for n, h in e.heatmaps.items()],
            )
            rec.setdefault("galleries", {})[method] = str(gallery)
    return rec, ImageJob(*photo, header, maps, galleries)


def class_label(explainer: Explainer, index: int) -> str:
    """The class name of an index (the index itself when the model has no names)."""
    names = explainer.class_names
    return names[index] if names and 0 <= index < len(names) else str(index)


def write_feature_maps(
    source: ModelSource,
    inputs: Sequence[str | os.PathLike],
    *,
    layers: Sequence[str] | None = None,
    count: int = 16,
    order: str = "first",
    out_dir: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """Feature-map grids: ``OUT/<image stem>/features-<layer>.png`` per image and layer (a stem
    seen before gets ``<stem>-2/``, as in :func:`explain_files`).

    Args:
        source: The model and how to feed it.
        inputs: Image files and folders.
        layers: Layers (default: the backbone's early layer, else the first spatial layer).
        count: Channels per grid.
        order: ``first`` channels or the ``most_active`` (highest mean activation) first.
        out_dir: Output folder (default: the source's ``explanations/``).

    Returns:
        One record per image: ``{"image", "outputs": {layer: path}, "channels": {layer: [...]}}``.
    """
    from tfcam.explain.features import CHANNEL_ORDERS, feature_maps, select_channels
    from tfcam.viz.overlay import feature_grid
    from tfcam.viz.plots import to_png

    if order not in CHANNEL_ORDERS:
        raise UserError(
            f"Unknown channel order '{order}'. Choose from: {', '.join(CHANNEL_ORDERS)}"
        )
    files = list_inputs(inputs)
    out_dir = Path(out_dir) if out_dir is not None else source.default_out
    explainer = Explainer(
        source.model, class_names=source.class_names, input_size=source.image_size
    )
    if not layers:
        from tfcam.explain.engine import explainable_layers

        early = getattr(source, "early_layer", None)
        names = explainable_layers(explainer.model, explainer.input_size)
        layers = [early if early in names else names[min(1, len(names) - 1)]]
    layer_names = explainer.resolve_layers(list(layers))
    records = []
    folder_of = _ImageFolders(out_dir)
    for start in range(0, len(files), 16):
        chunk = files[start : start + 16]
        x = read_images([str(f) for f in chunk], source.image_size, source.resize)
        maps = feature_maps(explainer, x, layer_names)
        for i, f in enumerate(chunk):
            rec: dict[str, Any] = {"image": str(f), "outputs": {}, "channels": {}}
            folder = folder_of(f)
            for name in layer_names:
                a = maps[name][i]
                channels = select_channels(a, count, order)
                fig = feature_grid(a, channels, title=f"{f.name}: {name} ({order} channels)")
                path = folder / f"features-{name}.png"
                with atomic_path(path) as tmp:
                    tmp.write_bytes(to_png(fig, dpi=80))
                rec["outputs"][name] = str(path)
                rec["channels"][name] = [int(c) for c in channels]
            records.append(rec)
    return records
