"""The Python entry points (:mod:`tfcam.explain.api`): ``explain`` runs every method of the
table, and the one-call shortcuts reuse one cached explainer per model."""

from __future__ import annotations

import numpy as np
import pytest

from tfcam.errors import UserError
from tfcam.explain.api import cam, explain, gradcam, saliency
from tfcam.explain.cams import explain_cam
from tfcam.explain.engine import Explainer, explainer_for
from tfcam.explain.gradients import explain_gradients
from tfcam.explain.methods import ATTENTION_METHODS, CAM_METHODS, GRADIENT_METHODS, METHODS


def test_functional_api_reuses_one_explainer(small):
    model, x = small
    h1 = gradcam(model, x)
    ex = explainer_for(model)
    fns = dict(ex._fns)
    h2 = gradcam(model, x)
    np.testing.assert_array_equal(h1, h2)
    assert explainer_for(model) is ex and ex._fns.keys() == fns.keys()


def test_shortcuts_equal_the_engine_calls(small):
    model, x = small
    ex = Explainer(model)
    np.testing.assert_allclose(
        gradcam(model, x), explain_cam(ex, x, "gradcam").heatmap, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        cam(model, x, "layercam", layer="block2_relu", target=1),
        explain_cam(ex, x, "layercam", layers="block2_relu", targets=1).heatmap,
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        saliency(model, x, target=2),
        explain_gradients(ex, x, "saliency", targets=2).heatmap,
        rtol=1e-5,
        atol=1e-6,
    )


def test_explain_dispatches_every_method_with_its_own_options(small):
    model, x = small
    x = x[:2]
    ex = Explainer(model)
    # One option set for every method: each takes what it uses and ignores the rest.
    options = {"layers": ["block2_relu"], "targets": 1, "max_n": 4, "samples": 2, "steps": 4}
    assert set(CAM_METHODS) | set(GRADIENT_METHODS) | set(ATTENTION_METHODS) == set(METHODS)
    for method in METHODS:
        if method in ATTENTION_METHODS:  # transformers only (tests/test_vit_explain.py)
            with pytest.raises(UserError, match="reads the attention of transformer blocks"):
                explain(ex, x, method, **options)
            continue
        got = explain(ex, x, method, **options)
        assert got.method == method
        np.testing.assert_array_equal(got.targets, [1, 1])
        if method in CAM_METHODS:
            want = explain_cam(ex, x, method, layers="block2_relu", targets=1, max_n=4)
            assert set(got.heatmaps) == {"block2_relu"}, method
        else:
            # A list of layers gives guided Grad-CAM its first one.
            want = explain_gradients(
                ex, x, method, targets=1, samples=2, steps=4, layers="block2_relu"
            )
            assert set(got.heatmaps) == {method}, method
        for name in want.heatmaps:
            np.testing.assert_allclose(
                got.heatmaps[name], want.heatmaps[name], atol=1e-5, err_msg=method
            )
            np.testing.assert_allclose(got.raw[name], want.raw[name], rtol=1e-5, atol=1e-6)
    # Guided Grad-CAM at block2_relu differs from guided Grad-CAM at the default layer.
    default = explain(ex, x, "guided_gradcam", targets=1).raw["guided_gradcam"]
    at_block2 = explain(ex, x, "guided_gradcam", **options).raw["guided_gradcam"]
    assert not np.allclose(default, at_block2)


def test_explain_rejects_an_unknown_method_listing_the_choices(small):
    model, x = small
    with pytest.raises(UserError) as info:
        explain(Explainer(model), x, "gradcamm")
    message = str(info.value)
    assert message.startswith("Unknown method 'gradcamm'. Did you mean 'gradcam'")
    listed = message.split("Choose from: ", 1)[1]
    assert listed.split(", ") == list(METHODS)
