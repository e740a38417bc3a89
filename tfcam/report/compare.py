"""``tfcam compare``: runs side by side, only what differs between them.

The table holds the config fields whose values differ between the runs (dotted names, as
``--set`` takes them), then validation and test accuracy and loss, the best epoch and the wall
time, sorted by the chosen metric. ``compare.csv`` and ``compare.json`` hold one row per run (for
machines); the page and the terminal show it transposed (:func:`transposed`): the metrics first,
then the config fields, one column per run, so what matters is read first whatever the number of
differing fields. Runs trained on different class sets are flagged: their
accuracies measure different tasks, so the table gets a ``classes`` column and a warning, and
rows are grouped by class set before sorting.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tfcam.errors import UserError
from tfcam.io import atomic_path, read_json, write_json, write_text
from tfcam.report.safe import esc
from tfcam.report.safe import table as table_html
from tfcam.runs import Run, default_run_dir, read_history

METRICS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "best_epoch", "seconds")
SORT_KEYS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "seconds")
#: Config fields never compared (they name the run, not how it trained).
IGNORED = ("name", "description")


def runs_of(paths: list[str | os.PathLike]) -> list[Path]:
    """Run directories from the arguments: run directories, or one sweep folder (its trials).

    Raises:
        UserError: A path that is neither, or a sweep without runs.
    """
    if not paths:
        raise UserError("Give run directories or a sweep folder to compare")
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / "sweep.json").is_file():
            sweep = read_json(p / "sweep.json")
            trials = [p / t["run_dir"] for t in sweep.get("trials", [])]
            found = [t for t in trials if (t / "config.yaml").is_file()]
            if not found:
                raise UserError(f"Sweep '{p}' has no runs yet")
            out.extend(found)
        elif (p / "config.yaml").is_file():
            out.append(p)
        else:
            raise UserError(
                f"'{p}' is neither a run directory (config.yaml) nor a sweep folder (sweep.json)"
            )
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k not in ("augment", "options", "class_labels"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v if not isinstance(v, (list, dict)) else repr(v)
    return out


def _row(path: Path) -> tuple[dict, dict, list[str]]:
    """(flattened config, metrics, class names) of one run."""
    run = Run(path)
    cfg = run.raw_config()
    flat = {k: v for k, v in _flatten(cfg).items() if k not in IGNORED}
    metrics: dict = {}
    m = run.metrics() if run.metrics_path.is_file() else {}
    for split in ("val", "test"):
        if split in m:
            metrics[f"{split}_accuracy"] = m[split].get("accuracy")
            metrics[f"{split}_loss"] = m[split].get("loss")
    best = path / "checkpoints" / "best.json"
    if best.is_file():
        metrics["best_epoch"] = read_json(best).get("epoch")
    state = run.state() if run.state_path.is_file() else {}
    if state.get("seconds") is not None:
        metrics["seconds"] = state["seconds"]
    metrics["status"] = state.get("status", "unknown")
    names = run.class_names() if run.class_names_path.is_file() else []
    return flat, metrics, names


def compare_table(
    paths: list[str | os.PathLike], sort: str = "val_accuracy"
) -> tuple[pd.DataFrame, list[str]]:
    """The comparison table (index: run name) and warnings; ``table.attrs["runs"]`` maps each
    row's name to its run directory.

    Raises:
        UserError: Unknown sort key, or bad paths.
    """
    if sort not in SORT_KEYS:
        from tfcam.errors import choices_message

        raise UserError(choices_message("sort key", sort, SORT_KEYS))
    runs = runs_of(paths)
    rows = [_row(p) for p in runs]
    names = _unique_names(runs)
    configs = pd.DataFrame([r[0] for r in rows], index=names)
    differing = [c for c in configs.columns if configs[c].astype(str).nunique(dropna=False) > 1]
    table = configs[differing].copy()
    metrics = pd.DataFrame([r[1] for r in rows], index=names)
    for c in METRICS:
        if c in metrics and metrics[c].notna().any():
            table[c] = metrics[c]
    warnings = []
    if (metrics["status"] != "completed").any():
        table["status"] = metrics["status"]
    class_sets = [tuple(r[2]) for r in rows]
    ascending = sort.endswith("loss") or sort == "seconds"
    if len(set(class_sets)) > 1:
        labels = {cs: chr(ord("A") + i) for i, cs in enumerate(dict.fromkeys(class_sets))}
        table.insert(0, "classes", [labels[cs] for cs in class_sets])
        described = "; ".join(
            f"{lab}: {', '.join(cs) if len(cs) <= 8 else ', '.join(cs[:8]) + ', …'} ({len(cs)})"
            for cs, lab in labels.items()
        )
        warnings.append(
            "These runs were trained on different class sets, so their accuracies measure "
            f"different tasks and are not compared across sets (rows grouped by set): {described}"
        )
        by = ["classes"] + ([sort] if sort in table else [])
        table = table.sort_values(by, ascending=[True] + [ascending] * (len(by) - 1))
    elif sort in table:
        table = table.sort_values(sort, ascending=ascending, na_position="last")
    table.index.name = "run"
    table.attrs["runs"] = dict(zip(names, runs, strict=True))
    return table, warnings


def _unique_names(runs: list[Path]) -> list[str]:
    names = [p.name for p in runs]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in runs]


def default_compare_dir(paths: Sequence[str | os.PathLike]) -> Path:
    """Where ``tfcam compare`` writes by default: ``SWEEP_DIR/compare`` for one sweep folder,
    else ``runs/compare-<time>``."""
    if len(paths) == 1 and (Path(paths[0]) / "sweep.json").is_file():
        return Path(paths[0]) / "compare"
    return Path(default_run_dir("compare"))


def write_compare(
    paths: list[str | os.PathLike], out_dir: str | os.PathLike, sort: str = "val_accuracy"
) -> dict:
    """Writes ``compare.csv``, ``compare.json``, ``learning_curves.png`` and ``index.html``
    (linking each run's own report) into ``out_dir``; returns what was written."""
    from tfcam.report.html import FIGURE_SCALE, _figure, page
    from tfcam.viz.plots import overlaid_learning_curves, to_png

    table, warnings = compare_table(paths, sort)
    names = table.attrs["runs"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "compare.csv") as tmp:
        table.to_csv(tmp, float_format="%.4f")
    histories = {}
    for name in table.index:
        h = names[name] / "history.csv"
        if h.is_file():
            histories[name] = read_history(h)
    curves = out / "learning_curves.png"
    with atomic_path(curves) as tmp:
        Path(tmp).write_bytes(to_png(overlaid_learning_curves(histories), dpi=90 * FIGURE_SCALE))

    shown = transposed(table)
    reports = {name: names[name] / "report" / "index.html" for name in shown.columns}
    column_links = {n: os.path.relpath(r, out) for n, r in reports.items() if r.is_file()}
    parts = [f'<p class="muted">{esc(w)}</p>' for w in warnings]
    parts.append(table_html(shown, column_links=column_links))
    sections = [
        ("table", "Runs", parts),
        (
            "curves",
            "Learning curves",
            [
                _figure(
                    "learning_curves.png",
                    "learning curves",
                    "Validation accuracy (left) and loss (right, training dashed) per epoch, "
                    "one colour per run.",
                    base=out,
                )
            ],
        ),
    ]
    subtitle = f"{len(table)} runs, sorted by {sort}"
    index = write_text(out / "index.html", page("tfcam compare", subtitle, sections))
    result = {
        "runs": [
            {"run": name, "path": str(names[name]), **_plain(row)} for name, row in table.iterrows()
        ],
        "columns": list(table.columns),
        "sort": sort,
        "warnings": warnings,
        "files": {"csv": str(out / "compare.csv"), "curves": str(curves), "html": str(index)},
    }
    write_json(out / "compare.json", result)
    return result


def _cell(value) -> str:
    """A table value as text: floats to 4 significant digits, whole numbers plain, none empty."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"
    return str(value)


def transposed(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison as people read it: one row per metric (val/test accuracy and loss, best
    epoch, seconds, status), then the class-set label and the differing config fields; one
    column per run, in the table's order (best first). Values are text."""
    metrics = [c for c in (*METRICS, "status") if c in table.columns]
    rest = [c for c in table.columns if c not in metrics]
    out = table[metrics + rest].T.map(_cell)
    out.columns = pd.Index(list(table.index), name="run")
    out.index.name = None
    return out


def _plain(row: pd.Series) -> dict:
    out = {}
    for k, v in row.items():
        if hasattr(v, "item"):
            v = v.item()
        out[k] = None if isinstance(v, float) and v != v else v
    return out
