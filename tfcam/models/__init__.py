"""Backbones and classifiers. ``registry`` and ``hub`` are TensorFlow-free; ``build`` imports Keras."""

# The keras-hub rows register themselves into BACKBONES (registry.py cannot import them: hub.py
# imports registry.py). Whoever imports tfcam.models.registry runs this file first.
from tfcam.models import hub as _hub  # noqa: F401
from tfcam.models.registry import BACKBONES, Backbone, get_backbone

__all__ = ["BACKBONES", "Backbone", "get_backbone"]
