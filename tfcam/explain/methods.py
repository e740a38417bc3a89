"""The method table: every explanation method as one row, and the weighting rule of each
gradient-weighted CAM as one small function.

``tfcam explain --list-methods``, the command line's name check, the engine's dispatch and the
report all read :data:`TABLE`. Importing this module does not load TensorFlow (the command line
checks method names before it loads), so each weighting rule receives the TensorFlow module as its
first argument, as array-API code receives its namespace.

Adding a gradient-weighted CAM is one decorated function here: its rule turns the activations
``A`` of a layer and the gradients ``g = ∂score/∂A`` (both ``[N, h, w, C]``) into weighted
activations whose channel sum, after a ReLU, is the map. The engine (:mod:`tfcam.explain.cams`)
does the rest: the compiled pass, ``eigen_smooth``, ``aug_smooth``, upsampling, normalisation.
Methods with passes of their own are rows here and functions in :mod:`tfcam.explain.cams`
(``cam``), :mod:`tfcam.explain.gradients` (``gradient``) or :mod:`tfcam.explain.attention`
(``attention``: transformers only), which register under the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Kinds of method: weighted by gradients at a layer; a CAM with a pass of its own; input space;
#: read from a transformer's attention.
GRADIENT_CAM, CAM, GRADIENT, ATTENTION = "gradient_cam", "cam", "gradient", "attention"

_EPS = 1e-7


@dataclass(frozen=True)
class Method:
    """One row of the method table.

    Attributes:
        name: The name users type (``gradcam``, ``guided_backprop``).
        kind: :data:`GRADIENT_CAM`, :data:`CAM`, :data:`GRADIENT` or :data:`ATTENTION`.
        summary: What it computes, in a line.
        paper: Authors and year, e.g. ``Selvaraju et al. 2017``.
        uses_layer: Its result depends on a layer (every CAM, and guided Grad-CAM; the
            attention methods read every block).
        weights: Gradient-weighted CAMs: ``weights(tf, acts, grads)`` → weighted activations.
        aliases: Other spellings accepted on the command line.
    """

    name: str
    kind: str
    summary: str
    paper: str
    uses_layer: bool
    weights: Callable | None = None
    aliases: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        """The ``--list-methods`` line: summary and paper."""
        return f"{self.summary} [{self.paper}]"


#: ``{name: Method}`` in the order users see them: gradient CAMs, other CAMs, input space.
TABLE: dict[str, Method] = {}


def _row(name, kind, summary, paper, *, layer=None, weights=None, aliases=()) -> None:
    uses_layer = kind != GRADIENT if layer is None else layer
    TABLE[name] = Method(name, kind, summary, paper, uses_layer, weights, tuple(aliases))


def gradient_cam(name: str, summary: str, paper: str, *, aliases: tuple[str, ...] = ()):
    """Registers a gradient-weighted CAM by its weighting rule ``fn(tf, acts, grads)``."""

    def register(fn: Callable) -> Callable:
        _row(name, GRADIENT_CAM, summary, paper, weights=fn, aliases=aliases)
        return fn

    return register


# --------------------------------------------------------------------------------------------
# Gradient-weighted CAMs: A and g are [N, h, w, C]; each returns weighted activations.


@gradient_cam("gradcam", "channel weights = mean gradient of the score", "Selvaraju et al. 2017")
def gradcam(tf, acts, grads):
    """Grad-CAM — Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017: ``ReLU(Σ_k mean(∂y/∂A_k) · A_k)``."""
    return acts * tf.reduce_mean(grads, axis=[1, 2], keepdims=True)


@gradient_cam(
    "gradcam++",
    "weights from 2nd/3rd-order gradient terms",
    "Chattopadhay et al. 2018",
    aliases=("gradcamplusplus",),
)
def gradcam_plus_plus(tf, acts, grads):
    """Grad-CAM++ — Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual
    Explanations for Deep Convolutional Networks", WACV 2018. Pixel weights
    ``α = g² / (2g² + ΣA · g³)`` (closed form for an exponential score), channel weights
    ``Σ α · ReLU(g)``."""
    g2 = tf.square(grads)
    denom = 2.0 * g2 + tf.reduce_sum(acts, axis=[1, 2], keepdims=True) * g2 * grads
    alpha = tf.where(grads != 0.0, g2 / tf.where(denom != 0.0, denom, tf.ones_like(denom)), 0.0)
    return acts * tf.reduce_sum(alpha * tf.nn.relu(grads), axis=[1, 2], keepdims=True)


@gradient_cam("xgradcam", "activation-normalised gradient weights", "Fu et al. 2020")
def xgradcam(tf, acts, grads):
    """XGrad-CAM — Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and
    Explanation of CNNs", BMVC 2020. Channel weights ``Σ(g · A) / ΣA``."""
    sum_a = tf.reduce_sum(acts, axis=[1, 2], keepdims=True)
    return acts * tf.reduce_sum(grads * acts, axis=[1, 2], keepdims=True) / (sum_a + _EPS)


@gradient_cam("hirescam", "gradient times activation, element-wise", "Draelos & Carin 2020")
def hirescam(tf, acts, grads):
    """HiRes-CAM — Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations
    of convolutional neural networks", 2020. Element-wise ``ReLU(Σ_k g_k ⊙ A_k)``."""
    return acts * grads


@gradient_cam(
    "layercam",
    "positive gradient times activation; good at early layers",
    "Jiang et al. 2021",
)
def layercam(tf, acts, grads):
    """Layer-CAM — Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization", IEEE TIP 2021. Element-wise ``ReLU(Σ_k ReLU(g_k) ⊙ A_k)``."""
    return acts * tf.nn.relu(grads)


# --------------------------------------------------------------------------------------------
# CAMs with passes of their own (tfcam.explain.cams) and input-space methods
# (tfcam.explain.gradients); their papers are cited where they are computed.

_row(
    "scorecam",
    CAM,
    "weights = score of the image masked by each channel",
    "Wang et al. 2020",
)
_row("ablationcam", CAM, "weights = score drop when a channel is zeroed", "Desai & Ramaswamy 2020")
_row("eigencam", CAM, "first principal component of the activations", "Muhammad & Yeasin 2020")
_row("saliency", GRADIENT, "absolute input gradient", "Simonyan et al. 2014", aliases=("vanilla",))
_row("smoothgrad", GRADIENT, "input gradient averaged over noisy copies", "Smilkov et al. 2017")
_row(
    "guided_backprop",
    GRADIENT,
    "ReLU passes positive gradients of positive inputs",
    "Springenberg et al. 2015",
    aliases=("guidedbackpropagation",),
)
_row("deconvnet", GRADIENT, "ReLU passes positive gradients only", "Zeiler & Fergus 2014")
_row(
    "guided_gradcam",
    GRADIENT,
    "guided backprop times Grad-CAM",
    "Selvaraju et al. 2017",
    layer=True,
)
_row(
    "integrated_gradients",
    GRADIENT,
    "gradients along a path from a baseline",
    "Sundararajan et al. 2017",
    aliases=("ig",),
)

_row(
    "attention_rollout",
    ATTENTION,
    "attention + identity, row-normalised, multiplied over blocks (transformers)",
    "Abnar & Zuidema 2020",
    layer=False,
    aliases=("rollout",),
)
_row(
    "gradient_attention",
    ATTENTION,
    "attention weighted by its positive gradient, accumulated over blocks (transformers)",
    "Chefer, Gur & Wolf 2021",
    layer=False,
    aliases=("chefer", "grad_attention", "generic_attention"),
)

# Views of the table as it stands after this module's rows (code that must see rows registered
# later, e.g. by a user's own rule, reads TABLE itself).
METHODS = tuple(TABLE)
GRADIENT_CAMS = tuple(n for n, m in TABLE.items() if m.kind == GRADIENT_CAM)
CAM_METHODS = tuple(n for n, m in TABLE.items() if m.kind in (GRADIENT_CAM, CAM))
GRADIENT_METHODS = tuple(n for n, m in TABLE.items() if m.kind == GRADIENT)
ATTENTION_METHODS = tuple(n for n, m in TABLE.items() if m.kind == ATTENTION)
#: Methods whose result depends on a layer (the gradient methods work on the input).
LAYER_METHODS = tuple(n for n, m in TABLE.items() if m.uses_layer)
#: One line per method for ``tfcam explain --list-methods`` (paper in brackets).
DESCRIPTIONS = {n: m.description for n, m in TABLE.items()}


def registrar(implementations: dict[str, Callable]) -> Callable[[str], Callable]:
    """A decorator factory filing implementations under the names of table rows:
    ``cam_pass = registrar(PASSES)``, then ``@cam_pass("scorecam")`` above a function."""

    def named(name: str) -> Callable[[Callable], Callable]:
        def register(fn: Callable) -> Callable:
            implementations[name] = fn
            return fn

        return register

    return named


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")


def method_lines() -> list[str]:
    """``--list-methods``: one aligned line per method, its summary and paper."""
    width = max(map(len, TABLE))
    return [f"{name:<{width}}  {m.description}" for name, m in TABLE.items()]


def parse_methods(values) -> list[str]:
    """``["gradcam,scorecam", "saliency"]`` → ``["gradcam", "scorecam", "saliency"]``, checked.

    Names are matched ignoring case, ``-``, ``_`` and spaces, and each method's aliases count.

    Raises:
        UserError: An unknown method name (the message lists all of them).
    """
    from tfcam.errors import UserError, choices_message

    aliases = {_key(n): n for n in TABLE}
    aliases.update({_key(a): n for n, m in TABLE.items() for a in m.aliases})
    out = []
    for value in values:
        for name in str(value).split(","):
            name = aliases.get(_key(name), name.strip())
            if not name:
                continue
            if name not in TABLE:
                raise UserError(choices_message("method", name, list(TABLE)))
            if name not in out:
                out.append(name)
    return out
