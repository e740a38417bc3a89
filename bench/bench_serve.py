"""``tfcam serve`` latency and load, measured side by side in one process.

* **Uncached heatmap**: ``GET /api/heatmap`` (Grad-CAM, PNG overlay) of an image not asked for
  before, through the WSGI application (werkzeug's test client: routing, reading the image,
  Grad-CAM, colouring, PNG encoding), as a ratio to one forward pass of the same image by the same
  model in the same process (the explainer's compiled forward). Target ≤ 2.0.
* **Cached heatmap**: the same request again (target ≤ 10 ms at the median; the PNG is cached).
* **Load**: a real threaded server on 127.0.0.1, 8 clients × 50 heatmap requests over HTTP on a
  mix of images and methods; every answer must equal the single-client answer; throughput and the
  process's peak RSS.

The model is MobileNetV2 1.0 at 224 px with the ImageNet weights of ``../shared/data/weights``
(a random two-class head: only time matters), serving the first ``--n`` photos of hymenoptera's
validation split as a run's ``val`` split; or ``--run RUN``.

    python bench/bench_serve.py [--n 40] [--clients 8] [--requests 50] [--run RUN]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras
import pandas as pd

from tfcam.paths import shared_data_dir

TARGET_RATIO, TARGET_CACHED_MS = 2.0, 10.0


def make_run(root: Path, n: int) -> Path:
    """A run directory serving hymenoptera's first ``n`` validation photos with MobileNetV2."""
    from tfcam.config import load_experiment
    from tfcam.models.build import build_classifier
    from tfcam.runs import Run

    photos = sorted(
        p
        for p in (shared_data_dir() / "hymenoptera" / "val").glob("*/*")
        if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )[:n]
    if len(photos) < n:
        sys.exit(f"need {n} photos under {shared_data_dir()}/hymenoptera/val (TFCAM_SHARED_DATA?)")
    weights = shared_data_dir() / "weights" / "mobilenet_v2_1.0_224_no_top.weights.h5"
    model = build_classifier(
        backbone="mobilenet_v2",
        num_classes=2,
        image_size=224,
        weights=weights if weights.is_file() else None,
    )
    run = Run(root / "bench-run")
    run.path.mkdir(parents=True)
    run.write_config(
        load_experiment("shapes", ["data.image_size=224", "model.backbone=mobilenet_v2"])
    )
    model.save(run.model_path)
    (run.path / "class_names.json").write_text(json.dumps(["ants", "bees"]))
    labels = [p.parent.name for p in photos]
    pd.DataFrame(
        {"path": [str(p) for p in photos], "label": labels, "predicted": labels,
         "confidence": 0.5, "p_true": 0.5}
    ).to_csv(run.predictions_path("val"), index=False)  # fmt: skip
    return run.path


def median_ms(values) -> float:
    return 1000 * statistics.median(values)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=40, help="images served (default 40)")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=50, help="per client")
    ap.add_argument("--run", help="serve this run instead")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    keras.utils.disable_interactive_logging()

    from werkzeug.serving import make_server
    from werkzeug.test import Client

    from tfcam.serve.app import Explorer
    from tfcam.serve.runs import RunSet

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.run) if args.run else make_run(Path(tmp), args.n)
        runs = RunSet.at(path)
        app = Explorer(runs)
        run = next(iter(runs.runs.values()))
        client = Client(app)
        images = [im["id"] for im in run.images("val", limit=500)["images"]]
        ex = run.explainer()
        print(
            f"{os.cpu_count()} CPU(s); {ex.model.name} at {ex.input_size[0]} px; "
            f"{len(images)} images"
        )

        # Warm-up: tracing of Grad-CAM and of the forward pass, the image loader, thread pools.
        client.get(f"/api/heatmap?image={images[0]}&method=gradcam")
        x0 = run._read(run.image(images[0]))[0]
        ex.forward_logits(x0[None])

        # One forward pass of each image, then its first (uncached) heatmap request.
        forward, uncached, cached = [], [], []
        for image in images[1:]:
            x = run._read(run.image(image))[0]
            run._reads.data.pop(image, None)  # the request below reads the image itself
            t0 = time.perf_counter()
            ex.forward_logits(x[None])
            forward.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = client.get(f"/api/heatmap?image={image}&method=gradcam")
            uncached.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.json
            for _ in range(5):
                t0 = time.perf_counter()
                client.get(f"/api/heatmap?image={image}&method=gradcam")
                cached.append(time.perf_counter() - t0)
        f, u, c = median_ms(forward), median_ms(uncached), median_ms(cached)
        print(f"forward pass (compiled, one image): median {f:.1f} ms")
        print(
            f"uncached Grad-CAM request (read, explain, colour, PNG): median {u:.1f} ms = "
            f"{u / f:.2f}x a forward pass (target <= {TARGET_RATIO})"
        )
        print(f"cached request: median {c:.2f} ms (target <= {TARGET_CACHED_MS} ms)")

        # Load: single-client answers first, then the cache emptied and 8 clients at once.
        mix = [(im, m) for im in images[:25] for m in ("gradcam", "layercam")]
        single = {}
        for image, method in mix:
            single[image, method] = client.get(f"/api/heatmap?image={image}&method={method}").data
        run._cache.data.clear()
        from tfcam.cli.serve import _handler

        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_handler())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}/api/heatmap"
        failures, mismatches, done = [], [], []

        def worker(k: int) -> None:
            for n in range(args.requests):
                image, method = mix[(7 * k + n) % len(mix)]
                try:
                    with urllib.request.urlopen(
                        f"{base}?image={image}&method={method}", timeout=300
                    ) as r:
                        body = r.read()
                except Exception as e:  # counted, not raised
                    failures.append(repr(e))
                    continue
                if body != single[image, method]:
                    mismatches.append((image, method))
                done.append(1)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        server.shutdown()
        total = args.clients * args.requests
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"load: {args.clients} clients x {args.requests} requests over HTTP, "
            f"{len(mix)} distinct heatmaps: {len(done)}/{total} succeeded, "
            f"{len(mismatches)} differed from the single-client answer, "
            f"{total / wall:.1f} requests/s ({wall:.1f} s); peak RSS {peak:.0f} MB"
        )
        if failures:
            print("failures:", failures[:3])
        runs.close()


if __name__ == "__main__":
    main()
