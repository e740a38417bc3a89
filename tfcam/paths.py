"""Where things live: the shared test material, the dataset cache, the bundled experiments."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent


def shared_data_dir() -> Path:
    """The folder of offline material (weights, photos): ``$TFCAM_SHARED_DATA`` or ``../shared/data``.

    The relative default is tried against the current directory first, then against the checkout
    that holds this package (for editable installs run from elsewhere).
    """
    env = os.environ.get("TFCAM_SHARED_DATA")
    if env:
        return Path(env).expanduser()
    candidates = [
        Path.cwd() / ".." / "shared" / "data",
        PACKAGE_ROOT.parent.parent / "shared" / "data",
    ]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return candidates[0]


def cache_dir() -> Path:
    """Where generated and downloaded datasets are kept: ``$TFCAM_CACHE_DIR`` or ``~/.cache/tfcam``."""
    env = os.environ.get("TFCAM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tfcam"


def experiments_dir() -> Path:
    """The bundled experiment YAML files (installed as the package ``tfcam.experiments``)."""
    import tfcam.experiments

    return Path(tfcam.experiments.__file__).resolve().parent
