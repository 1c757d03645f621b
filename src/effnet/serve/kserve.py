"""KServe v2 (Open Inference Protocol) request parsing and response encoding for one model.

The model has one input ``data`` (FP32 ``[-1, 3, H, W]``: the normalized NCHW
tensor the PyTorch model takes) and one output ``prob`` (FP32 ``[-1, classes]``
softmax). Tensors travel as JSON (flat row-major or nested lists) or, with the
binary tensor data extension, as raw little-endian bytes after the JSON header
(``Inference-Header-Content-Length``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from .errors import ApiError
from .model import ModelInfo
from .validation import MAX_JSON_DEPTH, load_json

INPUT_NAME = "data"
OUTPUT_NAME = "prob"
HEADER_LENGTH = "inference-header-content-length"
EXTENSIONS = ("binary_tensor_data",)
# The fields the v2 protocol defines for each object (kserve/open-inference-protocol, REST): anything else is
# a client's typo (a misspelt "datatype" would otherwise be "missing") and is refused by name.
REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
TENSOR_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
OUTPUT_KEYS = frozenset({"name", "parameters"})
# Far above what a body limit lets through (one 224 px row is 602,112 bytes of FP32), and small enough
# that sizes computed from N stay ordinary integers (Python refuses to print ints of over 4,300 digits).
MAX_ROWS = 1 << 20


def model_metadata(info: ModelInfo) -> dict:
    s = info.input_size
    return {
        "name": info.name,
        "versions": [info.version],
        "platform": f"effnet_{info.backend}",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 3, s, s]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, info.num_classes]}],
        "parameters": {
            "layout": "NCHW",
            "channel_order": info.channel_order,
            "mean": list(info.mean),
            "std": list(info.std),
            "note": "data = (pixel - mean) / std on 0-255 pixels of the center crop; prob = softmax",
            "weights": info.weights,
            "precision": info.precision,
        },
    }


@dataclass
class InferRequest:
    id: str | None
    data: np.ndarray  # float32 [N, 3, H, W]
    binary_output: bool


def _bad(message: str, kind: str = "bad_tensor") -> ApiError:
    return ApiError(400, kind, message)


def _show(value: object, limit: int = 80) -> str:
    """A client's value in a message, cut short: an error must not echo megabytes back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_keys(obj: dict, allowed: frozenset[str], what: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise _bad(
            f"unknown field(s) {_show(unknown)} in {what} (the v2 protocol defines {sorted(allowed)})", "bad_request"
        )


def _parameters(parameters: object, what: str) -> dict:
    """A v2 ``parameters`` object: values are booleans, numbers or strings (the protocol's $parameter)."""
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise _bad(f"'parameters' of {what} must be an object, got {type(parameters).__name__}", "bad_request")
    for key, value in parameters.items():
        if not isinstance(value, bool | int | float | str):
            raise _bad(
                f"parameter {_show(key)} of {what} must be a boolean, number or string, got {type(value).__name__}",
                "bad_request",
            )
    return parameters


def _binary_flag(parameters: dict, key: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"parameter {key!r} must be true or false, got {_show(value)}", "bad_request")
    return value


def parse_infer_request(
    body: bytes, header_length: str | None, info: ModelInfo, *, max_depth: int = MAX_JSON_DEPTH
) -> InferRequest:
    """Validate a v2 infer request body; every problem is an :class:`ApiError` 400 saying what was expected.

    The JSON's nesting depth is bounded before it is parsed (``max_depth``); its size is bounded by the
    server's body limit, checked before the body is read.
    """
    binary = b""
    if header_length is not None:
        if not (header_length.isascii() and header_length.strip().isdigit()):
            raise _bad(f"Inference-Header-Content-Length must be an integer, got {header_length[:40]!r}", "bad_request")
        n = int(header_length)
        if not 0 < n <= len(body):
            raise _bad(f"Inference-Header-Content-Length {n} is outside the body of {len(body)} bytes", "bad_request")
        body, binary = body[:n], body[n:]
    if not body:
        raise _bad("empty request body: expected a JSON inference request", "empty_body")
    request = load_json(body, "the inference request", max_bytes=len(body), max_depth=max_depth)
    if not isinstance(request, dict):
        raise _bad(f"the inference request must be a JSON object, got {type(request).__name__}", "bad_json")
    _check_keys(request, REQUEST_KEYS, "the inference request")

    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        got = f"{len(inputs)} inputs" if isinstance(inputs, list) else repr(type(inputs).__name__)
        raise _bad(f"'inputs' must be a list of exactly one tensor named {INPUT_NAME!r}, got {got}")
    tensor = inputs[0]
    _check_keys(tensor, TENSOR_KEYS, "the input tensor")
    name = tensor.get("name")
    if name != INPUT_NAME:
        raise _bad(f"unknown input name {_show(name)}: this model has one input, {INPUT_NAME!r}")
    datatype = tensor.get("datatype")
    if datatype != "FP32":
        raise _bad(f"input {INPUT_NAME!r} must have datatype 'FP32', got {_show(datatype)}")
    s = info.input_size
    expected = [-1, 3, s, s]
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 4
        or not all(_is_int(d) for d in shape)
        or not 1 <= shape[0] <= MAX_ROWS
        or shape[1:] != expected[1:]
    ):
        raise _bad(f"input {INPUT_NAME!r} must have shape {expected} (1 <= N <= {MAX_ROWS:,}), got {_show(shape)}")
    count = math.prod(shape)

    parameters = _parameters(tensor.get("parameters"), f"input {INPUT_NAME!r}")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise _bad(f"input {INPUT_NAME!r} has both 'data' and parameters.binary_data_size: send one of them")
        if not _is_int(size) or size != count * 4:
            raise _bad(f"binary_data_size of {INPUT_NAME!r} must be {count * 4} (FP32 {shape}), got {_show(size)}")
        if len(binary) != size:
            raise _bad(f"binary tensor data is {len(binary)} bytes, binary_data_size says {size}")
        x = np.frombuffer(binary, dtype="<f4").astype(np.float32).reshape(shape)
    else:
        if "data" not in tensor:
            raise _bad(f"input {INPUT_NAME!r} has no 'data' (nor parameters.binary_data_size)")
        if binary:
            raise _bad(
                f"{len(binary)} bytes of binary data follow the JSON header, but input {INPUT_NAME!r} "
                "does not declare parameters.binary_data_size"
            )
        if not isinstance(tensor["data"], list):
            raise _bad(f"input {INPUT_NAME!r} 'data' must be a list of numbers, got {type(tensor['data']).__name__}")
        try:
            raw = np.asarray(tensor["data"])
        except (ValueError, TypeError, OverflowError) as e:  # ragged nested lists, mixed types
            raise _bad(f"input {INPUT_NAME!r} 'data' is not a regular array: {str(e)[:200]}") from None
        if raw.dtype.kind not in "fi":
            raise _bad(f"input {INPUT_NAME!r} 'data' must hold numbers, got {raw.dtype.name} values")
        if raw.size != count:
            raise _bad(f"input {INPUT_NAME!r} 'data' has {raw.size} values, shape {shape} needs {count}")
        if raw.ndim > 1 and list(raw.shape) != shape:
            raise _bad(f"input {INPUT_NAME!r} 'data' is nested as {list(raw.shape)}, shape says {shape}")
        x = raw.astype(np.float32).reshape(shape)
    if not np.isfinite(x).all():
        raise _bad(f"input {INPUT_NAME!r} holds NaN or infinite values")

    binary_output = _binary_flag(_parameters(request.get("parameters"), "the request"), "binary_data_output")
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise _bad("'outputs' must be a list of objects", "bad_request")
        for o in outputs:
            _check_keys(o, OUTPUT_KEYS, "an output")
            if o.get("name") != OUTPUT_NAME:
                raise _bad(f"unknown output name {_show(o.get('name'))}: this model has one output, {OUTPUT_NAME!r}")
            binary_output = binary_output or _binary_flag(_parameters(o.get("parameters"), "an output"), "binary_data")
    rid = request.get("id")
    if rid is not None and not isinstance(rid, str):
        raise _bad(f"'id' must be a string, got {type(rid).__name__}", "bad_request")
    return InferRequest(id=rid, data=x, binary_output=binary_output)


def encode_infer_response(info: ModelInfo, request: InferRequest, probs: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (JSON, or JSON + binary with the binary extension)."""
    probs = np.ascontiguousarray(probs, dtype="<f4")
    output: dict = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(probs.shape)}
    if request.binary_output:
        output["parameters"] = {"binary_data_size": probs.nbytes}
    else:
        output["data"] = probs.ravel().tolist()
    answer: dict = {"model_name": info.name, "model_version": info.version, "outputs": [output]}
    if request.id is not None:
        answer["id"] = request.id
    header = json.dumps(answer, separators=(",", ":")).encode()
    if not request.binary_output:
        return header, {"content-type": "application/json"}
    return header + probs.tobytes(), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
