"""How a run was made: ``RUN/provenance.json``, written when ``fit`` starts and updated when it ends.

It holds the command line, the versions of tfcam, TensorFlow, Keras, NumPy and Python, the device,
the start and end times, and, when the experiment came from a YAML file inside a git work tree,
that file's last commit (and whether it had uncommitted changes). A resumed run keeps its first
session and appends one entry per resume, so the record says what made every epoch. The report
shows it (:mod:`tfcam.report.html`); the idea is timm's ``args.yaml`` beside each run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tfcam.errors import UserError
from tfcam.io import read_json, write_json

log = logging.getLogger("tfcam")

FILE = "provenance.json"


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("tfcam", "tensorflow", "keras", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _device() -> str:
    """The accelerators TensorFlow sees, or the CPU (model name where the system gives one)."""
    try:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
    except Exception:  # pragma: no cover - TensorFlow without device listing
        gpus = []
    if gpus:
        names = []
        for gpu in gpus:
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name"))
            except Exception:  # pragma: no cover - details are best effort
                names.append(None)
        return ", ".join(n or g.name for n, g in zip(names, gpus, strict=True))
    return f"CPU ({_cpu_model()}, {os.cpu_count()} cores)"


def _cpu_model() -> str:
    """The processor's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def experiment_file(argv: list[str] | None = None) -> Path | None:
    """The experiment YAML the command named (``-e NAME`` / ``--experiment NAME`` or a path),
    resolved as ``tfcam`` resolves it; ``None`` when there is none or it cannot be found."""
    from tfcam.config import resolve_experiment_path

    argv = list(sys.argv if argv is None else argv)
    value = None
    for i, arg in enumerate(argv):
        if arg in ("-e", "--experiment") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--experiment="):
            value = arg.split("=", 1)[1]
    if not value:
        return None
    try:
        return resolve_experiment_path(value).resolve()
    except UserError:
        return None


def git_commit(path: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the last commit that touched ``path``, or ``None`` outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path.parent), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        commit = git("log", "-1", "--format=%H", "--", path.name)
        if not commit:
            return None  # not tracked
        dirty = bool(git("status", "--porcelain", "--", path.name))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def session(argv: list[str] | None = None) -> dict[str, Any]:
    """What describes the current process: command, versions, device, start time."""
    argv = list(sys.argv if argv is None else argv)
    command = " ".join(shlex.quote(a) for a in ["tfcam" if _is_tfcam(argv) else argv[0], *argv[1:]])
    out: dict[str, Any] = {
        "command": command,
        "cwd": os.getcwd(),
        "versions": _versions(),
        "device": _device(),
        "host": platform.node(),
        "platform": platform.platform(),
        "started": _now(),
        "ended": None,
    }
    exp = experiment_file(argv)
    if exp is not None:
        out["experiment_file"] = str(exp)
        git = git_commit(exp)
        if git:
            out["experiment_git"] = git
    return out


def _is_tfcam(argv: list[str]) -> bool:
    return bool(argv) and Path(argv[0]).name in ("tfcam", "__main__.py", "cli.py")


def record_start(run_dir: str | os.PathLike) -> Path:
    """Writes the provenance at the start of ``fit``; a resume appends to ``resumes``.

    A damaged file is not fatal: training goes on and the file is written afresh.
    """
    path = Path(run_dir) / FILE
    now = session()
    old = _read(path)
    if old:
        old.setdefault("resumes", []).append(now)
        return write_json(path, old)
    return write_json(path, now)


def record_end(run_dir: str | os.PathLike, status: str | None = None) -> Path | None:
    """Sets the end time and status of the latest session (the first, or the last resume).

    Args:
        run_dir: The run directory.
        status: The outcome; by default the ``status`` of the run's ``state.json``.
    """
    path = Path(run_dir) / FILE
    data = _read(path)
    if not data:
        return None
    if status is None:
        state = _read(Path(run_dir) / "state.json")
        status = state.get("status", "unknown")
    latest = data["resumes"][-1] if data.get("resumes") else data
    latest["ended"] = _now()
    latest["status"] = status
    return write_json(path, data)


@contextlib.contextmanager
def recorded(run_dir: str | os.PathLike) -> Iterator[None]:
    """Records the provenance around a training session: start on entry, end (whatever the
    outcome, as ``state.json`` tells it) on exit. A folder removed meanwhile is left alone."""
    record_start(run_dir)
    try:
        yield
    finally:
        if (Path(run_dir) / FILE).is_file():
            with contextlib.suppress(OSError):
                record_end(run_dir)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except UserError as e:
        log.warning("%s; writing it afresh", e)
        return {}
    return data if isinstance(data, dict) else {}
