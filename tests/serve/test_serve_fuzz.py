"""Property-based fuzzing (hypothesis) of the server's request handling and of the image loader.

The property: whatever a client sends, the answer is a success or a 4xx JSON error; never a 5xx, never
an exception out of the app (TestClient re-raises those). The image loader returns an RGB image or raises
ImageError, nothing else. Runs a fixed, derandomized sequence of ``EFFNET_FUZZ_EXAMPLES`` cases per test
(1,000 by default, what CI runs; set it higher for a longer hunt: ``EFFNET_FUZZ_EXAMPLES=20000``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections import Counter

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from effnet.errors import ImageError  # noqa: E402
from effnet.preprocess import load_image, resize_crop  # noqa: E402
from effnet.weights.records import get_record  # noqa: E402
from tests.serve.inprocess import BODY_MB, INFER, MODEL, app_client, lite0_served, small_image  # noqa: E402

EXAMPLES = int(os.environ.get("EFFNET_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same cases on every run and machine: a failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
ROW = 3 * 224 * 224
LIMIT = int(BODY_MB * 2**20)

# -- strategies ----------------------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
names = st.sampled_from(["data", "prob", "", "DATA", "data ", "x" * 300]) | st.text(max_size=10)
shapes = st.sampled_from([[1, 3, 224, 224], [2, 3, 224, 224]]) | st.lists(
    st.integers(-3, 2**40) | st.sampled_from([0, 1, 3, 224, 10**20]), max_size=6
)
FIELDS = {
    "name": names,
    "datatype": st.sampled_from(["FP32", "FP16", "INT8", "BYTES", "fp32", ""]) | json_values,
    "shape": shapes | json_values,
    "parameters": json_values | st.fixed_dictionaries({"binary_data_size": json_values}),
    "data": json_values | st.lists(st.floats(allow_nan=False, width=32), max_size=20),
}


# Valid tensors, made once: a valid request runs the model (the expensive case), so the strategies below
# send one in about ten cases and spend the rest on the ways a request can be wrong.
TENSORS = [
    np.random.default_rng(seed).standard_normal((n, 3, 224, 224), dtype=np.float32) for seed, n in ((0, 1), (1, 2))
]
JSON_DATA = [json.dumps(x.ravel().tolist()) for x in TENSORS[:1]]
INFER_KINDS = ["binary"] * 2 + ["valid-json"] + ["mutated"] * 11 + ["json"] * 2 + ["bytes"] * 2 + ["deep"] * 2


@st.composite
def infer_bodies(draw) -> tuple[bytes, dict[str, str]]:
    """A v2 infer body and its headers: valid ones, fields mutated, raw JSON or bytes, deep nesting."""
    kind = draw(st.sampled_from(INFER_KINDS))
    x = draw(st.sampled_from(TENSORS))
    n = len(x)
    tensor: dict = {"name": "data", "datatype": "FP32", "shape": [n, 3, 224, 224]}
    request: dict = {"inputs": [tensor]}
    headers: dict[str, str] = {}
    if kind == "valid-json":
        return json.dumps(request).encode()[:-3] + b', "data": ' + JSON_DATA[0].encode() + b"}]}", headers
    if kind == "json":
        return json.dumps(draw(json_values)).encode(), headers
    if kind == "bytes":
        return draw(st.binary(max_size=300)), headers
    if kind == "deep":
        depth = draw(st.integers(1, 200_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}"), (b'{"inputs":[', b"]}")]))
        return (opener * depth + b"0" + closer * draw(st.integers(0, depth)))[:LIMIT], headers
    # binary tensor data, with one to three mutations of the request, the binary tail or the header
    tensor["parameters"] = {"binary_data_size": x.nbytes}
    tail = x.astype("<f4").tobytes()
    if kind == "mutated":
        for _ in range(draw(st.integers(1, 3))):
            target = draw(st.sampled_from(["tensor", "tensor", "request", "outputs", "tail", "header", "drop"]))
            if target == "tensor":
                key = draw(st.sampled_from(sorted(FIELDS) + ["extra"]))
                tensor[key] = draw(FIELDS.get(key, json_values))
            elif target == "request":
                request[draw(st.sampled_from(["id", "parameters", "inputs", "outputs", "other"]))] = draw(json_values)
            elif target == "outputs":
                request["outputs"] = [{"name": draw(names), "parameters": draw(json_values)}]
            elif target == "tail":
                cut = draw(st.integers(0, len(tail)))
                tail = tail[:cut] + draw(st.binary(max_size=8))
            elif target == "drop":
                tensor.pop(draw(st.sampled_from(sorted(FIELDS))), None)
            else:
                headers["inference-header-content-length"] = draw(
                    st.sampled_from(["0", "-5", "1e3", "99999999999", " 12 ", ""]) | st.text("0123456789", max_size=8)
                )
    header = json.dumps(request).encode()
    headers.setdefault("inference-header-content-length", str(len(header)))
    return header + tail, headers


IMAGE_SEEDS = [small_image(fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")]
IMAGE_SEEDS += [small_image("PNG", mode="RGBA"), small_image("PNG", mode="I;16"), small_image("TIFF", mode="F")]


@st.composite
def image_bytes(draw) -> bytes:
    """A real small image in one of many formats with bytes flipped, cut, inserted or spliced; or noise."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=2_000))
    data = bytearray(draw(st.sampled_from(IMAGE_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "flip", "cut", "insert", "splice", "header"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "splice":
            other = draw(st.sampled_from(IMAGE_SEEDS))
            data[pos:] = other[draw(st.integers(0, len(other) - 1)) :]
        else:  # the header fields (sizes, modes, counts) are where decoders trust the file
            start = draw(st.integers(0, min(40, max(0, len(data) - 1))))
            data[start : start + 4] = draw(st.binary(min_size=4, max_size=4))
    return bytes(data)


# -- properties -----------------------------------------------------------------------------------------
def assert_reached_both_sides(statuses: Counter[int]) -> None:
    """Some cases reached the model or the handler (200s) and some were refused (4xx)."""
    assert statuses[200] > 0 and any(400 <= s < 500 for s in statuses), statuses


def assert_4xx_or_success(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        body = r.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and len(body["error"]) < 2_000, body


def test_fuzz_v2_infer(app_client):
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(request=infer_bodies(), version=st.sampled_from([None, None, None, "1", "2", "", "../1"]))
    def run(request, version):
        body, headers = request
        path = INFER if version is None else f"/v2/models/{MODEL}/versions/{version}/infer"
        r = app_client.post(path, content=body, headers=headers)
        assert_4xx_or_success(r)
        if r.status_code == 200:
            assert r.headers["content-type"] in ("application/json", "application/octet-stream")
        statuses[r.status_code] += 1

    run()
    assert_reached_both_sides(statuses)


query_values = st.text(max_size=6) | st.sampled_from(["1", "5", "1000", "0", "-1", "+3", "1_0", "٣"])


@st.composite
def classify_requests(draw) -> tuple[str, dict]:
    """/v1/classify: raw or multipart bodies (of mutated images), odd content types, odd query strings."""
    query = draw(st.lists(st.tuples(st.sampled_from(["top_k", "top_k", "k", ""]), query_values), max_size=2))
    image = draw(st.sampled_from(IMAGE_SEEDS)) if draw(st.integers(0, 9)) == 0 else draw(image_bytes())
    kind = draw(st.sampled_from(["raw", "raw", "multipart", "handmade-multipart"]))
    if kind == "raw":
        ctype = draw(st.sampled_from(["image/png", "application/octet-stream", "text/plain", "multipart/x", ""]))
        return query, {"content": image, "headers": {"content-type": ctype} if ctype else {}}
    if kind == "multipart":
        field = draw(st.sampled_from(["image", "image", "file", ""]))
        return query, {"files": {field: ("x.png", image, draw(st.sampled_from(["image/png", "text/plain"])))}}
    boundary = draw(st.sampled_from(["b", "----x", "", "a" * 100])) or draw(st.text("abc-_'", max_size=10))
    part_headers = draw(
        st.sampled_from(
            [
                b'Content-Disposition: form-data; name="image"; filename="a.png"',
                b'Content-Disposition: form-data; name="image"',
                b"Content-Disposition: form-data",
                b'Content-Disposition: form-data; name="\xff\xfe"; filename="\xc3"',
                b"",
            ]
        )
    )
    b = boundary.encode()
    body = b"--" + b + b"\r\n" + part_headers + b"\r\n\r\n" + image + b"\r\n--" + b + b"--\r\n"
    body = body[: draw(st.integers(0, len(body)))] if draw(st.booleans()) else body
    charset = draw(st.sampled_from(["", "; charset=utf-8", "; charset=nonsense", "; charset=latin-1"]))
    return query, {"content": body, "headers": {"content-type": f"multipart/form-data; boundary={boundary}{charset}"}}


def test_fuzz_classify(app_client):
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(request=classify_requests())
    def run(request):
        query, kwargs = request
        r = app_client.post("/v1/classify", params=query, **kwargs)
        assert_4xx_or_success(r)
        if r.status_code == 200:
            assert len(r.json()["predictions"]) >= 1
        statuses[r.status_code] += 1

    with warnings.catch_warnings():  # Pillow warns about some broken files it still decodes
        warnings.simplefilter("ignore")
        run()
    assert_reached_both_sides(statuses)


ROUTES = ["/", "/metrics", "/openapi.json", "/v1/classify", "/v1/model", "/v2", "/v2/health/live", "/v2/health/ready"]
ROUTES += [f"/v2/models/{{}}{tail}" for tail in ("", "/ready", "/infer", "/versions/{}", "/versions/{}/ready")]


def test_fuzz_any_route(app_client):
    statuses: Counter[int] = Counter()

    @FUZZ
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
        route=st.sampled_from(ROUTES),
        segments=st.lists(
            st.sampled_from([MODEL, "1", "x", "%00", "..", "%2F", "é", "a" * 500]), min_size=2, max_size=2
        ),
        query=st.lists(st.tuples(st.text(max_size=5), st.text(max_size=5)), max_size=3),
        body=st.binary(max_size=64),
    )
    def run(method, route, segments, query, body):
        path = route.format(*segments)
        r = app_client.request(method, path, params=query, content=body if method != "GET" else None)
        assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
        statuses[r.status_code] += 1

    run()
    assert_reached_both_sides(statuses)


LITE0 = get_record("efficientnet-lite0.pypi").preprocess


def test_fuzz_image_loader():
    """The decoder path the server and `effnet classify` share: an RGB crop, or ImageError; nothing else."""
    outcomes: Counter[str] = Counter()

    @FUZZ
    @given(data=image_bytes())
    def run(data):
        try:
            image = load_image(data, max_pixels=4_000_000)  # the default bound is 89 Mpx: same code, less memory
        except ImageError:
            outcomes["ImageError"] += 1
            return
        crop = resize_crop(image, LITE0)
        assert image.mode == "RGB" and crop.size == (224, 224)
        assert np.asarray(crop).dtype == np.uint8
        outcomes["decoded"] += 1

    with warnings.catch_warnings():  # Pillow warns about some broken files it still decodes
        warnings.simplefilter("ignore")
        run()
    assert outcomes["decoded"] > 0 and outcomes["ImageError"] > 0, outcomes


def test_seeds_are_real_images():
    """The mutations start from images that decode (else the fuzz would only ever test garbage)."""
    for seed in IMAGE_SEEDS:
        assert load_image(seed).mode == "RGB", io.BytesIO(seed).read(8)
