"""The app in-process with a stand-in model: timeouts (504), a backend without tensor input (501), a model
that fails (500) — each answered as JSON while the server keeps serving."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx
import numpy as np
import pytest

from effnet.errors import ImageError
from effnet.predict import Prediction
from effnet.serve import ServeConfig, create_app
from effnet.serve.model import ModelInfo

GOOD, SLOW, BOOM = b"good image", b"slow image", b"boom image"


class FakeModel:
    """Duck-types ServedModel: 'images' are byte strings that say how the model should behave."""

    def __init__(self, accepts_tensors: bool = True) -> None:
        self.info = ModelInfo(
            name="fake",
            version="1",
            input_size=4,
            num_classes=3,
            backend="fake",
            precision="fp32",
            weights=None,
            channel_order="RGB",
            mean=(0.0,) * 3,
            std=(1.0,) * 3,
        )
        self.accepts_tensors = accepts_tensors

    def crop(self, data: bytes) -> np.ndarray:
        if data not in (GOOD, SLOW, BOOM):
            raise ImageError("not an image")
        return np.full((4, 4, 3), (GOOD, SLOW, BOOM).index(data), dtype=np.uint8)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        if (pixels == 1).any():
            time.sleep(1.0)
        if (pixels == 2).any():
            raise RuntimeError("model exploded")
        return np.tile(np.array([[0.2, 0.7, 0.1]], np.float32), (len(pixels), 1))

    def tensor_probabilities(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 3), 1 / 3, np.float32)

    def top_k(self, probs: np.ndarray, k: int) -> list[Prediction]:
        order = np.argsort(-probs)[:k]
        return [Prediction(int(i), f"n{i:08d}", f"class {i}", float(probs[i])) for i in order]


def served(check: Callable[[httpx.AsyncClient], Awaitable[None]], model: FakeModel | None = None, **config) -> None:
    """Run the app's lifespan (the batcher) and ``check`` against it, in-process."""
    app = create_app(model or FakeModel(), ServeConfig(**config))

    async def main() -> None:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
                await check(c)
        assert not app.state.batcher.running

    asyncio.run(main())


def test_classify_answer_shape():
    async def check(c):
        body = (await c.post("/v1/classify?top_k=2", content=GOOD)).json()
        assert [p["class_index"] for p in body["predictions"]] == [1, 0]
        assert set(body) == {"predictions", "model", "weights", "top_k", "latency_ms"} and body["model"] == "fake"
        assert body["top_k"] == 2
        clamped = (await c.post("/v1/classify?top_k=5", content=GOOD)).json()  # the fake model has 3 classes
        assert (clamped["top_k"], clamped["top_k_requested"], len(clamped["predictions"])) == (3, 5, 3)

    served(check)


def test_slow_request_times_out_with_504_and_the_server_goes_on():
    async def check(c):
        r = await c.post("/v1/classify", content=SLOW)
        assert r.status_code == 504 and "0.2 s" in r.json()["error"]
        assert 'effnet_errors_total{kind="timeout"} 1.0' in (await c.get("/metrics")).text
        # The slow batch still holds the model for a moment; the server answers again once it is done.
        for _ in range(100):
            r = await c.post("/v1/classify", content=GOOD)
            if r.status_code == 200:
                break
            assert r.status_code == 504
        assert r.status_code == 200

    served(check, timeout_s=0.2)


def test_model_failure_is_a_500_json_and_the_server_goes_on():
    async def check(c):
        r = await c.post("/v1/classify", content=BOOM)
        assert r.status_code == 500 and "internal" in r.json()["error"]
        assert (await c.post("/v1/classify", content=GOOD)).status_code == 200

    served(check)


def test_backend_without_tensor_input_answers_501():
    async def check(c):
        r = await c.post("/v2/models/fake/infer", json={"inputs": []})
        assert r.status_code == 501 and "--backend torch" in r.json()["error"]
        assert (await c.get("/v2/health/ready")).json() == {"ready": True}

    served(check, FakeModel(accepts_tensors=False))


@pytest.mark.parametrize("field", ["max_batch", "max_queue", "max_body_mb", "timeout_s", "decode_threads"])
def test_config_refuses_non_positive_limits(field):
    with pytest.raises(ValueError, match=field):
        ServeConfig(**{field: 0})
