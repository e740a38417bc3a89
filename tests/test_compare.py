"""``compare_table`` and ``write_compare`` called as a library (:mod:`tfcam.report.compare`) on
copies of one finished run whose config and metrics were edited."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd
import pytest
import yaml

from tfcam.errors import UserError
from tfcam.report.compare import METRICS, compare_table, write_compare

#: name: (learning rate, val accuracy, val loss, seconds); None keeps the run's own values.
EDITS = {"base": None, "fast": (0.01, 0.9, 0.5, 30.0), "slow": (0.0003, 0.6, 0.8, 3.0)}


def _copy(tiny_run, dest, edit=None):
    shutil.copytree(tiny_run, dest)
    if edit is not None:
        lr, acc, loss, seconds = edit
        cfg = yaml.safe_load((dest / "config.yaml").read_text())
        cfg["train"]["learning_rate"] = lr
        cfg["name"] = f"renamed-{dest.name}"  # the name is never a difference
        (dest / "config.yaml").write_text(yaml.safe_dump(cfg))
        metrics = json.loads((dest / "metrics.json").read_text())
        metrics["val"].update(accuracy=acc, loss=loss)
        (dest / "metrics.json").write_text(json.dumps(metrics))
        state = json.loads((dest / "state.json").read_text())
        state["seconds"] = seconds
        (dest / "state.json").write_text(json.dumps(state))
    return dest


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    return [_copy(tiny_run, root / name, edit) for name, edit in EDITS.items()]


def test_only_differing_config_fields_then_metrics_sorted(tiny_run, runs):
    table, warnings = compare_table(runs)
    assert warnings == []
    assert table.index.name == "run"
    # base's accuracy (what training gave) is below the edited ones, so it comes last.
    base = json.loads((tiny_run / "metrics.json").read_text())
    assert base["val"]["accuracy"] < 0.6
    assert list(table.index) == ["fast", "slow", "base"]
    present = [c for c in METRICS if c in table.columns]
    assert list(table.columns) == ["train.learning_rate", *present]
    assert {"val_accuracy", "val_loss", "test_accuracy", "best_epoch", "seconds"} <= set(present)
    assert table["train.learning_rate"].tolist() == [0.01, 0.0003, 0.003]
    assert table.loc["fast", "val_accuracy"] == 0.9 and table.loc["slow", "val_loss"] == 0.8
    assert table.loc["base", "val_loss"] == pytest.approx(base["val"]["loss"])
    assert table.loc["base", "test_accuracy"] == pytest.approx(base["test"]["accuracy"])
    # Untouched copies agree on the test metrics: the edits did not leak.
    assert table["test_accuracy"].nunique() == 1
    assert {k: v.name for k, v in table.attrs["runs"].items()} == {n: n for n in EDITS}

    by_loss, _ = compare_table(runs, sort="val_loss")
    assert list(by_loss.index) == ["fast", "slow", "base"]
    by_time, _ = compare_table(runs, sort="seconds")
    assert by_time["seconds"].is_monotonic_increasing and by_time.index[0] == "slow"


def test_same_config_gives_metrics_only_and_same_names_give_paths(tiny_run, tmp_path):
    a = _copy(tiny_run, tmp_path / "one" / "tiny")
    b = _copy(tiny_run, tmp_path / "two" / "tiny")
    table, _ = compare_table([a, b])
    assert list(table.index) == [str(a), str(b)]
    assert not any("." in c for c in table.columns)  # no config field differs
    assert table["val_accuracy"].nunique() == 1
    assert compare_table([a, a])[0].shape[0] == 1  # a run given twice is one row


def test_different_class_sets_are_flagged_and_grouped(tiny_run, runs, tmp_path):
    two = _copy(tiny_run, tmp_path / "two", EDITS["fast"])
    (two / "class_names.json").write_text(json.dumps(["circle", "square"]))
    table, warnings = compare_table([*runs, two])
    assert len(warnings) == 1 and "different class sets" in warnings[0]
    assert "A: circle, square, triangle (3); B: circle, square (2)" in warnings[0]
    assert table.columns[0] == "classes"
    assert list(table.index) == ["fast", "slow", "base", "two"]
    assert table["classes"].tolist() == ["A", "A", "A", "B"]


def test_write_compare_files_match_the_table(runs, tmp_path):
    out = tmp_path / "cmp"
    result = write_compare(runs, out, sort="val_loss")
    table, _ = compare_table(runs, sort="val_loss")
    assert result["sort"] == "val_loss" and result["columns"] == list(table.columns)
    assert [r["run"] for r in result["runs"]] == list(table.index)
    assert [r["val_loss"] for r in result["runs"]] == pytest.approx(table["val_loss"].tolist())
    assert json.loads((out / "compare.json").read_text()) == json.loads(json.dumps(result))
    csv = pd.read_csv(out / "compare.csv", index_col="run")
    assert list(csv.index) == list(table.index) and list(csv.columns) == list(table.columns)
    assert csv["train.learning_rate"].tolist() == pytest.approx([0.01, 0.0003, 0.003])
    html = (out / "index.html").read_text()
    assert "3 runs, sorted by val_loss" in html
    assert html.index(">fast<") < html.index(">slow<") < html.index(">base<")
    assert (out / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_sort_key_and_paths(runs, tmp_path):
    with pytest.raises(UserError, match="Unknown sort key 'accuracy'.*val_accuracy"):
        compare_table(runs, sort="accuracy")
    with pytest.raises(UserError, match="neither a run directory"):
        compare_table([tmp_path])
    with pytest.raises(UserError, match="Give run directories or a sweep folder"):
        compare_table([])


def test_compare_page_escapes_user_named_values(tiny_run, tmp_path):
    import shutil

    from tfcam.report.compare import write_compare

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tiny_run, a)
    shutil.copytree(tiny_run, b)
    cfg = b / "config.yaml"
    text = cfg.read_text()
    hostile = "<img src=x onerror=alert(1)>"
    assert "  data_dir: null" in text
    cfg.write_text(text.replace("  data_dir: null", f"  data_dir: '{hostile}'", 1))
    page = (tmp_path / "out").joinpath("index.html")
    write_compare([str(a), str(b)], tmp_path / "out")
    body = page.read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in body  # shown, as text
    assert "<img src=x" not in body


def test_page_and_terminal_show_metrics_first_and_runs_as_columns(runs, tmp_path):
    from conftest import run_cli

    from tfcam.report.compare import transposed

    table, _ = compare_table(runs)
    shown = transposed(table)
    assert list(shown.columns) == ["fast", "slow", "base"]  # best first, as sorted
    metrics = [c for c in METRICS if c in table.columns]
    assert list(shown.index) == [*metrics, "train.learning_rate"]
    assert (
        shown.loc["val_accuracy", "fast"] == "0.9"
        and shown.loc["train.learning_rate", "slow"] == "0.0003"
    )

    out = tmp_path / "cmp"
    write_compare(runs, out)
    html = (out / "index.html").read_text()
    body = html[html.index('<section id="table">') :].split("</table>")[0]
    head = body[body.index("<thead>") : body.index("</thead>")]
    assert head.index(">fast<") < head.index(">slow<") < head.index(">base<")
    rows = re.findall(r"<tr>\s*<th>([^<]+)</th>", body[body.index("<tbody>") :])
    assert rows[0] == "val_accuracy" and rows[-1] == "train.learning_rate"
    assert '<div class="scroll"><table' in html

    r = run_cli("compare", *runs, "--out", tmp_path / "cmp2")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["run", "fast", "slow", "base"]
    assert lines[1].split()[:2] == ["val_accuracy", "0.9"]
