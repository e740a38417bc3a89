"""The run report: one HTML page per run, ``RUN/report/index.html``, with its figures beside it in
``RUN/report/figures/`` (no network, no TensorFlow here).

It reads only the run directory's files: the metrics, history, data report and config, plus the
manifest ``report/figures.json`` of model-dependent figures that
:func:`tfcam.explain.report_figures.build_report_figures` draws. ``tfcam report`` runs both.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from tfcam.errors import UserError
from tfcam.io import atomic_path, read_json, write_text
from tfcam.report.safe import anchor, esc, href
from tfcam.runs import HISTORY_COLUMNS, Run, read_history, read_table

log = logging.getLogger("tfcam")
T = TypeVar("T")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;line-height:1.45}
main{max-width:1150px;margin:0 auto;padding:1rem 1.5rem 3rem}
header{background:#1f2d3d;color:#fff;padding:1.2rem 1.5rem}header h1{margin:0;font-size:1.5rem}
header p{margin:.3rem 0 0;color:#c9d3dd;font-size:.9rem}
nav{background:#f4f6f8;border-bottom:1px solid #dde3e9;padding:.5rem 1.5rem;font-size:.9rem;position:sticky;top:0}
nav a{margin-right:1rem;color:#1f5fa8;text-decoration:none}nav a:hover{text-decoration:underline}
h2{border-bottom:1px solid #dde3e9;padding-bottom:.25rem;margin-top:2.2rem}
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}td,th{border:1px solid #dde3e9;padding:.25rem .6rem;
text-align:right}th{background:#f4f6f8}td:first-child,th:first-child{text-align:left}
pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.82rem}.muted{color:#6b7785}
figure{margin:1rem 0}figure img{max-width:100%;border:1px solid #eef1f4}figcaption{color:#555;font-size:.88rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}.card{background:#f4f6f8;border-radius:6px;
padding:.6rem 1rem;min-width:9rem}.card b{display:block;font-size:1.4rem}.card span{color:#6b7785;font-size:.8rem}
"""


def _figure(src: str, alt: str, caption: str = "") -> str:
    """An image beside the page (``src`` a relative path) with its alt text and caption."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="{href(src)}">{cap}</figure>'


def write_report(run_dir: str | Path) -> Path:
    """Writes ``RUN/report/index.html`` (and its data figures) from the run's files.

    Model-dependent sections appear when ``report/figures.json`` exists (``tfcam report`` and
    ``tfcam fit`` draw them first).

    Returns:
        The path of ``index.html``.
    """
    from tfcam.viz.plots import (
        batch_loss_curve,
        class_distribution,
        confusion_matrix_figure,
        learning_curves,
        lr_finder_curve,
        to_png,
    )

    run = Run(run_dir).require()
    report_dir = run.report_path.parent
    fig_dir = report_dir / "figures"
    cfg = run.config()  # without a readable config there is no report (a damaged one is named)
    cfg_text = run.config_path.read_text(encoding="utf-8")
    damaged: list[str] = []  # a damaged file costs its section, not the page

    def readable(read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except UserError as e:
            log.warning("%s; the report leaves it out", e)
            damaged.append(str(e))
            return default

    name = cfg.name
    sections: list[tuple[str, str, list[str]]] = []  # (id, title, html parts)

    def save(fig, file: str) -> str:
        with atomic_path(fig_dir / file) as tmp:
            Path(tmp).write_bytes(to_png(fig, dpi=90))
        return f"figures/{file}"

    class_names = readable(run.class_names, []) if run.class_names_path.is_file() else []

    # Summary -----------------------------------------------------------------------------------
    metrics: dict[str, Any] = readable(run.metrics, {})
    state = run.state() or {}
    history = readable(
        lambda: read_history(run.history_path), pd.DataFrame(columns=list(HISTORY_COLUMNS))
    )
    cards = []
    for split in ("val", "test"):
        if split in metrics and metrics[split].get("accuracy") is not None:
            cards.append((f"{metrics[split]['accuracy']:.3f}", f"{split} accuracy"))
    if len(history):
        cards.append((str(len(history)), "epochs"))
    if state.get("seconds"):
        cards.append((f"{state['seconds']:.0f} s", "training time"))
    cards.append((cfg.model.backbone, f"backbone, {cfg.data.image_size} px"))
    cards.append((str(len(class_names)), "classes"))
    summary = '<div class="cards">' + "".join(
        f"<div class='card'><b>{esc(v)}</b><span>{esc(k)}</span></div>" for v, k in cards
    )
    summary += "</div>"
    if damaged:
        summary += (
            "<div class='card'><b>Damaged files</b><ul>"
            + "".join(f"<li>{esc(d)}</li>" for d in damaged)
            + "</ul></div>"
        )

    # Metrics -------------------------------------------------------------------------------------
    if metrics:
        parts = []
        rows = {
            split: {k: m.get(k) for k in ("accuracy", "loss", "macro_f1", "n")}
            for split, m in metrics.items()
        }
        table = pd.DataFrame(rows).T
        if "n" in table:
            table["n"] = table["n"].map(lambda v: "" if v is None else f"{int(v)}")
        parts.append(table.to_html(float_format="%.4f"))
        for split, m in metrics.items():
            if "per_class" in m:
                table = pd.DataFrame(m["per_class"]).T
                if "support" in table:
                    table["support"] = table["support"].astype(int)
                parts += [
                    f"<h3>Per class ({esc(split)})</h3>",
                    table.to_html(float_format="%.3f"),
                ]
            if m.get("confusion") and class_names:
                src = save(
                    confusion_matrix_figure(
                        m["confusion"], class_names, title=f"Confusion matrix, {split}"
                    ),
                    f"confusion_{split}.png",
                )
                parts.append(_figure(src, f"confusion matrix {split}"))
        sections.append(("metrics", "Metrics", parts))

    # Training -------------------------------------------------------------------------------------
    parts = []
    if len(history):
        parts.append(
            _figure(
                save(learning_curves(history), "learning_curves.png"),
                "learning curves",
                "Per epoch; the dotted line marks where fine-tuning of the backbone starts."
                if "phase" in history and (history["phase"] == 2).any()
                else "Per epoch.",
            )
        )
    batch_path = run.path / "batch_history.csv"
    if batch_path.is_file():
        batches = readable(lambda: read_table(batch_path), pd.DataFrame())
        if len(batches):
            parts.append(_figure(save(batch_loss_curve(batches), "batch_loss.png"), "batch loss"))
    lr_path = run.path / "lr_finder.csv"
    if lr_path.is_file():
        lr = readable(lambda: read_table(lr_path), pd.DataFrame())
        info_path = run.path / "lr_finder.json"
        info = readable(lambda: read_json(info_path), {}) if info_path.is_file() else {}
        if len(lr):
            suggestion = info.get("suggestion") if isinstance(info, dict) else None
            parts.append(
                _figure(
                    save(lr_finder_curve(lr, suggestion), "lr_finder.png"), "learning-rate finder"
                )
            )
    if len(history):
        parts += [
            "<details><summary>History table</summary>",
            history.to_html(index=False, float_format="%.4f"),
            "</details>",
        ]
    if parts:
        sections.append(("training", "Training", parts))

    # Data ------------------------------------------------------------------------------------------
    data_report = run.data_report_path
    rep = readable(lambda: read_json(data_report), None) if data_report.is_file() else None
    if isinstance(rep, dict):
        parts = [f"<p>{esc(rep.get('how', ''))}; root <code>{esc(rep.get('root', ''))}</code></p>"]
        counts = pd.DataFrame(rep.get("counts", {}))
        if len(counts):
            if class_names:
                counts = counts.reindex([c for c in class_names if c in counts.index])
            parts.append(
                _figure(save(class_distribution(counts), "class_distribution.png"), "classes")
            )
            parts.append(counts.to_html())
        for key, title in (
            ("skipped", "Skipped files"),
            ("suspicious", "Worth a look (kept unless the reason says otherwise)"),
        ):
            items = rep.get(key) or []
            if items:
                parts += [
                    f"<h3>{title} ({len(items)})</h3>",
                    pd.DataFrame(items).to_html(index=False),
                ]
        sections.append(("data", "Data", parts))

    # Model figures ---------------------------------------------------------------------------------
    manifest_path = report_dir / "figures.json"
    manifest = readable(lambda: read_json(manifest_path), {}) if manifest_path.is_file() else {}
    if isinstance(manifest, dict):
        for sec in manifest.get("sections", []):
            parts = [f"<p>{esc(sec['text'])}</p>"] if sec.get("text") else []
            for fig in sec.get("figures", []):
                if fig.get("file") and (report_dir / fig["file"]).is_file():
                    parts.append(_figure(fig["file"], sec["title"], fig.get("caption", "")))
                elif fig.get("caption"):
                    parts.append(f"<p>{esc(fig['caption'])}</p>")
            sections.append((sec["id"], sec["title"], parts))

    # Heatmap metrics (tfcam evaluate-cams) ---------------------------------------------------------
    cams_path = run.path / "evaluate_cams" / "metrics.json"
    res = readable(lambda: read_json(cams_path), None) if cams_path.is_file() else None
    if isinstance(res, dict):
        arrows = {c: "↑" if d == "higher" else "↓" for c, d in res.get("columns", {}).items()}
        table = pd.DataFrame(res.get("table", [])).set_index("method")
        table = table[[c for c in arrows if c in table.columns]]
        table.columns = [f"{c} {arrows[c]}" for c in table.columns]
        parts = [
            f"<p>{esc(res.get('n'))} {esc(res.get('split'))} images, layer "
            f"<code>{esc(res.get('layer'))}</code>, target: the true class. "
            "<code>random</code> and <code>center</code> are reference maps that know nothing "
            "about the model; ↑ higher is better, ↓ lower is better.</p>",
            table.to_html(float_format="%.3f", na_rep=""),
        ]
        if (res.get("sanity") or {}).get("note"):
            parts.append(f"<p>{esc(res['sanity']['note'])}</p>")
        for key, title in (("curves", "deletion and insertion"), ("sanity", "sanity check")):
            src = res.get("files", {}).get(key)
            if src and Path(src).is_file():
                rel = os.path.relpath(src, report_dir)
                parts.append(_figure(rel, title))
        sections.append(("heatmap-metrics", "Heatmap metrics", parts))

    # Config, logs ------------------------------------------------------------------------------------
    parts = [f"<pre>{esc(cfg_text)}</pre>"]
    if run.tensorboard.is_dir():
        parts.append(
            f'<p>TensorBoard logs: <a href="{href("../tensorboard/")}">{esc(run.tensorboard)}</a>; '
            f"view them with <code>tensorboard --logdir {esc(run.tensorboard)}</code></p>"
        )
    if state:
        parts.append(f'<p class="muted">Run state: {esc(json.dumps(state))}</p>')
    sections.append(("config", "Configuration and logs", parts))

    return write_text(
        run.report_path,
        page(
            f"tfcam run: {name}", str(run.path.resolve()), sections, summary, title=f"tfcam: {name}"
        ),
    )


def page(
    heading: str,
    subtitle: str,
    sections: list[tuple[str, str, list[str]]],
    summary: str = "",
    *,
    title: str | None = None,
) -> str:
    """One self-contained HTML page: header, a navigation bar over ``sections`` (id, title,
    HTML parts), then the sections."""
    nav = "".join(f'<a href="{anchor(sid)}">{esc(t)}</a>' for sid, t, _ in sections)
    body = "".join(
        f'<section id="{esc(sid)}"><h2>{esc(t)}</h2>{"".join(parts)}</section>'
        for sid, t, parts in sections
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title or heading)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(heading)}</h1>"
        f"<p>{esc(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{summary}{body}</main></body></html>\n"
    )
