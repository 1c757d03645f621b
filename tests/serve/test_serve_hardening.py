"""Bad input never reaches a 500: JSON depth bounded before parsing, every v2 field checked, query
parameters, multipart in memory; the OpenAPI description covers every route; bearer-key auth."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest

from effnet.serve.validation import MAX_JSON_DEPTH, json_depth
from tests.serve.inprocess import BODY_MB, INFER, MODEL, app_client, lite0_served, make_client, small_image

ROW = [1, 3, 224, 224]


def v2(**tensor) -> dict:
    t = {"name": "data", "datatype": "FP32", "shape": ROW, "data": [0.0] * 150_528}
    t.update(tensor)
    return {"inputs": [t]}


def binary_request(n: int = 1, header_extra: dict | None = None, tail: bytes | None = None) -> tuple[bytes, dict]:
    x = np.zeros((n, 3, 224, 224), "<f4").tobytes() if tail is None else tail
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "data",
                    "datatype": "FP32",
                    "shape": [n, 3, 224, 224],
                    "parameters": {"binary_data_size": n * 150_528 * 4},
                    **(header_extra or {}),
                }
            ]
        }
    ).encode()
    return header + x, {"inference-header-content-length": str(len(header))}


def error_of(r, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


@pytest.mark.parametrize("depth", [100, 1_000, 100_000, 1_000_000])
def test_deeply_nested_json_is_a_400(app_client, depth):
    """Deep JSON made json.loads raise RecursionError: the server answered 500 (issue 12)."""
    for body in (b"[" * depth + b"]" * depth, b'{"inputs":' * depth + b"1" + b"}" * depth):
        assert "deeper than" in error_of(app_client.post(INFER, content=body[: int(BODY_MB * 2**20)]), 400)
    assert app_client.get("/v2/health/ready").status_code == 200


def test_brackets_inside_strings_do_not_count(app_client):
    deep_id = "[{" * 5_000 + '\\"[' * 100  # escapes too: \" does not end the string
    r = app_client.post(INFER, json={**v2(), "id": deep_id})
    assert r.status_code == 200 and r.json()["id"] == deep_id


@pytest.mark.parametrize(
    "text,depth",
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": [[]]}]}', 5),
        (b'["[[[[", "]]"]', 1),
        (b'["\\\\", [[]]]', 3),  # an escaped backslash, then a real closing quote
        (b'["\\\\\\"[[[", []]', 2),  # \\ then \" : the string goes on
        (b"[" * 70_000, 70_000),
    ],
)
def test_json_depth(text, depth):
    assert json_depth(text) == depth
    # With a bound, the answer is exact only about which side of the bound the depth lies.
    assert (json_depth(text, stop_above=MAX_JSON_DEPTH) > MAX_JSON_DEPTH) == (depth > MAX_JSON_DEPTH)


PNG = small_image("PNG")
# name: (method, path, request kwargs, status, words the message must hold). Classes the HTTP tests of
# test_serve_http.py already cover (truncated images, wrong dtype/shape, unknown model...) are not repeated.
BAD = {
    "deep json in data": ("POST", INFER, {"content": json.dumps(v2(data=[[[[[[[[0.0]]]]]]]])).encode()}, 400, ["data"]),
    "unknown top-level field": ("POST", INFER, {"json": {**v2(), "input": []}}, 400, ["unknown field", "input"]),
    "unknown tensor field": ("POST", INFER, {"json": v2(dtype="FP32")}, 400, ["unknown field", "dtype"]),
    "unknown output field": (
        "POST",
        INFER,
        {"json": {**v2(), "outputs": [{"name": "prob", "binary": True}]}},
        400,
        ["unknown field"],
    ),
    "parameters not an object": ("POST", INFER, {"json": v2(parameters=[1])}, 400, ["parameters", "object"]),
    "parameter value an object": (
        "POST",
        INFER,
        {"json": {**v2(), "parameters": {"binary_data_output": {"x": 1}}}},
        400,
        ["boolean, number or string"],
    ),
    "binary flag not a bool": (
        "POST",
        INFER,
        {"json": {**v2(), "parameters": {"binary_data_output": "yes"}}},
        400,
        ["true or false"],
    ),
    "negative rows": ("POST", INFER, {"json": v2(shape=[-1, 3, 224, 224])}, 400, ["1 <= N"]),
    "huge rows": ("POST", INFER, {"json": v2(shape=[10**30, 3, 224, 224])}, 400, ["1 <= N"]),
    "int of 5000 digits": ("POST", INFER, {"content": b'{"inputs": [{"shape": [' + b"9" * 5000 + b"]}]}"}, 400, []),
    "bool in shape": ("POST", INFER, {"json": v2(shape=[True, 3, 224, 224])}, 400, ["shape"]),
    "shape not a list": ("POST", INFER, {"json": v2(shape="1,3,224,224")}, 400, ["shape"]),
    "data not a list": ("POST", INFER, {"json": v2(data=1.0)}, 400, ["list"]),
    "data of objects": ("POST", INFER, {"json": v2(data=[{}] * 150_528)}, 400, ["numbers"]),
    "data of nulls": ("POST", INFER, {"json": v2(data=[None] * 150_528)}, 400, ["numbers"]),
    "data of booleans": ("POST", INFER, {"json": v2(data=[True] * 150_528)}, 400, ["numbers"]),
    "mixed numbers and strings": ("POST", INFER, {"json": v2(data=[0.0] * 150_527 + ["1"])}, 400, ["numbers"]),
    "Infinity literal": ("POST", INFER, {"content": json.dumps(v2(data=[float("inf")] * 150_528)).encode()}, 400, []),
    "nested shape disagrees": ("POST", INFER, {"json": v2(data=np.zeros((3, 1, 224, 224)).tolist())}, 400, ["nested"]),
    "name not a string": ("POST", INFER, {"json": v2(name=["data"])}, 400, ["input name"]),
    "very long name": ("POST", INFER, {"json": v2(name="x" * 100_000)}, 400, ["..."]),
    "inputs not a list": ("POST", INFER, {"json": {"inputs": {"name": "data"}}}, 400, ["inputs"]),
    "input not an object": ("POST", INFER, {"json": {"inputs": [[1]]}}, 400, ["inputs"]),
    "outputs not a list": ("POST", INFER, {"json": {**v2(), "outputs": "prob"}}, 400, ["outputs"]),
    "json and binary data both": (
        "POST",
        INFER,
        dict(zip(("content", "headers"), binary_request(header_extra={"data": [0.0]}), strict=True)),
        400,
        ["both"],
    ),
    "binary tail without binary_data_size": (
        "POST",
        INFER,
        {
            "content": json.dumps(v2()).encode() + b"\0" * 16,
            "headers": {"inference-header-content-length": str(len(json.dumps(v2())))},
        },
        400,
        ["binary data"],
    ),
    "binary shorter than declared": (
        "POST",
        INFER,
        dict(zip(("content", "headers"), binary_request(tail=b"\0" * 1000), strict=True)),
        400,
        ["binary tensor data is 1000 bytes"],
    ),
    "binary size not an int": (
        "POST",
        INFER,
        dict(
            zip(
                ("content", "headers"),
                binary_request(header_extra={"parameters": {"binary_data_size": "4"}}),
                strict=True,
            )
        ),
        400,
        ["binary_data_size"],
    ),
    "header length negative": (
        "POST",
        INFER,
        {"content": b"{}", "headers": {"inference-header-content-length": "-1"}},
        400,
        [],
    ),
    "header length unicode digits": (
        "POST",
        INFER,
        {"content": b"{}", "headers": {"inference-header-content-length": "\u0662".encode()}},
        400,
        ["integer"],
    ),
    "header length zero": (
        "POST",
        INFER,
        {"content": b"{}", "headers": {"inference-header-content-length": "0"}},
        400,
        [],
    ),
    "binary NaN": (
        "POST",
        INFER,
        dict(zip(("content", "headers"), binary_request(tail=np.full(150_528, np.nan, "<f4").tobytes()), strict=True)),
        400,
        ["NaN"],
    ),
    "utf-16 garbage": ("POST", INFER, {"content": "{\u0000\ud7ff}".encode("utf-16", "surrogatepass")}, 400, []),
    "infer query parameter": ("POST", INFER + "?debug=1", {"json": v2()}, 400, ["unknown query parameter"]),
    "unknown classify query": ("POST", "/v1/classify?topk=3", {"content": PNG}, 400, ["topk", "top_k"]),
    "repeated top_k": ("POST", "/v1/classify?top_k=1&top_k=2", {"content": PNG}, 400, ["more than once"]),
    "top_k above the bound": ("POST", "/v1/classify?top_k=1000001", {"content": PNG}, 400, ["1 to 1000000"]),
    "top_k signed": ("POST", "/v1/classify?top_k=+3", {"content": PNG}, 400, ["top_k"]),
    "top_k huge": ("POST", "/v1/classify?top_k=" + "9" * 5000, {"content": PNG}, 400, ["top_k"]),
    "multipart without boundary": (
        "POST",
        "/v1/classify",
        {"content": PNG, "headers": {"content-type": "multipart/form-data"}},
        400,
        ["boundary"],
    ),
    "multipart garbage": (
        "POST",
        "/v1/classify",
        {"content": b"--xx\r\nnonsense\r\n\r\n--", "headers": {"content-type": "multipart/form-data; boundary=xx"}},
        400,
        ["multipart"],
    ),
    "multipart two files": (
        "POST",
        "/v1/classify",
        {"files": [("image", ("a.png", PNG, "image/png")), ("image", ("b.png", PNG, "image/png"))]},
        400,
        ["multipart"],
    ),
    "multipart field without name": (
        "POST",
        "/v1/classify",
        {
            "content": b'--b\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\n' + PNG + b"\r\n--b--\r\n",
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        400,
        ["name"],
    ),
    "multipart empty image": (
        "POST",
        "/v1/classify",
        {"files": {"image": ("a.png", b"", "image/png")}},
        400,
        ["empty"],
    ),
    "gif frames of nothing": ("POST", "/v1/classify", {"content": b"GIF89a" + b"\0" * 20}, 400, []),
    "body above limit": ("POST", INFER, {"content": b"[" * (int(BODY_MB * 2**20) + 1)}, 413, ["limit"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_4xx_json_saying_what_was_wrong(app_client, case):
    method, path, kwargs, status, words = BAD[case]
    message = error_of(app_client.request(method, path, **kwargs), status)
    for word in words:
        assert word in message, message
    assert len(message) < 2_000  # never an echo of the body


def test_invalid_content_length_is_a_400(lite0_served):
    """httpx always sends a correct Content-Length, so this one goes to the ASGI app directly."""
    import asyncio

    from effnet.serve import ServeConfig, create_app

    app = create_app(lite0_served, ServeConfig())
    sent: list[dict] = []

    async def main() -> None:
        async def receive():
            return {"type": "http.request", "body": b"abc", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/v1/classify",
            "raw_path": b"/v1/classify",
            "query_string": b"",
            "headers": [(b"content-length", b"1e3")],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
            "root_path": "",
        }
        async with app.router.lifespan_context(app):
            await app(scope, receive, send)

    asyncio.run(main())
    assert sent[0]["status"] == 400 and b"Content-Length" in sent[1]["body"]


def test_uploaded_images_are_never_written_to_disk(lite0_served, monkeypatch):
    """Starlette's form parser spools uploads above 1 MiB to a temporary file; ours must stay in memory."""
    rolled: list[int] = []
    original = tempfile.SpooledTemporaryFile.rollover

    def rollover(self):
        rolled.append(self._max_size)
        return original(self)

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", rollover)
    big = small_image("PNG", size=(700, 700))  # noise does not compress: ~1.4 MiB, above the 1 MiB spool
    assert 1 << 20 < len(big) < BODY_MB * 2**20
    with make_client(lite0_served) as client:
        r = client.post("/v1/classify", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 200, r.text
    assert not rolled


def test_openapi_describes_every_route(app_client):
    spec = app_client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    routes = {(r.path, m.lower()) for r in app_client.app.routes for m in r.methods if m != "HEAD"}
    described = {(p, m) for p, ops in spec["paths"].items() for m in ops}
    assert routes == described
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert {"200", "400", "413"} <= set(infer["responses"])
    assert spec["components"]["parameters"]["name"]["schema"] == {"const": MODEL}


# -- auth ------------------------------------------------------------------------------------------
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def keyed(lite0_served):
    with make_client(lite0_served, api_key=KEY) as client:
        yield client


@pytest.mark.parametrize(
    "path", ["/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}/ready", f"/v2/models/{MODEL}/versions/1/ready"]
)
def test_health_needs_no_key(keyed, path):
    assert keyed.get(path).status_code == 200


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/v1/model"), ("GET", "/v2"),
     ("GET", f"/v2/models/{MODEL}"), ("POST", "/v1/classify"), ("POST", INFER), ("GET", "/no/such/path")],
)  # fmt: skip
@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": KEY}, {"authorization": f"Basic {KEY}"},
     {"authorization": f"Bearer {KEY} "}, {"authorization": f"bearer {KEY[:-1]}"}],
)  # fmt: skip
def test_everything_else_needs_the_key(keyed, method, path, headers):
    r = keyed.request(method, path, headers=headers, content=PNG if method == "POST" else None)
    assert "unauthorized" in error_of(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_the_right_key_is_let_in(keyed):
    auth = {"authorization": f"Bearer {KEY}"}
    assert keyed.get("/v1/model", headers=auth).json()["name"] == MODEL
    assert keyed.post("/v1/classify", content=PNG, headers=auth).status_code == 200
    spec = keyed.get("/openapi.json", headers=auth).json()
    assert spec["paths"]["/v1/classify"]["post"]["security"] == [{"bearer": []}]
    metrics = keyed.get("/metrics", headers=auth).text
    assert 'effnet_errors_total{kind="unauthorized"}' in metrics


def test_exposed_host_warns_without_a_key():
    from effnet.serve.auth import exposure_warning, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.1", "no-such-host.invalid"))
    assert "--api-key" in exposure_warning("0.0.0.0", None)
    assert exposure_warning("0.0.0.0", KEY) is None and exposure_warning("127.0.0.1", None) is None


def test_serve_cli_prints_the_warning_before_it_binds(capsys, monkeypatch):
    from effnet.cli import main

    # An unknown model fails after the warning and before anything listens.
    assert main(["serve", "--host", "0.0.0.0", "--model", "efficientnet-b99"]) == 1
    err = capsys.readouterr().err
    assert "WARNING" in err and "--api-key" in err
    monkeypatch.setenv("EFFNET_API_KEY", KEY)
    assert main(["serve", "--host", "0.0.0.0", "--model", "efficientnet-b99"]) == 1
    assert "WARNING" not in capsys.readouterr().err
    assert main(["serve", "--api-key", " ", "--model", "efficientnet-lite0"]) == 2
    assert "--api-key" in capsys.readouterr().err
