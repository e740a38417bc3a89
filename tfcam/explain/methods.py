"""Names of the explanation methods (TensorFlow-free, so the CLI can check them up front)."""

GRADIENT_CAMS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
CAM_METHODS = (*GRADIENT_CAMS, "scorecam", "ablationcam", "eigencam")
GRADIENT_METHODS = (
    "saliency",
    "smoothgrad",
    "guided_backprop",
    "deconvnet",
    "guided_gradcam",
    "integrated_gradients",
)
METHODS = (*CAM_METHODS, *GRADIENT_METHODS)
#: Methods whose result depends on a layer (the gradient methods work on the input).
LAYER_METHODS = (*CAM_METHODS, "guided_gradcam")

#: One line per method for ``tfcam explain --list-methods`` (paper in brackets).
DESCRIPTIONS = {
    "gradcam": "channel weights = mean gradient of the score [Selvaraju et al. 2017]",
    "gradcam++": "weights from 2nd/3rd-order gradient terms [Chattopadhay et al. 2018]",
    "xgradcam": "activation-normalised gradient weights [Fu et al. 2020]",
    "hirescam": "gradient times activation, element-wise [Draelos & Carin 2020]",
    "layercam": "positive gradient times activation; good at early layers [Jiang et al. 2021]",
    "scorecam": "weights = score of the image masked by each channel [Wang et al. 2020]",
    "ablationcam": "weights = score drop when a channel is zeroed [Desai & Ramaswamy 2020]",
    "eigencam": "first principal component of the activations [Muhammad & Yeasin 2020]",
    "saliency": "absolute input gradient [Simonyan et al. 2014]",
    "smoothgrad": "input gradient averaged over noisy copies [Smilkov et al. 2017]",
    "guided_backprop": "ReLU passes positive gradients of positive inputs [Springenberg et al. 2015]",
    "deconvnet": "ReLU passes positive gradients only [Zeiler & Fergus 2014]",
    "guided_gradcam": "guided backprop times Grad-CAM [Selvaraju et al. 2017]",
    "integrated_gradients": "gradients along a path from a baseline [Sundararajan et al. 2017]",
}


def parse_methods(values) -> list[str]:
    """``["gradcam,scorecam", "saliency"]`` → ``["gradcam", "scorecam", "saliency"]``, checked.

    Raises:
        UserError: An unknown method name (the message lists all of them).
    """
    from tfcam.errors import UserError, choices_message

    out = []
    for value in values:
        for name in str(value).split(","):
            key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
            aliases = {m.replace("_", ""): m for m in METHODS}
            aliases.update(
                {
                    "gradcamplusplus": "gradcam++",
                    "guidedbackpropagation": "guided_backprop",
                    "ig": "integrated_gradients",
                    "vanilla": "saliency",
                }
            )
            name = aliases.get(key, name.strip())
            if not name:
                continue
            if name not in METHODS:
                raise UserError(choices_message("method", name, METHODS))
            if name not in out:
                out.append(name)
    return out
