"""One progress style everywhere: the formatter (counts, rate, ETA, bytes), the throttle of plain
lines, the bar's redraws, the decision on the original terminal, and ``tfcam explain`` under a
pseudo-terminal, in a pipe and with ``--json``."""

from __future__ import annotations

import io
import itertools
import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli, write_image

from tfcam import progress
from tfcam.progress import format_count, format_duration, format_rate, task


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def lines_task(clock, out, **kw):
    return task("Explaining", total=50, unit="image", style="lines", out=out, clock=clock, **kw)


# -- the formatter ---------------------------------------------------------------------------


def test_rate_and_eta_follow_the_count_and_the_clock():
    clock, out = Clock(), io.StringIO()
    with lines_task(clock, out) as bar:
        clock.t += 4.0
        bar.advance(10)
        assert bar.rate() == pytest.approx(10 / 4.0)
        assert bar.eta() == pytest.approx(40 / 2.5)  # 40 images left at 2.5 images/s
        assert bar.line() == "Explaining: 10/50 images (20%), 2.5 images/s, ETA 0:16"
        clock.t += 16.0
        bar.advance(40)
        assert bar.eta() == 0
    assert (
        out.getvalue().splitlines()[-1] == "tfcam: Explaining: 50/50 images in 0:20 (2.5 images/s)"
    )


def test_unknown_total_has_no_eta_and_no_bar():
    clock, out = Clock(), io.StringIO()
    with task("Scanning", unit="file", style="bar", out=out, clock=clock, width=80) as bar:
        clock.t += 2.0
        bar.advance(7)
        assert bar.eta() is None
        assert bar.bar_text() == "Scanning  7 files  3.5 files/s"


def test_bytes_rates_and_durations_are_readable():
    assert format_count(12_345_678, "B") == "12.3 MB"
    assert format_count(2_500_000_000, "B") == "2.5 GB"
    assert format_count(999, "B") == "999 B"
    assert format_count(12345, "image") == "12,345"
    assert format_rate(2.0e6, "B") == "2.0 MB/s"
    assert format_rate(0.05, "image") == "20.0 s/image"
    assert format_duration(7.2) == "0:08"  # rounded up: never 0:00 while time is left
    assert format_duration(3725) == "1:02:05"
    clock = Clock()
    with task("Downloading x.tgz", total=45e6, unit="B", style="off", clock=clock) as bar:
        clock.t += 6.0
        bar.advance(12.3e6)
        assert bar.line() == "Downloading x.tgz: 12.3/45.0 MB (27%), 2.0 MB/s, ETA 0:16"


# -- plain lines: at most one per interval ---------------------------------------------------


def test_lines_are_throttled_to_one_per_interval():
    clock, out = Clock(), io.StringIO()
    stamps = []
    real_write = out.write

    def write(text):
        stamps.append(clock.t)
        return real_write(text)

    out.write = write
    with task("Checking images", total=60, unit="image", style="lines", out=out, clock=clock,
              interval=5.0) as bar:  # fmt: skip
        for _ in range(60):  # 30 s of work, an image every half second
            clock.t += 0.5
            bar.advance()
    text = out.getvalue().splitlines()
    assert len(text) == 6 + 1  # at 5, 10, … 30 s, and the closing line
    periodic = stamps[:-1]  # the last write is the closing line
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(periodic))
    assert stamps[0] - 100.0 >= 5.0  # nothing in the first interval
    assert text[0].startswith("tfcam: Checking images: 10/60 images (17%)")
    assert "ETA" in text[0] and "\r" not in out.getvalue()


def test_a_short_task_prints_nothing_in_lines_mode():
    clock, out = Clock(), io.StringIO()
    with lines_task(clock, out) as bar:
        clock.t += 3.0
        bar.advance(50)
    assert out.getvalue() == ""


# -- the bar ---------------------------------------------------------------------------------


def test_bar_redraws_one_line_with_an_eta_and_ends_with_the_time_taken():
    clock, out = Clock(), io.StringIO()
    with task("Explaining", total=50, unit="image", style="bar", out=out, clock=clock,
              width=80) as bar:  # fmt: skip
        for _ in range(50):
            clock.t += 0.2
            bar.advance()
            bar.advance(0)  # a redraw within 0.1 s of the last is skipped
    text = out.getvalue()
    frames = [f.removesuffix("\x1b[K") for f in text.split("\r")[1:]]
    assert len(frames) == 1 + 50 + 1  # at 0, after each image, and the final state
    assert "\n" not in "".join(frames[:-1]) and frames[-1].endswith("\n")
    assert frames[0].startswith("Explaining  [") and "0/50 images" in frames[0]
    assert (
        frames[25]
        == "Explaining  [" + "#" * 9 + "." * 10 + "]  25/50 images   50%  5.0 images/s  ETA 0:05"
    )
    assert "in 0:10" in frames[-1] and "ETA" not in frames[-1]
    assert max(len(f.rstrip("\n")) for f in frames) <= 79


def test_bar_fits_a_narrow_terminal_keeping_the_numbers():
    clock, out = Clock(), io.StringIO()
    label = "Evaluating gradcam [1/8] (deletion and insertion)"
    with task(label, total=500, unit="step", style="bar", out=out, clock=clock, width=60) as bar:
        clock.t += 10
        bar.advance(100)
        line = bar.bar_text()
    assert len(line) <= 59 and line.endswith("100/500 steps   20%  10.0 steps/s  ETA 0:40")


def test_a_failed_task_leaves_its_bar_and_ends_the_line():
    clock, out = Clock(), io.StringIO()
    with (
        pytest.raises(KeyError),
        task("Explaining", total=4, unit="image", style="bar", out=out, clock=clock),
    ):
        raise KeyError("boom")
    assert out.getvalue().endswith("\n") and "in 0:" not in out.getvalue()


def test_log_lines_do_not_tear_the_bar(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    with task("Explaining", total=4, unit="image", style="bar", width=80) as bar:
        bar.advance()
        progress.write_line("tfcam: warning: skipped x.png")
    text = out.getvalue()
    assert "\r\x1b[Ktfcam: warning: skipped x.png\n\rExplaining  [" in text


# -- the decision, made on the original terminal ----------------------------------------------


def test_mode_is_decided_on_the_kept_terminal_not_on_the_filters_pipe(monkeypatch):
    monkeypatch.delenv("TFCAM_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    progress.configure("auto")  # an earlier `tfcam -q` in this process chose lines
    master, slave = pty.openpty()
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(os.dup(write_end), "w") as pipe_stream:
            monkeypatch.setattr(sys, "stderr", pipe_stream)
            progress.use_terminal(None)
            assert progress.mode() == "lines"  # stderr itself is a pipe
            progress.use_terminal(slave)  # what tfcam.cli.stderr keeps of the terminal
            assert progress.mode() == "bar"
            monkeypatch.setenv("TFCAM_PROGRESS", "off")
            assert progress.mode() == "off"
            monkeypatch.delenv("TFCAM_PROGRESS")
            progress.configure("lines")  # what --quiet asks for
            assert progress.mode() == "lines"
    finally:
        progress.configure("auto")
        progress.use_terminal(None)
        for fd in (master, slave, read_end, write_end):
            os.close(fd)
    with pytest.raises(ValueError, match="Choose from: auto, bar, lines, off"):
        progress.configure("fancy")


# -- tfcam explain of 50 images ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fifty(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fifty")
    rng = np.random.default_rng(0)
    for i in range(50):
        write_image(folder / f"img{i:02d}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    return folder


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TFCAM_PROGRESS"}
    env.update(PYTHONPATH=str(REPO), TERM="xterm", TF_CPP_MIN_LOG_LEVEL="2")
    return env


def test_explain_under_a_terminal_shows_a_bar_with_an_eta_and_json_stays_clean(
    tiny_run, fifty, tmp_path
):
    """stderr on a pseudo-terminal, stdout piped: the bar is drawn on the terminal (although the
    TensorFlow-noise filter replaces descriptor 2 by a pipe) and stdout holds only JSON."""
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "tfcam.cli", "explain", str(tiny_run), str(fifty),
           "--out", str(tmp_path / "out"), "--json"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=_env(), cwd=REPO
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=600)
    reader.join(timeout=10)
    os.close(master)
    terminal = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0, terminal[-3000:]
    records = json.loads(stdout)
    assert len(records) == 50
    frames = [f for f in terminal.split("\r") if f.startswith("Explaining  [")]
    assert len(frames) >= 3, terminal[-2000:]  # redrawn in place
    assert any(re.search(r"\d+/50 images .*ETA \d+:\d\d", f) for f in frames), frames
    assert re.search(r"50/50 images .* in \d+:\d\d", frames[-1]), frames[-1]


def test_explain_in_a_pipe_prints_at_most_one_progress_line_per_interval(tiny_run, fifty, tmp_path):
    cmd = [sys.executable, "-m", "tfcam.cli", "explain", str(tiny_run), str(fifty),
           "--out", str(tmp_path / "out")]  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO, timeout=600)
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr[-3000:]
    assert "\r" not in out.stderr and "\x1b[" not in out.stderr
    shown = [line for line in out.stderr.splitlines() if line.startswith("tfcam: Explaining")]
    assert len(shown) <= elapsed // progress.INTERVAL + 1, out.stderr
    assert len([line for line in out.stdout.splitlines() if "predicted" in line]) == 50


def test_explain_plain_lines_count_images_with_an_eta(tiny_run, fifty, tmp_path, monkeypatch):
    """In a pipe (here click's runner) the lines say how far, how fast and how long to go."""
    monkeypatch.setattr(progress, "INTERVAL", 0.0)  # every update shows
    monkeypatch.delenv("TFCAM_PROGRESS", raising=False)
    r = run_cli("explain", tiny_run, fifty, "--out", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == 50  # progress never on stdout
    shown = [line for line in r.stderr.splitlines() if line.startswith("tfcam: Explaining")]
    assert re.fullmatch(
        r"tfcam: Explaining: 16/50 images \(32%\), [\d.]+ images/s, ETA \d+:\d\d", shown[0]
    ), shown
    assert re.fullmatch(
        r"tfcam: Explaining: 50/50 images in \d+:\d\d \([\d.]+ images/s\)", shown[-1]
    )


# -- every long step reports through the same tasks ------------------------------------------


@pytest.fixture
def every_update(monkeypatch, capsys):
    """Plain lines on (a captured, non-terminal) stderr, one per update; returns a reader of
    the progress lines printed so far."""
    monkeypatch.setattr(progress, "INTERVAL", 0.0)
    monkeypatch.delenv("TFCAM_PROGRESS", raising=False)
    progress.configure("auto")
    progress.use_terminal(None)

    def shown(label: str) -> list[str]:
        err = capsys.readouterr().err
        return [line for line in err.splitlines() if line.startswith(f"tfcam: {label}")]

    return shown


def test_scan_counts_the_images_it_checks(every_update, tmp_path):
    from tfcam.data.pipeline import scan_files

    rng = np.random.default_rng(1)
    files = [
        write_image(tmp_path / f"s{i}.png", rng.integers(0, 255, (20, 20, 3), dtype=np.uint8))
        for i in range(12)
    ]
    (tmp_path / "bad.png").write_bytes(b"not an image")  # checked last, and counted
    scan = scan_files([*files, tmp_path / "bad.png"], image_size=32)
    assert len(scan.sizes) == 12
    lines = every_update("Checking images")
    assert lines[-1].startswith("tfcam: Checking images: 13/13 images in "), lines


def test_download_shows_bytes_rate_and_eta(every_update, tmp_path):
    from tfcam.data.download import download

    src = tmp_path / "big.bin"
    src.write_bytes(np.random.default_rng(2).bytes(3 * (1 << 20)))  # three 1-MiB reads
    download(src.as_uri(), tmp_path / "cache" / "big.bin")
    lines = every_update("Downloading big.bin")
    assert re.fullmatch(
        r"tfcam: Downloading big\.bin: 1\.0/3\.1 MB \(33%\), [\d.]+ [kMG]?B/s, ETA \d+:\d\d",
        lines[0],
    ), lines
    assert re.fullmatch(r"tfcam: Downloading big\.bin: 3\.1/3\.1 MB in \d+:\d\d .*", lines[-1])


def test_evaluate_cams_counts_each_image_of_each_method(every_update, tiny_run, tmp_path):
    from tfcam.explain.evaluate_cams import evaluate_cams

    evaluate_cams(
        tiny_run, ["gradcam"], n=4, road=False, sanity_images=2, sanity_steps=2,
        out_dir=tmp_path / "ev",
    )  # fmt: skip
    lines = every_update("")
    grad = [x for x in lines if x.startswith("tfcam: Evaluating gradcam [1/3]")]
    # 4 images × (maps, deletion, insertion): the maps in one batch, then image by image
    counts = [int(m.group(1)) for x in grad if (m := re.search(r": (\d+)/12 steps", x))]
    assert list(dict.fromkeys(counts)) == [0, 4, 5, 6, 7, 8, 9, 10, 11, 12], grad
    assert any("(deletion and insertion): 5/12 steps" in x for x in grad), grad
    for ref in ("random [2/3]", "center [3/3]"):
        assert any(
            x.startswith(f"tfcam: Evaluating {ref}") and "12/12 steps in" in x for x in lines
        )
    assert any(re.match(r"tfcam: Sanity check \(.*\): (\d+)/\1 images in", x) for x in lines), lines


def test_report_figures_count_the_sections(every_update, tiny_run, tmp_path):
    import shutil

    from tfcam.explain.report_figures import SECTIONS, build_report_figures

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    build_report_figures(run)
    lines = every_update("Drawing report figures")
    assert lines[0].startswith(f"tfcam: Drawing report figures ({SECTIONS[0]}): 0/5 sections")
    assert lines[-1].startswith("tfcam: Drawing report figures (receptive field): 5/5 sections in")


def test_receptive_field_verification_counts_layers(every_update, tiny_classifier):
    from tfcam.explain.receptive_field import receptive_fields, verify_layers

    model = tiny_classifier(image_size=32)
    checked = verify_layers(model, receptive_fields(model), max_layers=3)
    lines = every_update("Verifying receptive fields")
    n = len(checked)
    assert n >= 2
    assert lines[-1].startswith(
        f"tfcam: Verifying receptive fields ({list(checked)[-1]}): {n}/{n} layers in"
    )
