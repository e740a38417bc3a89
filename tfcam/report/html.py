"""The run report: one self-contained HTML page per run (no TensorFlow here).

It reads only the run directory's files, so it can be rebuilt at any time with ``tfcam report``.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from tfcam.io import read_json, write_text
from tfcam.runs import Run, read_history

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}pre{background:#f7f7f7;
padding:.8rem;overflow:auto;font-size:.85rem}.muted{color:#777}img{max-width:100%}
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def write_report(run_dir: str | Path) -> Path:
    """Writes ``RUN/report/index.html`` from the run's files and returns its path."""
    from tfcam.viz.plots import learning_curves, to_png

    run = Run(run_dir).require()
    cfg_text = run.config_path.read_text(encoding="utf-8")
    name = run.config().name
    parts = [
        f"<h1>tfcam run: {html.escape(name)}</h1>",
        f'<p class="muted">{html.escape(str(run.path.resolve()))}</p>',
    ]

    metrics = run.metrics()
    if metrics:
        rows = {
            split: {k: m.get(k) for k in ("accuracy", "loss", "macro_f1", "n")}
            for split, m in metrics.items()
        }
        parts += ["<h2>Metrics</h2>", pd.DataFrame(rows).T.to_html(float_format="%.4f")]
        for split, m in metrics.items():
            if "per_class" in m:
                table = pd.DataFrame(m["per_class"]).T
                parts += [f"<h3>Per class ({split})</h3>", table.to_html(float_format="%.3f")]

    history = read_history(run.history_path)
    if len(history):
        parts += [
            "<h2>Learning curves</h2>",
            _img(to_png(learning_curves(history)), "learning curves"),
        ]
        parts += [
            "<details><summary>History table</summary>",
            history.to_html(index=False, float_format="%.4f"),
            "</details>",
        ]

    if run.data_report_path.is_file():
        rep = read_json(run.data_report_path)
        parts += [
            "<h2>Data</h2>",
            f"<p>{html.escape(rep.get('how', ''))}; root <code>{html.escape(rep.get('root', ''))}</code></p>",
        ]
        parts.append(pd.DataFrame(rep.get("counts", {})).to_html())
        for key, title in (("skipped", "Skipped files"), ("suspicious", "Kept, but worth a look")):
            items = rep.get(key) or []
            if items:
                parts += [
                    f"<h3>{title} ({len(items)})</h3>",
                    pd.DataFrame(items).to_html(index=False),
                ]

    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(cfg_text)}</pre>"]
    if run.tensorboard.is_dir():
        parts.append(
            f'<p>TensorBoard logs: <a href="../tensorboard/">{html.escape(str(run.tensorboard))}</a> '
            f"(<code>tensorboard --logdir {html.escape(str(run.tensorboard))}</code>)</p>"
        )
    state = run.state()
    if state:
        parts.append(f'<p class="muted">Run state: {html.escape(json.dumps(state))}</p>')
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>tfcam: {html.escape(name)}</title>'
        f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return write_text(run.report_path, page)
