"""``tfcam evaluate-cams``: which heatmap to trust on this model, measured on its own data.

Runs every metric of :mod:`tfcam.explain.metrics` for each method on ``n`` images of a split
(the target is each image's true class), next to two reference maps that know nothing about the
model: ``random`` (uniform noise) and ``center`` (a centred Gaussian, the "objects are in the
middle" prior). A method that does not beat them on a metric tells you little on that metric.
Writes ``RUN/evaluate_cams/`` (``metrics.csv``, ``metrics.md``, ``metrics.json``, curve and
sanity figures) and adds a section to the run's report.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tfcam.errors import UserError
from tfcam.explain import metrics as M
from tfcam.io import atomic_path, write_json
from tfcam.progress import task

log = logging.getLogger("tfcam")

REFERENCES = ("random", "center")
DEFAULT_METHODS = ("gradcam", "gradcam++", "scorecam", "layercam", "eigencam", "saliency")
OUT_DIR = "evaluate_cams"
#: Columns of the table, with the direction that is better.
COLUMNS = {
    "pointing_game": "higher",
    "energy_pointing": "higher",
    "deletion_auc": "lower",
    "insertion_auc": "higher",
    "road_morf": "lower",
    "road_lerf": "higher",
    "road_gap": "higher",
    "average_drop_pct": "lower",
    "increase_confidence_pct": "higher",
    "sanity_mean_spearman": "lower",
    "sanity_last_spearman": "lower",
    "seconds": "lower",
}


def reference_maps(kind: str, n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``random``: uniform noise; ``center``: a Gaussian centred on the image (sigma 1/4 side)."""
    if kind == "random":
        return np.random.default_rng(seed).random((n, h, w)).astype(np.float32)
    if kind == "center":
        y = (np.arange(h) + 0.5 - h / 2) / (h / 4)
        x = (np.arange(w) + 0.5 - w / 2) / (w / 4)
        g = np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)
        return np.repeat(g[None], n, axis=0)
    raise UserError(f"Unknown reference map '{kind}'. Choose from: {', '.join(REFERENCES)}")


def _pick(files: list[str], labels: list[int], n: int) -> tuple[list[str], list[int]]:
    """``n`` images spread evenly over the split (the same ones every time)."""
    if n >= len(files):
        return list(files), list(labels)
    idx = np.linspace(0, len(files) - 1, n).round().astype(int)
    return [files[i] for i in idx], [labels[i] for i in idx]


def _boxes(run, cfg, files: list[str], boxes_csv, image_size, resize) -> np.ndarray | None:
    """Boxes in model-input pixels, ``[N, 4]``; None when the data has none."""
    from tfcam.data.pipeline import stored_size

    table = None
    if boxes_csv is not None:
        table = M.read_boxes_csv(boxes_csv)
    elif cfg.data.source == "shapes":
        from tfcam.io import read_json

        root = Path(read_json(run.data_report_path).get("root", ""))
        if (root / "boxes.csv").is_file():
            table = M.read_boxes_csv(root / "boxes.csv")
    if table is None:
        return None
    missing = [f for f in files if str(Path(f).resolve()) not in table]
    if missing:
        raise UserError(
            f"No box for {len(missing)} of {len(files)} images (e.g. '{missing[0]}'); the boxes "
            "CSV needs a row per image (path, x0, y0, x1, y1)"
        )
    return np.array(
        [
            M.box_to_input(table[str(Path(f).resolve())], stored_size(f), image_size, resize)
            for f in files
        ]
    )


def evaluate_cams(
    run_dir: str | os.PathLike,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    layer: str | None = None,
    n: int = 200,
    split: str = "val",
    boxes_csv: str | os.PathLike | None = None,
    step: int | None = None,
    blur_sigma: float | None = None,
    road: bool = True,
    sanity_images: int = 16,
    sanity_steps: int = 6,
    out_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    max_n: int | None = None,
) -> dict:
    """Measures each method (and the two reference maps) on ``n`` images of ``split``.

    Args:
        run_dir: A finished run.
        methods: Explanation methods (``tfcam explain --list-methods``); the default set gains
            the attention methods on a transformer.
        layer: Layer for CAM methods (default: the model's last convolutional map).
        n: Images, spread evenly over the split.
        split: ``val`` or ``test`` (or ``train``).
        boxes_csv: Boxes for the pointing games (``shapes`` runs have their own).
        step: Pixels per deletion/insertion step (default: 1/32 of the image).
        blur_sigma: Blur of the insertion's start in pixels (default: 1/12 of the side).
        road: Run ROAD (the slowest metric: a sparse solve per image and level).
        sanity_images: Images for the randomisation check (0 to skip it).
        sanity_steps: Points of the cascade (output layer first, then deeper).
        out_dir: Where to write (default ``RUN/evaluate_cams``).
        batch_size: Images per explanation call.
        max_n: Score-CAM: only the ``max_n`` channels of highest variance (default: all, as in
            the paper; 1,280 masked passes per image on MobileNetV2).

    Progress shows per method and image (:func:`tfcam.progress.task`): one task per method whose
    steps are its images through each metric (maps, deletion, insertion and ROAD's two orders),
    then one for the sanity check.

    Returns:
        ``{"table": [rows], "columns": {...}, "sanity": {...}, "n": n, "files": {...}, ...}``.

    Raises:
        UserError: Unknown method, layer or split; a split without images.
    """
    from tfcam.data.pipeline import read_images
    from tfcam.data.sources import read_splits_csv
    from tfcam.explain.engine import Explainer
    from tfcam.explain.files import from_run
    from tfcam.explain.methods import parse_methods
    from tfcam.runs import Run

    wanted = [x.strip() for v in methods for x in str(v).split(",") if x.strip()]
    methods = [
        m if m in REFERENCES else parse_methods([m])[0] for m in wanted
    ]  # parse_methods names the valid choices for an unknown one
    if not methods:
        raise UserError("Give at least one method, e.g. --methods gradcam,scorecam")
    run = Run(run_dir).require_model()
    cfg = run.config()
    source = from_run(run_dir)
    splits = read_splits_csv(run.splits_path, source.class_names)
    if not splits.files.get(split):
        have = ", ".join(s for s in splits.files if splits.files[s])
        raise UserError(f"Run '{run.path}' has no '{split}' split. Splits it has: {have}")
    files, labels = _pick(splits.files[split], splits.labels[split], n)
    h, w = source.image_size
    images = read_images(files, source.image_size, source.resize)
    targets = np.asarray(labels, int)
    boxes = _boxes(run, cfg, files, boxes_csv, source.image_size, source.resize)

    explainer = Explainer(
        source.model, class_names=source.class_names, input_size=source.image_size
    )
    layers = explainer.resolve_layers([layer] if layer else None)
    from tfcam.explain.attention import attention_blocks, check_applies
    from tfcam.explain.methods import ATTENTION_METHODS

    if tuple(methods) == DEFAULT_METHODS and attention_blocks(source.model):
        methods = [*methods, *ATTENTION_METHODS]  # a transformer's own methods, by default
    for method in methods:  # an attention method on a CNN fails here, before any map
        if method not in REFERENCES:
            check_applies(explainer, method)
    score = M.model_score_fn(source.model, batch_size=64)
    base_probs = score(images)
    out = Path(out_dir) if out_dir is not None else run.path / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)

    def maps_for(method, exp, imgs, tgts, advance) -> np.ndarray:
        if method in REFERENCES:
            advance(len(imgs))
            return reference_maps(method, len(imgs), h, w)
        return _heatmaps(exp, imgs, tgts, method, layers, batch_size, max_n, advance)

    blurred = M.blur(images, blur_sigma)
    rows, curves, all_maps = [], {}, {}
    names = [*methods, *[r for r in REFERENCES if r not in methods]]
    import warnings

    stages = 5 if road else 3  # maps, deletion, insertion (+ ROAD's two orders)
    for k, method in enumerate(names, start=1):
        label = f"Evaluating {method} [{k}/{len(names)}]"
        with task(label, total=stages * len(images), unit="step") as bar:
            bar.describe("maps")
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                maps = maps_for(method, explainer, images, targets, bar.advance)
            t_maps = time.perf_counter() - t0
            all_maps[method] = maps
            row = {"method": method, "images": len(images)}
            if boxes is not None:
                row["pointing_game"] = float(M.pointing_game(maps, boxes).mean())
                row["energy_pointing"] = float(M.energy_pointing_game(maps, boxes).mean())
            bar.describe("deletion and insertion")
            dele = M.deletion_insertion(
                score, images, maps, targets, mode="deletion", step=step, progress=bar.advance
            )
            ins = M.deletion_insertion(
                score, images, maps, targets, mode="insertion", step=step, baseline=blurred,
                progress=bar.advance,
            )  # fmt: skip
            curves[method] = (dele, ins)
            row["deletion_auc"] = float(dele.auc.mean())
            row["insertion_auc"] = float(ins.auc.mean())
            if road:
                bar.describe("ROAD")
                morf = M.road(score, images, maps, targets, order="morf", progress=bar.advance)
                lerf = M.road(score, images, maps, targets, order="lerf", progress=bar.advance)
                row["road_morf"] = float(morf.mean())
                row["road_lerf"] = float(lerf.mean())
                row["road_gap"] = row["road_lerf"] - row["road_morf"]
            drop, inc = M.drop_and_increase(score, images, maps, targets, base=base_probs)
        row["average_drop_pct"] = float(100 * drop.mean())
        row["increase_confidence_pct"] = float(100 * inc.mean())
        row["seconds"] = round(t_maps, 2)
        rows.append(row)

    sanity = None
    if sanity_images > 0:
        sanity = _sanity(
            run, source, images[:sanity_images], targets[:sanity_images],
            [m for m in methods if m not in REFERENCES], all_maps, layers, sanity_steps,
            batch_size, max_n,
        )  # fmt: skip
        for row in rows:
            series = sanity["spearman"].get(row["method"])
            if series:
                row["sanity_mean_spearman"] = float(np.mean(series))
                row["sanity_last_spearman"] = float(series[-1])
        sanity["note"] = sanity_sentence(sanity["spearman"])

    table = pd.DataFrame(rows).set_index("method")
    table = table[[c for c in COLUMNS if c in table.columns] + ["images"]]
    with atomic_path(out / "metrics.csv") as tmp:
        table.to_csv(tmp, float_format="%.4f")
    md = _markdown(table, len(images), split, boxes is not None)
    if sanity is not None:
        md += "\n" + sanity["note"] + "\n"
    with atomic_path(out / "metrics.md") as tmp:
        Path(tmp).write_text(md, encoding="utf-8")
    from tfcam.viz.plots import deletion_insertion_plot, sanity_plot

    figures = {
        "curves": _save(deletion_insertion_plot(curves, REFERENCES), out / "deletion_insertion.png")
    }
    if sanity is not None:
        figures["sanity"] = _save(
            sanity_plot(sanity["counts"], sanity["down_to"], sanity["spearman"]), out / "sanity.png"
        )
        with atomic_path(out / "sanity.csv") as tmp:
            pd.DataFrame(
                {
                    "randomised_layers": sanity["counts"],
                    "down_to": sanity["down_to"],
                    **sanity["spearman"],
                }
            ).to_csv(tmp, index=False, float_format="%.4f")
    result = {
        "run": str(run.path),
        "split": split,
        "n": len(images),
        "layer": layers[0],
        "methods": list(methods),
        "references": list(REFERENCES),
        "columns": {c: d for c, d in COLUMNS.items() if c in table.columns},
        "table": [{"method": m, **{k: _num(v) for k, v in r.items()}} for m, r in table.iterrows()],
        "sanity": sanity,
        "accuracy_on_these_images": float((base_probs.argmax(1) == targets).mean()),
        "files": {
            "csv": str(out / "metrics.csv"),
            "markdown": str(out / "metrics.md"),
            **{k: str(v) for k, v in figures.items()},
        },
    }
    write_json(out / "metrics.json", result)
    if out.resolve() == (run.path / OUT_DIR).resolve():
        from tfcam.report.html import write_report

        write_report(run.path)
    return result


#: Mean Spearman correlation over the randomisation cascade above which a method is flagged.
SANITY_FLAG = 0.5


def sanity_sentence(spearman: dict[str, list[float]]) -> str:
    """One sentence for the user on what the randomisation check found."""
    flagged = {m: float(np.mean(v)) for m, v in spearman.items() if v and np.mean(v) >= SANITY_FLAG}
    if not flagged:
        return (
            "Sanity check: every method's maps lose their likeness to the trained model's maps as "
            "its layers are randomised, as maps that explain what the model learned should "
            "(Adebayo et al. 2018)."
        )
    names = ", ".join(f"{m} (mean Spearman {v:.2f})" for m, v in flagged.items())
    return (
        f"Sanity check: {names} stay{'s' if len(flagged) == 1 else ''} close to the trained "
        "model's maps while its layers are replaced by random ones, the failure Adebayo et al. "
        "(2018) found for guided backpropagation: such maps follow the image (its edges, its "
        "strongest activations) more than what the model learned, so do not read them as the "
        "model's reasons."
    )


def _num(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else v


def _heatmaps(exp, images, targets, method, layers, batch_size, max_n, advance=None) -> np.ndarray:
    """One method's heatmaps ``[N, H, W]``, explained ``batch_size`` images at a time
    (``advance``, if given, is called with the number of images of each batch done)."""
    from tfcam.explain.api import explain

    parts = []
    for i in range(0, len(images), batch_size):
        e = explain(
            exp,
            images[i : i + batch_size],
            method,
            layers=list(layers),
            targets=targets[i : i + batch_size],
            max_n=max_n,
        )
        parts.append(np.asarray(e.heatmap, np.float32))
        if advance:
            advance(len(parts[-1]))
    return np.concatenate(parts)


def _sanity(run, source, images, targets, methods, all_maps, layers, steps, batch_size, max_n=None):
    """Cascading randomisation: maps of a copy whose top layers are randomised, step by step,
    compared with the trained model's maps by Spearman rank correlation (mean over images)."""
    import warnings

    from tfcam.explain.engine import Explainer
    from tfcam.models.build import load_model

    copy = load_model(run.model_path)
    names = M.weighted_layers(copy)
    points = M.cascade_points(names, steps)
    out = {"counts": points, "down_to": [names[p - 1] for p in points], "spearman": {}}
    done = 0
    series = {m: [] for m in methods}
    total = len(points) * len(methods) * len(images)
    with task("Sanity check", total=total, unit="image") as bar:
        for p in points:
            M.randomize_layers(copy, names[done:p], seed=p)
            done = p
            bar.describe(f"top {p} weighted layers randomised, down to {names[p - 1]}")
            exp = Explainer(copy, class_names=source.class_names, input_size=source.image_size)
            for m in methods:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    rnd = _heatmaps(exp, images, targets, m, layers, batch_size, max_n, bar.advance)
                trained = all_maps[m][: len(images)]
                series[m].append(
                    float(np.mean([M.spearman(a, b) for a, b in zip(trained, rnd, strict=True)]))
                )
    out["spearman"] = series
    return out


def _markdown(table: pd.DataFrame, n: int, split: str, boxes: bool) -> str:
    lines = [
        f"Heatmap metrics on {n} {split} images (target: the true class). "
        "Arrows: ↑ higher is better, ↓ lower is better; `random` and `center` are reference maps.",
        "",
    ]
    cols = [c for c in table.columns if c != "images"]
    head = ["method"] + [f"{c} {'↑' if COLUMNS[c] == 'higher' else '↓'}" for c in cols]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for method, row in table.iterrows():
        cells = [str(method)] + [
            ""
            if pd.isna(row[c])
            else (f"{row[c]:.1f}" if c.endswith("pct") or c == "seconds" else f"{row[c]:.3f}")
            for c in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not boxes:
        lines += ["", "No boxes for this data: pointing games left out (give --boxes CSV)."]
    return "\n".join(lines) + "\n"


def _save(fig, path: Path) -> Path:
    from tfcam.viz.plots import to_png

    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(to_png(fig, dpi=90))
    return path
