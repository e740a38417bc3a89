"""The Python entry points: any method on a batch of arrays, and one-call shortcuts.

``explain(explainer, images, method)`` runs any row of :data:`tfcam.explain.methods.TABLE`;
``cam``, ``gradcam`` and ``saliency`` take a Keras model directly and reuse its cached
:class:`~tfcam.explain.engine.Explainer` (graphs and compiled functions built once). Images may be
a batch as the model takes it or anything :func:`tfcam.explain.images.to_batch` reads (paths,
folders, Pillow images, arrays of another size, tensors). Files in and pictures out are
:mod:`tfcam.explain.files`; the notebook face is :class:`tfcam.Explainer`.
"""

from __future__ import annotations

import keras
import numpy as np

from tfcam.errors import UserError, choices_message
from tfcam.explain.attention import explain_attention
from tfcam.explain.cams import explain_cam
from tfcam.explain.engine import Explainer, Explanation, explainer_for
from tfcam.explain.gradients import explain_gradients
from tfcam.explain.images import to_batch
from tfcam.explain.methods import ATTENTION, CAM, GRADIENT_CAM, TABLE

_CAM_OPTIONS = ("layers", "targets", "eigen_smooth", "aug_smooth", "max_n", "chunk")
_GRADIENT_OPTIONS = ("targets", "samples", "noise", "steps", "baseline", "layers", "seed")


def pixels(explainer: Explainer, images) -> np.ndarray:
    """``images`` as the explainer's model takes them: float32 ``[N, H, W, 3]``, 0–255.

    A numeric array already at the model's input size is used as it is; anything else is read
    and resized by :func:`tfcam.explain.images.to_batch` (the explainer's ``resize`` mode if it
    has one, else ``stretch``).
    """
    if (
        isinstance(images, np.ndarray)
        and images.ndim in (3, 4)
        and images.shape[-3:] == (*explainer.input_size, 3)
        and np.issubdtype(images.dtype, np.number)
    ):
        return images
    return to_batch(images, explainer.input_size, getattr(explainer, "resize", "stretch")).images


def explain(explainer: Explainer, images, method: str, **options) -> Explanation:
    """Any method of :data:`tfcam.explain.methods.METHODS` on a batch of images.

    Options not used by the method are ignored, so one option set serves a list of methods.
    """
    if method not in TABLE:
        raise UserError(choices_message("method", method, list(TABLE)))
    if TABLE[method].kind == ATTENTION:
        return explain_attention(
            explainer, pixels(explainer, images), method, targets=options.get("targets")
        )
    images = pixels(explainer, images)
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
    explainer = explainer_for(model)
    explanation = explain_cam(
        explainer, pixels(explainer, images), method, layers=layer, targets=target, **options
    )
    return explanation.heatmap


def gradcam(
    model: keras.Model, images, *, layer: str | None = None, target=None, **options
) -> np.ndarray:
    """Grad-CAM heatmaps ``[N, H, W]`` in [0, 1] (Selvaraju et al., ICCV 2017)."""
    return cam(model, images, "gradcam", layer=layer, target=target, **options)


def saliency(model: keras.Model, images, *, target=None) -> np.ndarray:
    """Saliency heatmaps ``[N, H, W]`` in [0, 1] (Simonyan et al. 2014)."""
    explainer = explainer_for(model)
    return explain_gradients(
        explainer, pixels(explainer, images), "saliency", targets=target
    ).heatmap
