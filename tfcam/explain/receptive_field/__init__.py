"""Receptive fields of Keras models: analytic, empirical and effective; the patches units see.

* :mod:`~tfcam.explain.receptive_field.analytic`: size, stride and padding of every layer, from
  the graph alone (Araujo, Norris & Sim, Distill 2019).
* :mod:`~tfcam.explain.receptive_field.verification`: the analytic box checked against the support
  of an input gradient (:func:`verify`).
* :mod:`~tfcam.explain.receptive_field.effective`: the effective receptive field (Luo et al.,
  NeurIPS 2016).
* :mod:`~tfcam.explain.receptive_field.patches`: the input patches the most active units see.
* :mod:`~tfcam.explain.receptive_field.describe`: what ``tfcam receptive-field`` reports.

"""

from __future__ import annotations

from tfcam.explain.features import layer_activations
from tfcam.explain.receptive_field.analytic import (
    GLOBAL,
    LOCAL,
    UNSUPPORTED,
    Field,
    field_line,
    fields_table,
    layer_choice_error,
    receptive_field,
    receptive_fields,
)
from tfcam.explain.receptive_field.describe import (
    describe_layer,
    describe_table,
    load_model_for_fields,
    table_text,
)
from tfcam.explain.receptive_field.effective import (
    EffectiveField,
    effective_field_figure,
    effective_receptive_field,
    mass_radius,
)
from tfcam.explain.receptive_field.patches import (
    Patch,
    top_patches_across,
    top_units,
    write_patches,
)
from tfcam.explain.receptive_field.verification import Verification, verify, verify_layers

__all__ = [
    "GLOBAL",
    "LOCAL",
    "UNSUPPORTED",
    "EffectiveField",
    "Field",
    "Patch",
    "Verification",
    "describe_layer",
    "describe_table",
    "effective_field_figure",
    "effective_receptive_field",
    "field_line",
    "fields_table",
    "layer_activations",
    "layer_choice_error",
    "load_model_for_fields",
    "mass_radius",
    "receptive_field",
    "receptive_fields",
    "table_text",
    "top_patches_across",
    "top_units",
    "verify",
    "verify_layers",
    "write_patches",
]
