"""KServe v2 request parsing: valid tensors in every encoding, and a clear 400 for each kind of bad one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from effnet.serve.errors import ApiError
from effnet.serve.kserve import encode_infer_response, model_metadata, parse_infer_request
from effnet.serve.model import ModelInfo

INFO = ModelInfo(
    name="m",
    version="1",
    input_size=8,
    num_classes=10,
    backend="torch",
    precision="fp32",
    weights=None,
    channel_order="RGB",
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
)
SHAPE = [2, 3, 8, 8]


def tensor(**overrides) -> dict:
    x = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) / 100
    t = {"name": "data", "datatype": "FP32", "shape": SHAPE, "data": x.ravel().tolist()}
    t.update(overrides)
    return t


def body(*inputs: dict, **top) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


def expected() -> np.ndarray:
    return np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE) / 100


def test_flat_nested_and_binary_inputs_parse_to_the_same_tensor():
    flat = parse_infer_request(body(tensor()), None, INFO)
    nested = parse_infer_request(body(tensor(data=expected().tolist())), None, INFO)
    header = body(
        {"name": "data", "datatype": "FP32", "shape": SHAPE, "parameters": {"binary_data_size": expected().nbytes}}
    )
    binary = parse_infer_request(header + expected().astype("<f4").tobytes(), str(len(header)), INFO)
    for r in (flat, nested, binary):
        assert r.data.dtype == np.float32 and r.data.shape == tuple(SHAPE)
        np.testing.assert_array_equal(r.data, expected())
    assert not flat.binary_output


def test_json_and_binary_responses():
    probs = np.random.default_rng(0).random((2, 10)).astype(np.float32)
    req = parse_infer_request(body(tensor(), id="abc"), None, INFO)
    content, headers = encode_infer_response(INFO, req, probs)
    answer = json.loads(content)
    assert answer["id"] == "abc" and answer["outputs"][0]["shape"] == [2, 10]
    np.testing.assert_array_equal(np.asarray(answer["outputs"][0]["data"], np.float32).reshape(2, 10), probs)

    req = parse_infer_request(body(tensor(), parameters={"binary_data_output": True}), None, INFO)
    content, headers = encode_infer_response(INFO, req, probs)
    n = int(headers["inference-header-content-length"])
    assert json.loads(content[:n])["outputs"][0]["parameters"] == {"binary_data_size": 80}
    np.testing.assert_array_equal(np.frombuffer(content[n:], "<f4").reshape(2, 10), probs)


def test_metadata_describes_the_one_input_and_output():
    meta = model_metadata(INFO)
    assert meta["inputs"] == [{"name": "data", "datatype": "FP32", "shape": [-1, 3, 8, 8]}]
    assert meta["outputs"] == [{"name": "prob", "datatype": "FP32", "shape": [-1, 10]}]


BAD = {
    "empty": (b"", None, "empty request body"),
    "malformed json": (b"{", None, "malformed JSON"),
    "not utf-8": (b"\xff\xfe{", None, "malformed JSON"),
    "array": (b"[]", None, "JSON object"),
    "two inputs": (body(tensor(), tensor()), None, "exactly one"),
    "wrong name": (body(tensor(name="x")), None, "unknown input name 'x'"),
    "wrong dtype": (body(tensor(datatype="FP16")), None, "'FP32', got 'FP16'"),
    "wrong rank": (body(tensor(shape=[2, 3, 64])), None, "[-1, 3, 8, 8]"),
    "wrong size": (body(tensor(shape=[2, 3, 16, 16])), None, "[-1, 3, 8, 8]"),
    "zero rows": (body(tensor(shape=[0, 3, 8, 8], data=[])), None, "1 <= N"),
    "float shape": (body(tensor(shape=[2.0, 3, 8, 8])), None, "shape"),
    "too few values": (body(tensor(data=[0.0] * 10)), None, "has 10 values"),
    "ragged": (body(tensor(data=[[1.0, 2.0], [3.0]])), None, "not a regular array"),
    "strings": (body(tensor(data=["1"] * 384)), None, "must hold numbers"),
    "nan": (body(tensor(data=[float("nan")] * 384)), None, "NaN"),
    "no data": (body({"name": "data", "datatype": "FP32", "shape": SHAPE}), None, "has no 'data'"),
    "unknown output": (body(tensor(), outputs=[{"name": "logits"}]), None, "unknown output name"),
    "bad header length": (body(tensor()), "ten", "must be an integer"),
    "header length too big": (body(tensor()), "999999", "outside the body"),
    "binary size mismatch": (
        body({"name": "data", "datatype": "FP32", "shape": SHAPE, "parameters": {"binary_data_size": 12}}),
        None,
        "must be 1536",
    ),
    "id not a string": (body(tensor(), id=5), None, "'id' must be a string"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_requests_are_400_with_a_message(case):
    content, header_length, message = BAD[case]
    with pytest.raises(ApiError) as info:
        parse_infer_request(content, header_length, INFO)
    assert info.value.status == 400 and message in info.value.message, info.value.message


def test_binary_data_shorter_than_declared():
    header = body({"name": "data", "datatype": "FP32", "shape": SHAPE, "parameters": {"binary_data_size": 1536}})
    with pytest.raises(ApiError, match="binary tensor data is 100 bytes"):
        parse_infer_request(header + b"\0" * 100, str(len(header)), INFO)
