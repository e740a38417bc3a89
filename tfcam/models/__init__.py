"""Backbones and classifiers. ``registry`` is TensorFlow-free; ``build`` imports Keras."""

from tfcam.models.registry import BACKBONES, Backbone, get_backbone

__all__ = ["BACKBONES", "Backbone", "get_backbone"]
