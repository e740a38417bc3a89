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
