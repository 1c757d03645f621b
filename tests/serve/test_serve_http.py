"""`effnet serve` as a real process with real Lite0 weights: answers equal the library's, bad requests get
their 4xx and the server keeps serving, and a bounded load run loses nothing."""

from __future__ import annotations

import io
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from effnet.preprocess import normalize
from tests.serve.inprocess import kserve_binary
from tests.serve.serve_fixtures import client, lite0_classifier, read_metrics, server  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[2]
CHELSEA = REPO / "examples" / "chelsea.png"
COFFEE = REPO / "examples" / "coffee.png"
MODEL = "efficientnet-lite0"
INFER = f"/v2/models/{MODEL}/infer"


def huge_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring width x height pixels, with a tiny body (a decompression-bomb probe)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def jpeg_bytes(path: Path) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def v2_request(x: np.ndarray, **overrides) -> dict:
    tensor = {"name": "data", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    tensor.update(overrides)
    return {"inputs": [tensor]}


def crop_tensor(clf, path: Path) -> tuple[np.ndarray, np.ndarray]:
    crop = clf.crop(path)
    return crop, normalize(crop, clf.preprocess)[np.newaxis]


def assert_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    return body["error"]


def assert_serving(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.post("/v1/classify?top_k=1", content=COFFEE.read_bytes())
    assert r.status_code == 200 and r.json()["predictions"][0]["label"] == "espresso", r.text


# -- protocol -----------------------------------------------------------------------------------------
def test_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    server = client.get("/v2").json()
    assert server["name"] == "effnet" and "binary_tensor_data" in server["extensions"]
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "data", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert meta["outputs"] == [{"name": "prob", "datatype": "FP32", "shape": [-1, 1000]}]
    assert client.get(f"/v2/models/{MODEL}/versions/1").json() == meta


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="file"' in r.text and "v1/classify" in r.text
    # No external CDN: nothing is loaded from another origin.
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text


def test_classify_raw_and_multipart_agree_with_local(client, lite0_classifier):
    local = lite0_classifier.classify([CHELSEA], top_k=5)[0].predictions
    raw = client.post("/v1/classify?top_k=5", content=CHELSEA.read_bytes(), headers={"content-type": "image/png"})
    multipart = client.post("/v1/classify", files={"image": ("chelsea.png", CHELSEA.read_bytes(), "image/png")})
    for r in (raw, multipart):
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == MODEL and body["latency_ms"] > 0
        assert [p["class_index"] for p in body["predictions"]] == [p.class_index for p in local]
        assert [p["label"] for p in body["predictions"]] == [p.label for p in local]
        np.testing.assert_allclose(
            [p["probability"] for p in body["predictions"]], [p.probability for p in local], rtol=1e-4, atol=1e-6
        )
    assert len(client.post("/v1/classify?top_k=3", content=CHELSEA.read_bytes()).json()["predictions"]) == 3


@pytest.mark.slow
def test_classify_sample_matches_effnet_classify(client, lite0_classifier, sample_images):
    """All ../shared sample images, 4 at a time (so they batch): the same answers as the library's."""
    clf = lite0_classifier
    crops = [clf.crop(p) for p in sample_images]
    # The library's path (Classifier.crop -> probabilities -> top_k, as `effnet classify` runs it), in a few
    # batches to keep the test short.
    probs = np.concatenate([clf.probabilities(np.stack(crops[i : i + 25])) for i in range(0, len(crops), 25)])

    def ask(path: Path) -> dict:
        r = client.post("/v1/classify?top_k=5", content=path.read_bytes())
        assert r.status_code == 200, f"{path.name}: {r.text}"
        return r.json()

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, sample_images))
    assert len(answers) == len(sample_images)
    for path, body, p in zip(sample_images, answers, probs, strict=True):
        served, expected = body["predictions"], clf.top_k(p, 5)
        assert (served[0]["class_index"], served[0]["synset"], served[0]["label"]) == (
            expected[0].class_index,
            expected[0].synset,
            expected[0].label,
        ), path.name
        # Batched differently, the floats may differ in the last bits: compare by class, not by rank.
        for pred in served:
            assert pred["probability"] == pytest.approx(float(p[pred["class_index"]]), rel=1e-4, abs=1e-6), path


def test_v2_infer_json_equals_local_predictor(client, lite0_classifier):
    crop, x = crop_tensor(lite0_classifier, CHELSEA)
    expected = lite0_classifier.probabilities(crop[np.newaxis])
    r = client.post(INFER, json={"id": "req-1", **v2_request(x), "outputs": [{"name": "prob"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == MODEL and body["id"] == "req-1"
    (out,) = body["outputs"]
    assert out["name"] == "prob" and out["datatype"] == "FP32" and out["shape"] == [1, 1000]
    got = np.asarray(out["data"], dtype=np.float32).reshape(1, 1000)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    assert int(got.argmax()) == lite0_classifier.classify([CHELSEA], top_k=1)[0].predictions[0].class_index


def test_v2_infer_batch_nested_and_binary(client, lite0_classifier):
    crops, xs = zip(*(crop_tensor(lite0_classifier, p) for p in (CHELSEA, COFFEE)), strict=True)
    x = np.concatenate(xs)
    expected = lite0_classifier.probabilities(np.stack(crops))
    # Nested lists instead of a flat array.
    nested = {"inputs": [{"name": "data", "datatype": "FP32", "shape": [2, 3, 224, 224], "data": x.tolist()}]}
    r = client.post(INFER, json=nested)
    assert r.status_code == 200, r.text
    got = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 1000)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    # Binary tensor data extension, both ways.
    meta, got = kserve_binary(client, x, INFER)
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 2 * 1000 * 4
    assert got.shape == (2, 1000)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


# -- bad requests -------------------------------------------------------------------------------------
def _tensor() -> np.ndarray:
    return np.zeros((1, 3, 224, 224), dtype=np.float32)


BAD_REQUESTS = {
    # name: (method, path, request kwargs, status)
    "not an image": ("POST", "/v1/classify", {"content": b"this is plain text, not an image"}, 400),
    "truncated png": ("POST", "/v1/classify", {"content": CHELSEA.read_bytes()[:20_000]}, 400),
    "truncated jpeg": ("POST", "/v1/classify", {"content": jpeg_bytes(CHELSEA)[:15_000]}, 400),
    "empty body": ("POST", "/v1/classify", {"content": b""}, 400),
    "huge dimensions": ("POST", "/v1/classify", {"content": huge_png()}, 400),
    "multipart without image": ("POST", "/v1/classify", {"files": {"picture": ("a.png", b"x", "image/png")}}, 400),
    "multipart image as text": (
        "POST",
        "/v1/classify",
        {"files": {"other": ("a", b"x")}, "data": {"image": "abc"}},
        400,
    ),
    "top_k zero": ("POST", "/v1/classify?top_k=0", {"content": COFFEE.read_bytes()}, 400),
    "top_k not a number": ("POST", "/v1/classify?top_k=five", {"content": COFFEE.read_bytes()}, 400),
    "malformed json": ("POST", INFER, {"content": b'{"inputs": [{"name": "data",'}, 400),
    "json not an object": ("POST", INFER, {"json": [1, 2, 3]}, 400),
    "wrong tensor name": ("POST", INFER, {"json": v2_request(_tensor(), name="input")}, 400),
    "wrong dtype": ("POST", INFER, {"json": v2_request(_tensor(), datatype="INT32")}, 400),
    "wrong shape": ("POST", INFER, {"json": v2_request(np.zeros((1, 3, 32, 32), np.float32))}, 400),
    "shape and data disagree": ("POST", INFER, {"json": v2_request(_tensor(), shape=[2, 3, 224, 224])}, 400),
    "strings as data": ("POST", INFER, {"json": v2_request(_tensor(), data=["a"] * 150_528)}, 400),
    "no inputs": ("POST", INFER, {"json": {"inputs": []}}, 400),
    "unknown output": ("POST", INFER, {"json": {**v2_request(_tensor()), "outputs": [{"name": "logits"}]}}, 400),
    "unknown model": ("POST", "/v2/models/resnet50/infer", {"json": v2_request(_tensor())}, 404),
    "unknown model metadata": ("GET", "/v2/models/resnet50", {}, 404),
    "unknown version": ("GET", f"/v2/models/{MODEL}/versions/7", {}, 404),
    "unknown path": ("GET", "/v3/everything", {}, 404),
    "wrong method": ("GET", "/v1/classify", {}, 405),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_its_4xx_and_server_keeps_serving(client, case):
    method, path, kwargs, status = BAD_REQUESTS[case]
    assert_error(client.request(method, path, **kwargs), status)
    assert_serving(client)


def test_error_messages_say_what_was_expected(client):
    assert "pixels" in assert_error(client.post("/v1/classify", content=huge_png()), 400)
    assert "[-1, 3, 224, 224]" in assert_error(
        client.post(INFER, json=v2_request(np.zeros((1, 3, 32, 32), np.float32))), 400
    )
    assert "'FP32'" in assert_error(client.post(INFER, json=v2_request(_tensor(), datatype="FP64")), 400)
    assert MODEL in assert_error(client.get("/v2/models/resnet50"), 404)


def test_body_limit_by_content_length_and_by_stream(client, read_metrics, server):
    big = b"\0" * (9 * 1024 * 1024)  # the session server runs with --max-body-mb 8
    assert "limit" in assert_error(client.post("/v1/classify", content=big), 413)

    def chunks():  # no Content-Length: the server must count what it reads
        for i in range(0, len(big), 1 << 20):
            yield big[i : i + (1 << 20)]

    assert_error(client.post("/v1/classify", content=chunks()), 413)
    assert_error(client.post(INFER, content=big), 413)
    assert read_metrics(server.url)[("effnet_errors_total", (("kind", "body_too_large"),))] >= 3
    assert_serving(client)


def test_metrics_exposition(client, server, read_metrics):
    client.post("/v1/classify", content=b"not an image")
    client.post("/v1/classify", content=COFFEE.read_bytes())
    m = read_metrics(server.url)
    assert m[("effnet_errors_total", (("kind", "bad_image"),))] >= 1
    assert m[("effnet_requests_total", (("endpoint", "classify"), ("status", "200")))] >= 1
    assert m[("effnet_request_latency_seconds_count", (("endpoint", "classify"),))] >= 2
    assert m[("effnet_batch_size_count", (("kind", "pixels"),))] >= 1
    assert ("effnet_queue_depth", ()) in m and ("effnet_requests_in_flight", ()) in m


# -- load -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_load_300_requests_at_concurrency_8(server, read_metrics, sample_images):
    payloads = [p.read_bytes() for p in sample_images[:20]]
    before = read_metrics(server.url)
    key_count, key_le1 = (
        ("effnet_batch_size_count", (("kind", "pixels"),)),
        ("effnet_batch_size_bucket", (("kind", "pixels"), ("le", "1.0"))),
    )

    def worker(index: int) -> list[int]:
        statuses = []
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(index, 300, 8):
                statuses.append(c.post("/v1/classify", content=payloads[i % len(payloads)]).status_code)
        return statuses

    with ThreadPoolExecutor(8) as pool:
        statuses = [s for part in pool.map(worker, range(8)) for s in part]
    assert len(statuses) == 300
    assert statuses.count(200) == 300, {s: statuses.count(s) for s in set(statuses)}
    after = read_metrics(server.url)
    batches = after[key_count] - before.get(key_count, 0)
    single = after[key_le1] - before.get(key_le1, 0)
    rows = after[("effnet_batch_size_sum", (("kind", "pixels"),))] - before.get(
        ("effnet_batch_size_sum", (("kind", "pixels"),)), 0
    )
    assert rows == 300
    assert batches - single > 0, f"no batch held more than one image ({batches} batches for 300 requests)"
    print(f"load: 300 requests at concurrency 8 ran in {batches:.0f} batches ({300 / batches:.2f} images/batch)")
