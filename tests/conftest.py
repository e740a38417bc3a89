"""Shared fixtures: quiet TensorFlow, a private dataset cache, tiny image folders, the shared data,
small random models (``tiny_classifier``, ``small``), finished runs, and ``run_cli``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    env = os.environ.get("TFCAM_SHARED_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared() -> Path:
    """The offline material of ../shared/data; tests that need it skip with a reason if absent."""
    path = shared_data()
    if not (path / "README.md").is_file():
        pytest.skip(f"shared test material not found at {path} (set TFCAM_SHARED_DATA)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Generated datasets go to a per-session cache unless CI points TFCAM_CACHE_DIR somewhere."""
    if "TFCAM_CACHE_DIR" not in os.environ:
        os.environ["TFCAM_CACHE_DIR"] = str(tmp_path_factory.mktemp("tfcam-cache"))
    yield


def write_image(path: Path, array: np.ndarray, **save_kwargs) -> Path:
    """Saves a uint8 array with Pillow, the format taken from the suffix."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_kwargs)
    return path


def chromium() -> str:
    """Debian's Chromium for the browser tests: skipped where it is missing, failed instead when
    ``TFCAM_REQUIRE_BROWSER=1`` (as in ``.ci/run``)."""
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("TFCAM_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed but TFCAM_REQUIRE_BROWSER=1 (as in .ci/run)")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    return exe


def run_cli(*args, **kwargs):
    """Invokes ``tfcam`` in-process with click's ``CliRunner`` (arguments made strings); returns
    the click ``Result`` (``exit_code``, ``output``, ``stdout``, ``stderr``, ``exception``).

    Keyword arguments go to ``CliRunner.invoke`` (``input``, ``env``, ``catch_exceptions`` …).
    """
    from click.testing import CliRunner

    from tfcam.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="session")
def tiny_classifier():
    """A factory of small random models: ``tiny_classifier(backbone="simple_cnn", num_classes=4,
    image_size=48, seed=3, **kwargs)`` seeds Keras, then calls ``build_classifier(…,
    weights=None)`` (``kwargs`` go to it: ``binary``, ``options``, ``head`` …)."""

    def make(
        backbone: str = "simple_cnn",
        num_classes: int = 4,
        image_size=48,
        seed: int = 3,
        **kwargs,
    ):
        import keras

        from tfcam.models.build import build_classifier

        keras.utils.set_random_seed(seed)
        return build_classifier(
            backbone=backbone,
            num_classes=num_classes,
            image_size=image_size,
            weights=None,
            **kwargs,
        )

    return make


@pytest.fixture(scope="module")
def small(tiny_classifier):
    """A random ``simple_cnn`` (4 classes, 48 px, seed 3) and four random images for it."""
    model = tiny_classifier()
    x = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32")
    return model, x


def make_folder(
    root: Path, classes=("a", "b"), per_class: int = 6, size: int = 24, seed: int = 0
) -> Path:
    """Class folders of small PNGs whose class is learnable (mean brightness differs by class)."""
    rng = np.random.default_rng(seed)
    for ci, cls in enumerate(classes):
        for i in range(per_class):
            base = 40 + 170 * ci / max(len(classes) - 1, 1)
            img = np.clip(rng.normal(base, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            write_image(root / cls / f"{cls}_{i:03d}.png", img)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One finished run of the ``shapes_tiny`` experiment, shared by tests that only read it."""
    from tfcam.config import load_experiment
    from tfcam.train.fit import fit

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    fit(load_experiment("shapes_tiny"), run_dir, verbose=0)
    return run_dir


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory):
    """The `shapes` experiment trained as `make demo` trains it (slow: about two minutes)."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("runs") / "shapes"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfcam.cli",
            "fit",
            "--experiment",
            "shapes",
            "--run-dir",
            str(run_dir),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return run_dir


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``make test`` (pytest-xdist, ``--dist loadgroup``) each test file runs in one worker,
    so its module fixtures are built once; the tests that read the trained demo run
    (``shapes_run``, two minutes of training) share one worker wherever they are."""
    for item in items:
        group = "shapes_run" if "shapes_run" in item.fixturenames else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))
