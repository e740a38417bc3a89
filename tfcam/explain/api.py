"""The Python entry points: any method on a batch of arrays, and one-call shortcuts.

``explain(explainer, images, method)`` runs any row of :data:`tfcam.explain.methods.TABLE`;
``cam``, ``gradcam`` and ``saliency`` take a Keras model directly and reuse its cached
:class:`~tfcam.explain.engine.Explainer` (graphs and compiled functions built once). Files in
and pictures out are :mod:`tfcam.explain.files`.
"""

from __future__ import annotations

import keras
import numpy as np

from tfcam.errors import UserError, choices_message
from tfcam.explain.cams import explain_cam
from tfcam.explain.engine import Explainer, Explanation, explainer_for
from tfcam.explain.gradients import explain_gradients
from tfcam.explain.methods import CAM, GRADIENT_CAM, TABLE

_CAM_OPTIONS = ("layers", "targets", "eigen_smooth", "aug_smooth", "max_n", "chunk")
_GRADIENT_OPTIONS = ("targets", "samples", "noise", "steps", "baseline", "layers", "seed")


def explain(explainer: Explainer, images: np.ndarray, method: str, **options) -> Explanation:
    """Any method of :data:`tfcam.explain.methods.METHODS` on a batch of images.

    Options not used by the method are ignored, so one option set serves a list of methods.
    """
    if method not in TABLE:
        raise UserError(choices_message("method", method, list(TABLE)))
    if TABLE[method].kind in (GRADIENT_CAM, CAM):
        opts = {k: v for k, v in options.items() if k in _CAM_OPTIONS}
        return explain_cam(explainer, images, method, **opts)
    opts = {k: v for k, v in options.items() if k in _GRADIENT_OPTIONS}
    if isinstance(opts.get("layers"), (list, tuple)) and opts["layers"]:
        opts["layers"] = opts["layers"][0]
    return explain_gradients(explainer, images, method, **opts)


def cam(
    model: keras.Model,
    images,
    method: str = "gradcam",
    *,
    layer: str | None = None,
    target=None,
    **options,
) -> np.ndarray:
    """Functional shortcut: heatmaps ``[N, H, W]`` in [0, 1] of one layer with one method.

    The model's explainer (graphs and compiled functions) is built on first use and reused.
    """
    explanation = explain_cam(
        explainer_for(model), images, method, layers=layer, targets=target, **options
    )
    return explanation.heatmap


def gradcam(
    model: keras.Model, images, *, layer: str | None = None, target=None, **options
) -> np.ndarray:
    """Grad-CAM heatmaps ``[N, H, W]`` in [0, 1] (Selvaraju et al., ICCV 2017)."""
    return cam(model, images, "gradcam", layer=layer, target=target, **options)


def saliency(model: keras.Model, images, *, target=None) -> np.ndarray:
    """Saliency heatmaps ``[N, H, W]`` in [0, 1] (Simonyan et al. 2014)."""
    return explain_gradients(explainer_for(model), images, "saliency", targets=target).heatmap
