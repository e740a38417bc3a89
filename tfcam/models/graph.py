"""Graph helpers for Keras functional models: walking a graph with custom values, inlining nested
sub-models so every layer is reachable by name, and folding batch normalisation into the
convolutions before it for faster inference passes. The user's model is never modified."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", str(fn)).lower()


def walk(model: keras.Model, inputs, fn: Callable) -> object:
    """Runs ``model``'s graph on ``inputs`` with ``fn(op)`` giving the callable for each layer.

    Nested functional models and ``Sequential`` models are walked into, so ``fn`` sees the
    innermost layers. Values need not be tensors: the receptive-field calculator walks with field
    descriptions, :func:`fold_batchnorm` with symbolic tensors.
    """
    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = _nested_or(fn)(layer)(x)
        return x
    return model._run_through_graph(inputs, operation_fn=_nested_or(fn))


def _nested_or(fn: Callable) -> Callable:
    def choose(op):
        if isinstance(op, keras.Model):
            return lambda *a, **k: walk(op, a[0] if len(a) == 1 else list(a), fn)
        return fn(op)

    return choose


def outputs_of(layer) -> list:
    """The output tensors of a layer (empty when it has none yet, e.g. never called)."""
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return []
    return list(out) if isinstance(out, (list, tuple)) else [out]


def is_nested(model: keras.Model) -> bool:
    """Whether the model holds a sub-model as a layer (a backbone inside a classifier)."""
    return any(isinstance(layer, keras.Model) for layer in model.layers)


def flatten_model(model: keras.Model) -> keras.Model:
    """An equivalent model in which nested sub-models (a backbone inside a classifier, the usual
    ``Sequential([base, pooling, dense])``) are inlined, so every inner layer is reachable by name.

    The user's model is not touched: layers are re-created from their configs and their weights
    copied. Explaining an inner layer of a nested model is where peer tools fail with "Graph
    disconnected"; here it is an ordinary layer. A model without nesting is returned as is.
    """
    if not is_nested(model):
        return model
    taken: set[str] = set()

    def clone(layer):
        name = layer.name
        if name in taken:
            i = 2
            while f"{name}_{i}" in taken:
                i += 1
            name = f"{name}_{i}"
        taken.add(name)
        cfg = layer.get_config()
        cfg["name"] = name
        return layer.__class__.from_config(cfg)

    copies: list[tuple] = []

    def run(m, x):
        if isinstance(m, keras.Sequential):
            for layer in m.layers:
                x = apply(layer, x)
            return x
        if isinstance(m, keras.Model):
            return m._run_through_graph(
                x, operation_fn=lambda op: lambda *a, **k: apply(op, *a, **k)
            )
        raise TypeError(type(m))

    def apply(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.InputLayer):
            return args[0]
        if isinstance(layer, keras.Model):
            return run(layer, args[0] if len(args) == 1 else list(args))
        new = clone(layer)
        kwargs.pop("training", None)
        out = new(*args, **kwargs)
        copies.append((layer, new))
        return out

    src = model.inputs[0]
    inp = keras.Input(
        shape=src.shape[1:], dtype=src.dtype, name=getattr(src, "name", None) or "image"
    )
    out = run(model, inp)
    flat = keras.Model(inp, out, name=f"{model.name}")
    for old, new in copies:
        if getattr(old, "weights", None):  # operations (``a + b``) have none
            new.set_weights(old.get_weights())
    return flat


def _foldable_pairs(model: keras.Model) -> dict[str, str]:
    """``{conv name: batch-norm name}`` for convolutions whose only consumer is a BatchNorm."""
    consumers: dict[int, int] = {}
    producer_of: dict[int, Any] = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for kt in node.input_tensors:
                op = kt._keras_history.operation
                consumers[id(op)] = consumers.get(id(op), 0) + 1
                if isinstance(node.operation, keras.layers.BatchNormalization):
                    producer_of[id(node.operation)] = op
    for kt in model.outputs:
        op = kt._keras_history.operation
        consumers[id(op)] = consumers.get(id(op), 0) + 1
    pairs = {}
    for layer in model.layers:
        conv = producer_of.get(id(layer))
        if (
            conv is None
            or type(conv) not in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
            or consumers.get(id(conv)) != 1
            or _activation_name(conv.activation) != "linear"
            or conv.data_format != "channels_last"
            or layer.axis not in (-1, 3)
            or len(conv._inbound_nodes) != 1
            or len(layer._inbound_nodes) != 1
        ):
            continue
        pairs[conv.name] = layer.name
    return pairs


def fold_batchnorm(model: keras.Model, output_ops: Sequence[str] = ()) -> keras.Model:
    """A copy for inference in which each convolution followed only by a BatchNormalization
    carries the normalisation in its kernel and bias (``w·γ/√(σ²+ε)``, ``(b-μ)·γ/√(σ²+ε)+β``).

    Forward passes get cheaper (no separate normalisation pass over every feature map) and the
    outputs are unchanged up to float rounding. Intermediate convolution outputs change meaning,
    so the copy serves passes that need only the final outputs (Score-CAM's masked copies).

    Args:
        model: A flat functional model (not modified: folded layers are new, the rest shared).
        output_ops: Names of layers whose outputs the copy returns instead of the model's.
    """
    pairs = _foldable_pairs(model)
    if not pairs and not output_ops:
        return model
    bn_names = set(pairs.values())
    produced: dict[str, Any] = {}
    folded_layers, copies = [], []

    def fn(op):
        if op.name in bn_names:
            call = lambda *a, **k: a[0]  # noqa: E731 - the conv before it carries the BN
        elif op.name in pairs:
            bn = model.get_layer(pairs[op.name])
            cfg = op.get_config()
            cfg["use_bias"] = True
            new = type(op).from_config(cfg)
            folded_layers.append((op, bn, new))
            call = new
        else:
            # A fresh copy: calling the user's layer on new tensors would give it a second
            # inbound node, after which ``layer.output`` is ambiguous.
            call = type(op).from_config(op.get_config())
            copies.append((op, call))

        def apply(*args, **kwargs):
            kwargs.pop("training", None)
            out = call(*args, **kwargs)
            produced.setdefault(op.name, out)
            return out

        return apply

    inp = keras.Input(shape=model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    outs = walk(model, inp, fn)
    for old, new in copies:
        if getattr(old, "weights", None):  # operations (``a + b``) have none
            new.set_weights(old.get_weights())
    for conv, bn, new in folded_layers:
        gamma = bn.gamma.numpy() if bn.gamma is not None else 1.0
        beta = bn.beta.numpy() if bn.beta is not None else 0.0
        scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        shift = beta - bn.moving_mean.numpy() * scale
        kernel = (
            conv.depthwise_kernel if hasattr(conv, "depthwise_kernel") else conv.kernel
        ).numpy()
        if isinstance(conv, keras.layers.DepthwiseConv2D):
            kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
        else:
            kernel = kernel * scale
        bias = conv.bias.numpy() * scale + shift if conv.use_bias else shift
        new.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    outputs = outs
    if output_ops:
        outputs = [produced[n] for n in output_ops]
        outputs = outputs[0] if len(outputs) == 1 else outputs
    return keras.Model(inp, outputs, name=f"{model.name}_folded")
