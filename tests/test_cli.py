"""The command line: help without TensorFlow, one-line errors with exit code 2, JSON output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

COMMANDS = ["experiments", "backbones", "fit", "evaluate", "predict", "report"]


def test_importing_the_cli_and_every_help_leave_tensorflow_out():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from tfcam.cli import cli\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        f"for cmd in [[], *[[c] for c in {COMMANDS!r}]]:\n"
        "    r = CliRunner().invoke(cli, [*cmd, '--help'])\n"
        "    assert r.exit_code == 0, (cmd, r.output)\n"
        "    assert 'Usage: ' in r.output, r.output\n"
        "assert 'tensorflow' not in sys.modules, 'help imported TensorFlow'\n"
        "r = CliRunner().invoke(cli, ['experiments'])\n"
        "assert r.exit_code == 0 and 'shapes' in r.output\n"
        "assert 'tensorflow' not in sys.modules, 'listing experiments imported TensorFlow'\n"
        "r = CliRunner().invoke(cli, ['backbones', '--json'])\n"
        "assert r.exit_code == 0 and 'convnext_tiny' in r.output\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'backbones'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_describes_its_command(command):
    r = run_cli(command, "--help")
    assert r.exit_code == 0
    assert f"Usage: cli {command}" in r.output or f"Usage: tfcam {command}" in r.output


def test_experiments_json_lists_descriptions():
    r = run_cli("experiments", "--json")
    items = json.loads(r.output)
    assert items["shapes"].startswith("Synthetic shapes")
    assert "folder" in items


def _assert_one_line_error(result, *pieces):
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tfcam: error: ")
    assert "Traceback" not in result.stderr and "Traceback" not in result.output
    for piece in pieces:
        assert piece in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "pieces"),
    [
        (
            ["fit", "--experiment", "shapez"],
            ["Unknown experiment 'shapez'", "Did you mean 'shapes'", "folder"],
        ),
        (
            ["fit", "-e", "shapes", "--set", "model.backbone=resnet5"],
            ["Unknown backbone 'resnet5'", "resnet50", "`tfcam backbones` lists them all"],
        ),
        (
            ["fit", "-e", "shapes", "--set", "train.epoch=3"],
            ["Unknown config key 'train.epoch'", "train.epochs"],
        ),
        (["fit", "-e", "shapes", "--set", "train.epochs=x"], ["train.epochs", "'x'", "an integer"]),
        (["fit", "-e", "folder"], ["needs --data-dir"]),
        (
            ["fit", "-e", "folder", "--data-dir", "/no/such/folder"],
            ["Data folder not found: '/no/such/folder'"],
        ),
        (
            ["fit", "-e", "shapes", "--weights", "/no/such.h5"],
            ["Weights file not found", "imagenet, none"],
        ),
        (["fit", "a", "--data-dir", "b"], ["Give the data folder once"]),
        (["fit", "--resume", "/no/run", "--set", "train.epochs=1"], ["do not combine"]),
        (["fit", "--resume", "/no/run"], ["Run directory not found: '/no/run'"]),
        (["evaluate", "/no/run"], ["Run directory not found"]),
        (["predict", "/no/run", "x.jpg"], ["Run directory not found"]),
        (["report", "/no/run"], ["Run directory not found"]),
        (["fit", "--bogus"], ["No such option", "--bogus"]),
        (["nosuchcommand"], ["No such command"]),
    ],
)
def test_bad_input_exits_2_with_one_line(args, pieces, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written for a usage error
    result = run_cli(*args)
    _assert_one_line_error(result, *pieces)
    assert list(tmp_path.iterdir()) == []


def test_bad_input_from_the_real_console_script():
    # Through the installed entry point (with the native-log filter on stderr): one line, code 2.
    out = subprocess.run(
        [sys.executable, "-m", "tfcam.cli", "fit", "-e", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "tfcam: error: Unknown experiment 'nope'. Choose from: caltech101, cifar10, drones, "
        "folder, imagewoof, shapes, shapes_tiny, shapes_vit, snakes"
    ]


def test_evaluate_and_predict_on_a_run(tiny_run, tmp_path):
    r = run_cli("evaluate", str(tiny_run), "--split", "test", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.output)
    assert data["split"] == "test"
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert data["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert sum(v["support"] for v in data["per_class"].values()) == data["n"] == 12

    r = run_cli("evaluate", str(tiny_run))
    assert r.exit_code == 0
    assert "precision" in r.output and "circle" in r.output

    copy = shutil.copytree(tiny_run, tmp_path / "copy")  # metrics.json gains "train"
    r = run_cli("evaluate", str(copy), "--split", "train")  # every command: the same splits
    assert r.exit_code == 0 and r.output.startswith("train: accuracy"), r.output

    import pandas as pd

    splits = pd.read_csv(tiny_run / "splits.csv")
    images = splits[splits["split"] == "test"]["path"].tolist()[:3]
    r = run_cli("predict", str(tiny_run), *images, "--top-k", "2", "--json")
    assert r.exit_code == 0, r.stderr
    preds = json.loads(r.output)
    assert [p["image"] for p in preds] == images
    table = pd.read_csv(tiny_run / "predictions_test.csv").set_index("path")
    for p in preds:
        assert len(p["top_k"]) == 2
        probs = [t["probability"] for t in p["top_k"]]
        assert probs == sorted(probs, reverse=True)
        assert p["predicted"] == table.loc[p["image"], "predicted"]
        assert p["confidence"] == pytest.approx(table.loc[p["image"], "confidence"], rel=1e-4)

    (tmp_path / "bad.jpg").write_text("not an image")
    _assert_one_line_error(
        run_cli("predict", str(tiny_run), str(tmp_path / "bad.jpg")), "bad.jpg", "not an image"
    )
    _assert_one_line_error(
        run_cli("predict", str(tiny_run), str(tmp_path / "missing.jpg")), "Input not found"
    )
    _assert_one_line_error(run_cli("predict", str(tiny_run), images[0], "--top-k", "0"), "--top-k")
    assert np.isfinite(data["loss"])


def test_report_command_rewrites_the_page(tiny_run):
    page = tiny_run / "report" / "index.html"
    page.unlink()
    r = run_cli("report", str(tiny_run))
    assert r.exit_code == 0
    html = page.read_text()
    assert "<h2>Metrics</h2>" in html and "<h2>Training</h2>" in html
    assert 'src="figures/learning_curves.png"' in html
    assert (tiny_run / "report" / "figures" / "learning_curves.png").is_file()
