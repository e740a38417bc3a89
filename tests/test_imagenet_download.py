"""`--weights imagenet` goes through Keras's real download code; here it downloads from 127.0.0.1.

The machine has no internet, so the Keras weights URL is pointed at a local HTTP server that serves
the Keras-distributed MobileNet 0.25 no-top file from ../shared/data under its published name.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def weights_server(shared, tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(
        shared / "weights" / "mobilenet_0.25_224_no_top.h5", root / "mobilenet_2_5_224_tf_no_top.h5"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_imagenet_weights_download_and_cache(shared, weights_server, tmp_path):
    code = f"""
import numpy as np, keras
import keras.src.applications.mobilenet as mn
mn.BASE_WEIGHT_PATH = {weights_server!r}
from tfcam.models.build import build_classifier
model = build_classifier(backbone="mobilenet", num_classes=2, image_size=224, weights="imagenet",
                         options={{"alpha": 0.25}})
ref = keras.applications.MobileNet(alpha=0.25, include_top=False, input_shape=(224, 224, 3),
                                   weights={str(shared / "weights" / "mobilenet_0.25_224_no_top.h5")!r})
n = 0
for layer in [l for l in ref.layers if l.weights]:
    for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
        assert np.array_equal(a, b), layer.name
        n += 1
print(n)
"""
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras_home"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip().splitlines()[-1]) > 50
    cached = tmp_path / "keras_home" / "models" / "mobilenet_2_5_224_tf_no_top.h5"
    assert (
        cached.stat().st_size
        == (shared / "weights" / "mobilenet_0.25_224_no_top.h5").stat().st_size
    )
