"""Explanation speed, measured side by side in one process.

For MobileNetV2 (ImageNet weights from ../shared/data when present) and ResNet50 (random weights:
only time matters) at 224 px, on a batch of 8 real photos from ../shared/data, it prints for each
method:

* ``x forward``: the method's time divided by one compiled forward pass of the same batch;
* ``vs tf-keras-vis``: tf-keras-vis's time divided by tfcam's, for the methods both have
  (configured alike: same layer, logit scores, Score-CAM ``max_N=64``, SmoothGrad 20 samples).

Each time is the fastest of several runs after one warm-up run (which pays for tracing); the
fastest run is the one least disturbed by other work on the machine, and the forward pass is
timed again beside every method so that both sides of a ratio see the same machine.

The ViT section (``vit_tiny``: ViT-Tiny/16 at 224 px, 12 blocks of 192 dims and 3 heads, keras-hub
layers in tfcam's flat layout, random weights: only time matters) times Grad-CAM and the two
attention methods against one forward pass, each run alternating with a forward run so that both
see the same load, and prints wall and CPU time (the machine is shared: CPU time is the steadier).

    python bench/bench_explain.py [--models mobilenet_v2,resnet50,vit_tiny] [--repeats 5] [--skip-tfkv]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import numpy as np
import tensorflow as tf

from tfcam.explain.api import explain
from tfcam.explain.engine import Explainer
from tfcam.models.build import build_classifier
from tfcam.paths import shared_data_dir

TARGETS = {
    "gradcam": 1.3,
    "gradcam++": 1.4,
    "saliency": 3.5,
    "guided_backprop": 3.5,
    "smoothgrad": 65,
    "scorecam": 70,
}
TFKV_TARGETS = {"gradcam": 4.0, "scorecam": 3.0}
METHODS = [
    "gradcam",
    "gradcam++",
    "xgradcam",
    "hirescam",
    "layercam",
    "eigencam",
    "ablationcam",
    "scorecam",
    "saliency",
    "guided_backprop",
    "deconvnet",
    "guided_gradcam",
    "smoothgrad",
    "integrated_gradients",
]
OPTIONS = {"max_n": 64, "samples": 20, "steps": 32}
SLOW = {"scorecam", "smoothgrad", "integrated_gradients", "ablationcam"}


def timed(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls, after a warm-up call (tracing and first-call costs)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def batch_of_photos(n: int) -> np.ndarray:
    """Real photos (the Grad-CAM demo images, then hymenoptera) resized to 224; noise if absent.

    Real images matter: Score-CAM's channel choice, and so its cost in tf-keras-vis (which pools the
    chosen channels over the batch), depends on what the images show.
    """
    from tfcam.data.pipeline import read_images

    root = shared_data_dir()
    files = sorted((root / "cam-examples").glob("*"))
    files += sorted((root / "hymenoptera" / "val" / "bees").glob("*.jpg"))
    files = [str(f) for f in files[:n]]
    if len(files) < n:
        print(f"(shared photos not found under {root}: timing on noise images)")
        return np.random.default_rng(0).uniform(0, 255, (n, 224, 224, 3)).astype("float32")
    return read_images(files, 224)


def tfkv_runner(model, layer: str, method: str, x, targets):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    cls = {
        "gradcam": Gradcam,
        "gradcam++": GradcamPlusPlus,
        "layercam": Layercam,
        "scorecam": Scorecam,
        "saliency": Saliency,
        "smoothgrad": Saliency,
    }.get(method)
    if cls is None:
        return None
    vis = cls(model, model_modifier=ReplaceToLinear(), clone=True)
    score = CategoricalScore([int(t) for t in targets])
    if method == "saliency":
        return lambda: vis(score, x)
    if method == "smoothgrad":
        return lambda: vis(score, x, smooth_samples=20, smooth_noise=0.2)
    kw = {"max_N": 64} if method == "scorecam" else {}
    return lambda: vis(score, x, penultimate_layer=layer, seek_penultimate_conv_layer=False, **kw)


def bench_model(name: str, args) -> bool:
    """Prints one model's table; False when a target was missed."""
    weights = None
    if name == "mobilenet_v2":
        path = shared_data_dir() / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5"
        weights = path if path.is_file() else None
    model = build_classifier(backbone=name, num_classes=10, image_size=224, weights=weights)
    x = batch_of_photos(args.batch)
    ex = Explainer(model, batch_size=max(32, args.batch))
    layer = ex.resolve_layers(None)[0]
    forward = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    xt = tf.constant(x)

    def t_forward() -> float:
        return timed(lambda: forward(xt).numpy(), args.repeats * 2)

    first_fwd = t_forward()
    targets = explain(ex, x, "gradcam").targets
    print(
        f"== {name} ({'ImageNet weights' if weights else 'random weights'}), layer {layer}: "
        f"one forward pass of the batch {first_fwd * 1000:.1f} ms"
    )
    print(
        f"{'method':22s} {'tfcam ms':>10s} {'fwd ms':>8s} {'x forward':>10s} {'target':>8s} "
        f"{'tf-keras-vis ms':>16s} {'vs tf-keras-vis':>16s} {'target':>8s}"
    )
    ok = True
    for method in args.methods.split(","):
        reps = 2 if method in SLOW else args.repeats
        t = timed(lambda m=method: explain(ex, x, m, targets=targets, **OPTIONS), reps)
        t_fwd = t_forward()
        ratio = t / t_fwd
        tgt = TARGETS.get(method)
        line = (
            f"{method:22s} {t * 1000:10.1f} {t_fwd * 1000:8.1f} {ratio:10.2f} "
            f"{('≤' + str(tgt)) if tgt else '':>8s}"
        )
        if tgt and ratio > tgt:
            ok = False
            line += "  MISSED"
        runner = None if args.skip_tfkv else tfkv_runner(model, layer, method, x, targets)
        if runner is not None:
            t_kv = timed(runner, 1 if method in SLOW else max(2, args.repeats // 2))
            speedup = t_kv / t
            want = TFKV_TARGETS.get(method)
            line += f" {t_kv * 1000:16.1f} {speedup:15.1f}x {('≥' + str(want) + 'x') if want else '':>8s}"
            if want and speedup < want:
                ok = False
                line += "  MISSED"
        print(line, flush=True)
    print()
    return ok


VIT_TARGETS = {"gradcam": 1.3, "attention_rollout": 1.2, "gradient_attention": None}


def side_by_side(fn, reference, repeats: int):
    """``((wall, cpu) of fn, (wall, cpu) of reference)``: each the fastest of ``repeats`` runs,
    the two alternating after a warm-up call each."""
    fn(), reference()
    runs: dict = {fn: [], reference: []}
    for _ in range(repeats):
        for f in (fn, reference):
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            runs[f].append((time.perf_counter() - t0, time.process_time() - c0))
    return min(runs[fn]), min(runs[reference])


def vit_tiny_model():
    """ViT-Tiny/16 at 224 (the builder's ``build_classifier`` when it has one, else keras-hub
    layers in the same flat layout, from the tests' helper)."""
    from tfcam.models.registry import BACKBONES

    name = next((n for n in BACKBONES if n.startswith("vit_tiny")), None)
    if name is not None:
        return build_classifier(backbone=name, num_classes=10, image_size=224, weights=None)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_vit import tiny_vit

    return tiny_vit(image_size=224, patch=16, blocks=12, dim=192, heads=3, mlp=768, num_classes=10)


def bench_vit(args) -> bool:
    """Prints the ViT table; False when a target was missed."""
    model = vit_tiny_model()
    x = batch_of_photos(args.batch)
    ex = Explainer(model, batch_size=max(32, args.batch))
    forward = tf.function(lambda t: model(t, training=False), reduce_retracing=True)
    xt = tf.constant(x)
    targets = explain(ex, x, "gradcam").targets
    print(
        f"== vit_tiny (ViT-Tiny/16, {len(ex.token_layers) - 2} blocks, random weights), layer "
        f"{ex.resolve_layers(None)[0]}, {ex.tokens.rows}×{ex.tokens.cols} patches"
    )
    print(
        f"{'method':22s} {'tfcam ms':>10s} {'fwd ms':>8s} {'x forward':>10s} {'target':>8s} "
        f"{'CPU ms':>9s} {'fwd CPU':>8s} {'x fwd CPU':>10s}"
    )
    ok = True
    for method, tgt in VIT_TARGETS.items():
        (t, c), (f, fc) = side_by_side(
            lambda m=method: explain(ex, x, m, targets=targets),
            lambda: forward(xt).numpy(),
            args.repeats,
        )
        line = (
            f"{method:22s} {t * 1000:10.1f} {f * 1000:8.1f} {t / f:10.2f} "
            f"{('≤' + str(tgt)) if tgt else '':>8s} {c * 1000:9.1f} {fc * 1000:8.1f} {c / fc:10.2f}"
        )
        if tgt and t / f > tgt:
            ok = False
            line += "  MISSED"
        print(line, flush=True)
    print()
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default="mobilenet_v2,resnet50,vit_tiny")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--skip-tfkv", action="store_true")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    keras.utils.disable_interactive_logging()  # tf-keras-vis's Score-CAM calls predict() verbosely
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s), batch {args.batch}, 224 px\n")
    ok = True
    for name in args.models.split(","):
        ok = (bench_vit(args) if name == "vit_tiny" else bench_model(name, args)) and ok
    print("all targets met" if ok else "some targets missed")


if __name__ == "__main__":
    main()
