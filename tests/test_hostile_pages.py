"""Pages stay pages whatever the user named: class folders, image files, run directories, the
experiment's name and config strings full of HTML, scripts, ``javascript:`` and quotes are shown as
text, and every link points to a file beside the page (issue 14, item 12).

Fast tests cover :mod:`tfcam.report.safe`, the explain index and the compare links; the slow one
trains a tiny run on hostile folders, writes every page and renders each in headless Chromium.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import yaml
from conftest import chromium, run_cli, write_image

from tfcam.report.safe import anchor, esc, href, link, markdown_code

#: Each would run script (or break out of an attribute) if placed in a page raw.
CLASSES = (
    "<img src=x onerror=window.__pwned=1>",
    '"><svg onload=window.__pwned=1>',
    "javascript:window.__pwned=1",
    "'onmouseover='window.__pwned=1",
)
#: Image file stems ("/" cannot be in a file name; the rest can).
STEMS = (
    '"><img src=x onerror=window.__pwned=1>',
    "javascript:alert(1)",
    "'onmouseover='alert(1)",
    "a&amp;b <!-- c --> &",
    "<script>window.__pwned=1<\\script>",
    "ünï©ødé ☃ #?%41",
)
RUN_A = "javascript:alert(1)"
RUN_B = "'onmouseover='alert(1) #?%41 <b>☃"
NAME = "<img src=x onerror=window.__pwned=1>"
DESCRIPTION = "</script><!-- <svg onload=window.__pwned=1> -->"
#: An unreadable image: the report lists it under skipped files, the explain page under skipped.
BROKEN = "<img src=x onerror=window.__pwned=1> broken"
DATA_DIR_B = "</script><script>window.__pwned=1</script><!--"


# -- the helpers -----------------------------------------------------------------------------------


def test_esc_escapes_every_markup_character():
    assert esc("<a href='x'>\"&</a>") == "&lt;a href=&#x27;x&#x27;&gt;&quot;&amp;&lt;/a&gt;"
    assert esc(3) == "3" and esc(None) == "None"
    for name in (*CLASSES, *STEMS):
        assert not set(esc(name)) & set("<>\"'")
        assert html.unescape(esc(name)) == name


@pytest.mark.parametrize(
    "path, want",
    [
        ("javascript:alert(1).png", "javascript%3Aalert%281%29.png"),
        ("../a b/#?%.png", "../a%20b/%23%3F%25.png"),
        ("figures/x.png", "figures/x.png"),
        ("../tensorboard/", "../tensorboard/"),
        ('"><x>/&.png', "%22%3E%3Cx%3E/%26.png"),
        ("ü ☃.png", "%C3%BC%20%E2%98%83.png"),
    ],
)
def test_href_percent_encodes_each_segment(path, want):
    assert href(path) == want
    if not path.endswith("/"):
        assert href(Path(path)) == want


def test_href_is_a_relative_path_to_the_same_file_for_every_hostile_name():
    for name in (*CLASSES, *STEMS, RUN_A, RUN_B):
        for path in (f"{name}.png", f"../{name}/report/index.html", f"{name}/{name}"):
            h = href(path)
            assert not set(h) & set("<>\"' "), h
            url = html.unescape(h)
            assert urlsplit(url).scheme == "" and urlsplit(url).fragment == ""
            assert unquote(url) == os.path.normpath(path)


@pytest.mark.parametrize("bad", ["", "/etc/passwd", "//host/share"])
def test_href_refuses_empty_and_absolute_paths(bad):
    with pytest.raises(ValueError, match="relative|empty"):
        href(bad)


def test_link_and_anchor():
    assert link("a:b/c.png", "<b>") == '<a href="a%3Ab/c.png">&lt;b&gt;</a>'
    assert anchor('x"y') == "#x%22y"


@pytest.mark.parametrize("fence", ["```", "````", "~~~"])
def test_markdown_code_stays_code_in_tensorboard(fence):
    """The TensorBoard config text: a fence inside the config does not end the code block
    (rendered with TensorBoard's own Markdown, as its text plugin does)."""
    from tensorboard.plugin_util import markdown_to_safe_html

    text = f"notes: |\n{fence}\n# heading <img src=x onerror=alert(1)>\n{fence}\nend"
    out = markdown_to_safe_html(markdown_code(text))
    assert out.count("<pre>") == 1 and "<h1>" not in out and "<img" not in out, out
    code = re.fullmatch(r"<pre><code>(.*)</code></pre>\s*", out, re.S)
    assert code is not None and html.unescape(code.group(1)).rstrip("\n") == text


# -- the explain index, written from records (no model) ---------------------------------------------


def _fake_records(out: Path) -> list[dict]:
    records = []
    for i, stem in enumerate(STEMS):
        folder = out / stem
        files = {}
        for kind in ("overlay", "heatmap", "panel"):
            files[kind] = str(
                write_image(folder / f"gradcam_{kind}.png", np.zeros((4, 4, 3), "uint8"))
            )
        records.append(
            {
                "image": f"/data/{CLASSES[i % 4]}/{stem}.png",
                "outputs": {"gradcam": files},
                "predicted": CLASSES[(i + 1) % 4],
                "probability": 0.5,
                "target": CLASSES[(i + 2) % 4],
                "score": 1.0,
            }
        )
    return records


def test_explain_index_shows_names_as_text_and_links_existing_files(tmp_path):
    from tfcam.report.explain_index import write_explain_index

    out = tmp_path / "out"
    records = _fake_records(out)
    page = write_explain_index(out, records, [f"{STEMS[0]}.png (cannot decode)"])
    assert page == out / "index.html"
    text = page.read_text(encoding="utf-8")
    for name in (*CLASSES, *STEMS):
        assert esc(name) in text
        if set(name) & set("<>\"'&"):
            assert name not in text
    # The page's one script is the constant that sorts rows (it reads numbers only).
    from tfcam.report.explain_index import SORT_SCRIPT

    assert re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S | re.I) == [SORT_SCRIPT]
    assert text.lower().count("<script") == 1 and "<svg" not in text
    assert text.count("<img ") == len(STEMS)  # one overlay per image, no injected one
    targets = _attribute_values(text, "href") + _attribute_values(text, "src")
    files = [t for t in targets if not t.startswith("#")]
    # Per image: the overlay, a link around it to the panel, links to the three files.
    assert len(files) == 5 * len(STEMS)
    for t in files:
        assert urlsplit(t).scheme == ""
        assert (out / unquote(t)).is_file(), t


def _attribute_values(page: str, name: str) -> list[str]:
    """Values of ``name="…"`` attributes, unescaped (an independent little parser)."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(v for k, v in attrs if k == name and v is not None)

    Parser().feed(page)
    return found


# -- compare links from the runs' parent folder ----------------------------------------------------


def test_compare_links_are_relative_paths_not_javascript(tiny_run, tmp_path):
    from tfcam.report.compare import write_compare

    runs = [tmp_path / RUN_A, tmp_path / RUN_B]
    for r in runs:
        shutil.copytree(tiny_run, r)
    write_compare([str(r) for r in runs], tmp_path)  # the page sits beside the runs
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    links = [h for h in _attribute_values(text, "href") if not h.startswith("#")]
    assert len(links) == 3  # the two runs' reports and the full-size learning curves
    for h in links:
        assert urlsplit(h).scheme == "", h
        assert (tmp_path / unquote(h)).is_file(), h
    assert esc(RUN_B) in text and RUN_B not in text


# -- every page in a real browser -----------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Two runs on hostile class folders and files, their reports, an explain page and a compare
    page beside the runs: ``{"pages": {name: path}, "root": folder}``."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data <!--&amp;-->"
    rng = np.random.default_rng(0)
    for ci, cls in enumerate(CLASSES):
        for i in range(8):
            img = np.clip(rng.normal(30 + 60 * ci, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            write_image(data / cls / f"{STEMS[i % len(STEMS)]} {i}.png", img)
    (data / CLASSES[0] / f"{BROKEN}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    runs = root / "runs"
    a, b = runs / RUN_A, runs / RUN_B
    # fmt: off
    r = run_cli("fit", "-e", "folder", "--data-dir", data, "--weights", "none",
                "--set", "model.backbone=simple_cnn", "--set", "data.image_size=32",
                "--set", "train.epochs=1", "--set", "data.batch_size=8",
                "--set", f"name={NAME}", "--set", f"description={DESCRIPTION}", "--run-dir", a)
    # fmt: on
    assert r.exit_code == 0, r.output
    shutil.copytree(a, b)
    cfg = yaml.safe_load((b / "config.yaml").read_text(encoding="utf-8"))
    cfg["data"]["data_dir"] = DATA_DIR_B  # a config string that differs, so compare shows it
    (b / "config.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    r = run_cli("report", b)
    assert r.exit_code == 0, r.output
    explained = root / "explain <b>&"
    r = run_cli("explain", a, data, "-m", "gradcam", "--out", explained)
    assert r.exit_code == 0, r.output
    r = run_cli("compare", a, b, "--out", runs)
    assert r.exit_code == 0, r.output
    pages = {
        "report": a / "report" / "index.html",
        "report of the copy": b / "report" / "index.html",
        "explain": explained / "index.html",
        "compare": runs / "index.html",
    }
    return {"pages": pages, "root": root}


#: Visible text each page must show (escaped, not dropped).
SHOWN = {
    "report": [*CLASSES, NAME, DESCRIPTION, "data <!--&amp;-->", f"{BROKEN}.png"],
    "report of the copy": [*CLASSES, NAME, DATA_DIR_B, RUN_B],
    "explain": [*CLASSES, *(f"{s} {i}.png" for i, s in enumerate(STEMS)), f"{BROKEN}.png"],
    "compare": [RUN_A, RUN_B, DATA_DIR_B],
}

_PROBE = """() => {
  const attrs = [];
  for (const el of document.querySelectorAll('*'))
    for (const a of el.attributes) if (a.name.toLowerCase().startsWith('on')) attrs.push(el.tagName + ' ' + a.name);
  return {
    pwned: window.__pwned === undefined ? null : String(window.__pwned),
    handlers: attrs,
    scripts: Array.from(document.querySelectorAll('script, svg, iframe, object, embed')).map(e => e.tagName + ':' + e.textContent),
    text: document.body.innerText,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]),
    images: Array.from(document.images).map(i => [i.getAttribute('src'), i.src, i.complete, i.naturalWidth]),
    ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  };
}"""


def _local_file(url: str) -> Path:
    parts = urlsplit(url)
    assert parts.scheme == "file", url
    return Path(unquote(parts.path))


@pytest.mark.slow
@pytest.mark.parametrize("which", list(SHOWN))
def test_hostile_names_never_run_in_a_browser(hostile, which):
    """No script runs, no handler attribute exists, each hostile name is visible text, and every
    link and image is a file that exists (``#id`` links: an element of the page)."""
    exe = chromium()
    from playwright.sync_api import sync_playwright

    path = hostile["pages"][which]
    assert path.is_file(), f"{which}: no page at {path}"
    dialogs: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        # The explain index loads its thumbnails lazily: ask for all of them, then wait.
        page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        seen = page.evaluate(_PROBE)
        browser.close()
    assert dialogs == [] and errors == []
    from tfcam.report.explain_index import SORT_SCRIPT

    # Only the explain page has a script: the constant that sorts its rows.
    scripts = [f"SCRIPT:{SORT_SCRIPT}"] if which == "explain" else []
    assert seen["pwned"] is None and seen["handlers"] == [] and seen["scripts"] == scripts, seen
    missing = [s for s in SHOWN[which] if s not in seen["text"]]
    assert missing == [], f"{which}: not shown as text: {missing}"
    assert seen["images"], which
    for src, url, complete, width in seen["images"]:
        assert _local_file(url).is_file() and complete and width > 0, (src, url)
    for raw, url in seen["links"]:
        if raw.startswith("#"):
            assert raw[1:] in seen["ids"], raw
        else:
            assert _local_file(url).exists(), (raw, url)


def test_table_escapes_every_label_and_cell_and_links_only_by_href():
    import pandas as pd

    from tfcam.report.safe import table

    bad = '"><script>alert(1)</script>'
    frame = pd.DataFrame({bad: [bad, None], "plain": ["1", float("nan")]}, index=[bad, "b"])
    out = table(frame, column_links={bad: "javascript:alert(1)/report/index.html"})
    assert "<script>" not in out and out.count("&lt;script&gt;") == 3  # header, row label, cell
    assert 'href="javascript%3Aalert%281%29/report/index.html"' in out
    assert out.count("<td></td>") == 2  # missing cells
