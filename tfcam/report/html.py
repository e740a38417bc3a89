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
:root{--fg:#222;--bg:#fff;--muted:#6b7785;--panel:#f4f6f8;--line:#dde3e9;--link:#1f5fa8;--head:#1f2d3d;
--headfg:#fff;--headmuted:#c9d3dd;--pre:#f7f7f7;--figline:#eef1f4;--cap:#555;--warn:#b3261e}
@media (prefers-color-scheme:dark){:root{--fg:#e3e6ea;--bg:#15191e;--muted:#9aa5b1;--panel:#1f252c;
--line:#343c45;--link:#7ab3f5;--head:#0d1117;--headfg:#f0f3f6;--headmuted:#9aa5b1;--pre:#1f252c;
--figline:#343c45;--cap:#b5bdc6;--warn:#f28b82}figure img{background:#fff}}
html{color-scheme:light dark}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:var(--fg);
background:var(--bg);line-height:1.45}
main{max-width:1150px;margin:0 auto;padding:1rem 1.5rem 3rem}
header{background:var(--head);color:var(--headfg);padding:1.2rem 1.5rem}header h1{margin:0;font-size:1.5rem}
header p{margin:.3rem 0 0;color:var(--headmuted);font-size:.9rem}
header h1,header p,main p,main li,code,figcaption{overflow-wrap:anywhere}
nav{background:var(--panel);border-bottom:1px solid var(--line);padding:.5rem 1.5rem;font-size:.9rem;
position:sticky;top:0;z-index:1;display:flex;flex-wrap:wrap;gap:.2rem 1rem}
nav a{color:var(--link);text-decoration:none}nav a:hover{text-decoration:underline}
a{color:var(--link)}
@media (max-width:700px){nav{flex-wrap:nowrap;overflow-x:auto;white-space:nowrap;padding:.5rem 1rem}
main{padding:1rem 1rem 3rem}}
section{scroll-margin-top:4.5rem}h2,h3{scroll-margin-top:4.5rem}
h2{border-bottom:1px solid var(--line);padding-bottom:.25rem;margin-top:2.2rem}
.scroll{overflow-x:auto;max-width:100%;margin:.5rem 0}
table{border-collapse:collapse;font-size:.88rem;margin:0}td,th{border:1px solid var(--line);
padding:.25rem .6rem;text-align:right}th{background:var(--panel)}td:first-child,th:first-child{text-align:left}
tr.avg th,tr.avg td{font-style:italic}
pre{background:var(--pre);padding:.8rem;overflow:auto;font-size:.82rem}.muted{color:var(--muted)}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid var(--figline)}
figure a{display:inline-block;max-width:100%}figcaption{color:var(--cap);font-size:.88rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}.card{background:var(--panel);border-radius:6px;
padding:.6rem 1rem;min-width:9rem;max-width:100%;box-sizing:border-box}.card b{display:block;font-size:1.4rem}
.card span{color:var(--muted);font-size:.8rem}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;font-size:.9rem}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;overflow-wrap:anywhere}
"""

#: Figures are drawn at twice the pixels they are shown at, for high-DPI screens.
FIGURE_SCALE = 2


def png_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG file from its header, or ``None`` if it is not one."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _figure(src: str, alt: str, caption: str = "", *, base: str | os.PathLike | None = None) -> str:
    """An image beside the page (``src`` a path relative to the page's folder ``base``) with its
    alt text and caption (the alt text when there is no caption), linked to the full-size file.

    A PNG found at ``base/src`` is shown at half its pixel size (figures are drawn at
    :data:`FIGURE_SCALE`×), so it stays sharp on high-DPI screens; the link opens it full size.
    """
    size = png_size(Path(base) / src) if base is not None else None
    dims = ""
    if size:
        w, h = (max(1, round(v / FIGURE_SCALE)) for v in size)
        dims = f' width="{w}" height="{h}"'
    cap = f"<figcaption>{esc(caption or alt)}</figcaption>"
    url = href(src)
    return (
        f'<figure><a href="{url}" title="Open full size">'
        f'<img alt="{esc(alt)}" src="{url}"{dims}></a>{cap}</figure>'
    )


def _averages(per_class: pd.DataFrame) -> pd.DataFrame:
    """The macro (mean over classes with examples) and weighted (by support) averages of a
    per-class table (``precision``, ``recall``, ``f1``, ``support``), as two rows, like
    scikit-learn's ``classification_report``."""
    cols = [c for c in ("precision", "recall", "f1") if c in per_class]
    support = per_class["support"].astype(float) if "support" in per_class else None
    present = per_class[support > 0] if support is not None else per_class
    macro = {c: present[c].astype(float).mean() for c in cols}
    weighted = {}
    if support is not None and support.sum() > 0:
        weighted = {
            c: float((per_class[c].astype(float) * support).sum() / support.sum()) for c in cols
        }
    rows = {"macro avg": macro}
    if weighted:
        rows["weighted avg"] = weighted
    out = pd.DataFrame(rows).T
    if support is not None:
        out["support"] = int(support.sum())
    return out


def top_confusions(confusion, class_names: list[str], n: int = 10) -> list[dict]:
    """The ``n`` most frequent mistakes: ``{"true", "predicted", "count", "share"}``, where
    ``share`` is the part of the true class's images that went to that prediction; ties are
    broken by share, then by class order."""
    import numpy as np

    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(axis=1)
    pairs = [
        (int(cm[i, j]), cm[i, j] / rows[i], i, j)
        for i in range(len(cm))
        for j in range(len(cm))
        if i != j and cm[i, j] > 0
    ]
    pairs.sort(key=lambda p: (-p[0], -p[1], p[2], p[3]))
    return [
        {"true": class_names[i], "predicted": class_names[j], "count": c, "share": round(s, 4)}
        for c, s, i, j in pairs[:n]
    ]


def _provenance_html(prov: dict) -> list[str]:
    """The provenance record (:mod:`tfcam.train.provenance`) as a definition list."""

    def row(k: str, v: object, code: bool = False) -> str:
        value = f"<code>{esc(v)}</code>" if code else esc(v)
        return f"<dt>{esc(k)}</dt><dd>{value}</dd>"

    versions = prov.get("versions") or {}
    items = [row("Command", prov.get("command", ""), code=True)]
    if prov.get("cwd"):
        items.append(row("Working directory", prov["cwd"], code=True))
    if versions:
        items.append(row("Versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    for key, label in (("device", "Device"), ("host", "Host"), ("platform", "Platform")):
        if prov.get(key):
            items.append(row(label, prov[key]))
    items.append(row("Started", prov.get("started") or "?"))
    items.append(
        row("Ended", (prov.get("ended") or "not recorded") + f" ({prov.get('status', '?')})")
    )
    if prov.get("experiment_file"):
        git = prov.get("experiment_git")
        what = prov["experiment_file"]
        if git:
            what += f" at git commit {git['commit']}" + (
                " (with uncommitted changes)" if git.get("dirty") else ""
            )
        items.append(row("Experiment file", what))
    for i, r in enumerate(prov.get("resumes") or [], start=1):
        items.append(
            row(
                f"Resumed ({i})",
                f"{r.get('command', '')}; {r.get('started', '?')} to "
                f"{r.get('ended') or 'not recorded'} ({r.get('status', '?')})",
            )
        )
    return ['<dl class="kv">' + "".join(items) + "</dl>"]


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
            Path(tmp).write_bytes(to_png(fig, dpi=90 * FIGURE_SCALE))
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
                averages = _averages(table) if len(table) else None
                html_table = table.to_html(float_format="%.3f")
                if averages is not None:  # the averages close the table, marked as such
                    avg = averages.reindex(columns=table.columns).to_html(
                        float_format="%.3f", header=False, na_rep=""
                    )
                    body = avg.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
                    body = body.replace("<tr>", '<tr class="avg">')
                    html_table = html_table.replace("</tbody>", body + "</tbody>", 1)
                parts += [f"<h3>Per class ({esc(split)})</h3>", html_table]
            if m.get("confusion") and class_names:
                mistakes = top_confusions(m["confusion"], class_names)
                if mistakes:
                    top = pd.DataFrame(mistakes)
                    top["share"] = top["share"].map(lambda v: f"{v:.0%}")
                    top.columns = ["true class", "predicted as", "images", "share of true class"]
                    parts += [
                        f"<h3>Top confusions ({esc(split)})</h3>",
                        top.to_html(index=False),
                    ]
                src = save(
                    confusion_matrix_figure(
                        m["confusion"], class_names, title=f"Confusion matrix, {split}"
                    ),
                    f"confusion_{split}.png",
                )
                parts.append(
                    _figure(
                        src,
                        f"confusion matrix {split}",
                        f"Confusion matrix on the {split} split: counts (left) and the share of "
                        "each true class (right, rows sum to 1).",
                        base=report_dir,
                    )
                )
        sections.append(("metrics", "Metrics", parts))

    # Training -------------------------------------------------------------------------------------
    parts = []
    if len(history):
        parts.append(
            _figure(
                save(learning_curves(history), "learning_curves.png"),
                "learning curves",
                "Loss and accuracy per epoch, training and validation; the dotted line marks "
                "where fine-tuning of the backbone starts."
                if "phase" in history and (history["phase"] == 2).any()
                else "Loss and accuracy per epoch, training and validation.",
                base=report_dir,
            )
        )
    batch_path = run.path / "batch_history.csv"
    if batch_path.is_file():
        batches = readable(lambda: read_table(batch_path), pd.DataFrame())
        if len(batches):
            parts.append(
                _figure(
                    save(batch_loss_curve(batches), "batch_loss.png"),
                    "batch loss",
                    "Training loss of each batch (its own loss, not the epoch's running mean), "
                    "with a moving average; grey lines mark the start of each epoch.",
                    base=report_dir,
                )
            )
    lr_path = run.path / "lr_finder.csv"
    if lr_path.is_file():
        lr = readable(lambda: read_table(lr_path), pd.DataFrame())
        info_path = run.path / "lr_finder.json"
        info = readable(lambda: read_json(info_path), {}) if info_path.is_file() else {}
        if len(lr):
            suggestion = info.get("suggestion") if isinstance(info, dict) else None
            parts.append(
                _figure(
                    save(lr_finder_curve(lr, suggestion), "lr_finder.png"),
                    "learning-rate finder",
                    "Loss against learning rate during the range test (tfcam lr-find)"
                    + (f"; suggested {suggestion:.2g}." if suggestion else "."),
                    base=report_dir,
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
                _figure(
                    save(class_distribution(counts), "class_distribution.png"),
                    "classes",
                    "Images per class and split, after unreadable files were skipped.",
                    base=report_dir,
                )
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
                    parts.append(
                        _figure(fig["file"], sec["title"], fig.get("caption", ""), base=report_dir)
                    )
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
        captions = {
            "curves": "Mean deletion and insertion curves per method: the probability of the "
            "target class as the most salient pixels are removed (left) or revealed (right).",
            "sanity": "Cascading randomisation (Adebayo et al. 2018): maps that stay similar "
            "as the model's top layers are randomised do not depend on what it learned.",
        }
        for key, title in (("curves", "deletion and insertion"), ("sanity", "sanity check")):
            src = res.get("files", {}).get(key)
            if src and Path(src).is_file():
                rel = os.path.relpath(src, report_dir)
                parts.append(_figure(rel, title, captions[key], base=report_dir))
        sections.append(("heatmap-metrics", "Heatmap metrics", parts))

    # Provenance -------------------------------------------------------------------------------------
    prov_path = run.path / "provenance.json"
    prov = readable(lambda: read_json(prov_path), None) if prov_path.is_file() else None
    if isinstance(prov, dict):
        sections.append(("provenance", "How this run was made", _provenance_html(prov)))

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
        f'<section id="{esc(sid)}"><h2>{esc(t)}</h2>{"".join(map(_boxed, parts))}</section>'
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


def _boxed(part: str) -> str:
    """A table in a box of its own that scrolls sideways, so a wide table never widens the page."""
    return f'<div class="scroll">{part}</div>' if part.lstrip().startswith("<table") else part
