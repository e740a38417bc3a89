"""Explanations: the Grad-CAM family, gradient methods and feature maps.

``from tfcam.explain import Explainer, explain`` loads TensorFlow on first use only, so the
TensorFlow-free submodules (:mod:`tfcam.explain.methods`, :mod:`tfcam.explain.inputs`) stay cheap
to import for the command line.
"""

from __future__ import annotations

_LAZY = {
    "Explainer": "tfcam.explain.engine",
    "Explanation": "tfcam.explain.engine",
    "explain": "tfcam.explain.api",
    "cam": "tfcam.explain.api",
    "gradcam": "tfcam.explain.api",
    "saliency": "tfcam.explain.api",
    "explain_files": "tfcam.explain.files",
    "feature_maps": "tfcam.explain.features",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tfcam.explain' has no attribute {name!r}")
