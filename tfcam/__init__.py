"""tfcam: transfer learning for image classification with Keras 3, and the heatmaps that show why.

The notebook face::

    import tfcam

    run = tfcam.load_run("runs/shapes-…")          # model, class_names, config, splits, metrics
    run.predict("photos/")                          # a DataFrame of top-k classes
    run.explain(["a.jpg", "b.jpg"], "gradcam").show()
    tfcam.Explainer(any_keras_classifier).explain(images, "gradcam").heatmap   # [N, H, W]

Importing the package is cheap: it sets the Keras backend to TensorFlow (unless the user chose one
already) and arranges (:mod:`tfcam.startup`) that tfcam's Keras layers are registered and
TensorFlow's native start-up lines stay out of the notebook when TensorFlow and Keras load. The
names above load TensorFlow on first use only, so ``tfcam --help`` never does.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"

from tfcam import startup  # after the backend is chosen
from tfcam.errors import UserError

startup.install()

#: Names loaded on first use: ``{name: module}``.
_LAZY = {
    "load_run": "tfcam.notebook",
    "LoadedRun": "tfcam.notebook",
    "Explainer": "tfcam.notebook",
    "fit": "tfcam.notebook",
    "Explanation": "tfcam.explain.explanation",
    "cam": "tfcam.explain.api",
    "gradcam": "tfcam.explain.api",
    "saliency": "tfcam.explain.api",
}

#: Subpackages reachable as attributes before anything imported them (``tfcam.explain.explain``).
_SUBPACKAGES = ("config", "data", "explain", "models", "report", "runs", "train", "viz")

__all__ = ["UserError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f"tfcam.{name}")
    raise AttributeError(f"module 'tfcam' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
