"""The OpenAPI 3.1 description of the server's HTTP API, served at ``/openapi.json``.

Written by hand from the routes in :mod:`effnet.serve.app` (a test checks that every route is described),
so that clients and schema-driven fuzzers know each endpoint, its parameters, bodies and error answers.
The v2 endpoints follow the KServe Open Inference Protocol (REST); sizes come from the served model.
"""

from __future__ import annotations

from typing import Any

from .kserve import INPUT_NAME, OUTPUT_NAME
from .model import ModelInfo

__all__ = ["openapi_spec"]

_ERROR = {"$ref": "#/components/responses/Error"}
_JSON = "application/json"


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _get(summary: str, schema: dict, *, errors: tuple[int, ...] = (), params: tuple[str, ...] = ()) -> dict:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": _json(schema, "OK")}}
    op["responses"].update({str(code): _ERROR for code in errors})
    if params:
        op["parameters"] = [_p(p) for p in params]
    return {"get": op}


def openapi_spec(info: ModelInfo, *, max_body_mb: float, auth: bool, video: dict[str, float] | None = None) -> dict:
    """The spec for a server of ``info``; ``auth``: every non-health operation needs a Bearer key; ``video``:
    the clip limits (``max_video_mb``, ``max_video_s``, ``max_video_decode_mp``)."""
    v = video or {"max_video_mb": 32.0, "max_video_s": 60.0, "max_video_decode_mp": 2000.0}
    s, k = info.input_size, info.num_classes
    model_params = ("name",)
    version_params = ("name", "version")
    infer_body = {
        "required": True,
        "description": f"A v2 inference request: one FP32 input {INPUT_NAME!r} of shape [N, 3, {s}, {s}] "
        "(normalized NCHW), as JSON 'data' or, with Inference-Header-Content-Length, as little-endian bytes "
        f"after the JSON header. At most {max_body_mb:g} MiB.",
        "content": {
            _JSON: {"schema": _ref("InferRequest")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }

    def infer(*path_params: str) -> dict:
        return {
            "post": {
                "summary": "Run the model on a tensor (KServe v2 infer)",
                "parameters": [_p(p) for p in (*path_params, "InferenceHeaderContentLength")],
                "requestBody": infer_body,
                "responses": {
                    "200": {
                        "description": f"Output {OUTPUT_NAME!r}: FP32 [N, {k}] softmax probabilities",
                        "content": {
                            _JSON: {"schema": _ref("InferResponse")},
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    **{str(c): _ERROR for c in (400, 401, 404, 413, 501, 503, 504)},
                },
            }
        }

    image_body = {
        "required": True,
        "description": f"JPEG/PNG/... bytes, at most {max_body_mb:g} MiB",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
    paths: dict[str, dict] = {
        "/": {"get": {"summary": "Upload page", "responses": {"200": {"description": "HTML page"}}}},
        "/openapi.json": _get("This description", {"type": "object"}),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (all worker processes)",
                "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {}}}},
            }
        },
        "/v1/classify": {
            "post": {
                "summary": "Classify one image (raw bytes, or multipart field 'image')",
                "parameters": [_p("top_k")],
                "requestBody": image_body,
                "responses": {
                    "200": _json(_ref("Classification"), "Top-k predictions"),
                    **{str(c): _ERROR for c in (400, 401, 403, 413, 503, 504)},
                },
            }
        },
        "/v1/explain": {
            "post": {
                "summary": "Where the model looked: an attribution map of one image (fp32 torch model of the "
                "served weights), as a PNG overlay or JSON with base64 PNGs and the map's summary",
                "parameters": [_p("method"), _p("target"), _p("format")],
                "requestBody": image_body,
                "responses": {
                    "200": {
                        "description": "format=png: the crop, the heatmap over it and the top-5; format=json: "
                        "method, target, predictions, peak, centre_share, crop_box, overlay_png, heatmap_png",
                        "content": {
                            "image/png": {"schema": {"type": "string", "format": "binary"}},
                            _JSON: {"schema": _ref("Explanation")},
                        },
                    },
                    **{str(c): _ERROR for c in (400, 401, 403, 413, 422, 501, 503, 504)},
                },
            }
        },
        "/v1/video": {
            "post": {
                "summary": "Classify a short video clip: its sampled frames' top-k and the timeline (segments)",
                "description": f"The clip (MP4, WebM, MKV, MOV, AVI...; at most {v['max_video_mb']:g} MiB, 413 beyond) "
                "is decoded in memory with the record's preprocessing, as `effnet classify clip.mp4` does. Refused "
                f"from its header before decoding, and again while decoding: longer than {v['max_video_s']:g} s "
                f"(422), more than {v['max_video_decode_mp']:g} megapixels to decode (width x height summed over "
                "every decoded frame; 422), frames above the image pixel limit (413). Its own admission: 503 with "
                "Retry-After when the clip places are taken; 504 past the clip timeout.",
                "parameters": [_p("fps"), _p("every"), _p("top_k"), _p("window")],
                "requestBody": {
                    "required": True,
                    "description": f"video file bytes, at most {v['max_video_mb']:g} MiB",
                    "content": {
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        "video/*": {"schema": {"type": "string", "format": "binary"}},
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["video"],
                                "properties": {"video": {"type": "string", "format": "binary"}},
                            }
                        },
                    },
                },
                "responses": {
                    "200": _json(_ref("VideoClassification"), "Frames (frame, time, predictions) and segments"),
                    **{str(c): _ERROR for c in (400, 401, 403, 413, 422, 501, 503, 504)},
                },
            }
        },
        "/v1/model": _get("The served model, its preprocessing and limits", {"type": "object"}, errors=(401,)),
        "/v2": _get("Server metadata (KServe v2)", _ref("ServerMetadata"), errors=(401,)),
        "/v2/health/live": _get("Liveness (no key needed)", {"type": "object"}),
        "/v2/health/ready": _get("Readiness (no key needed)", {"type": "object"}, errors=(503,)),
        "/v2/models/{name}": _get("Model metadata", _ref("ModelMetadata"), errors=(401, 404), params=model_params),
        "/v2/models/{name}/ready": _get("Model readiness", {"type": "object"}, errors=(404, 503), params=model_params),
        "/v2/models/{name}/infer": infer("name"),
        "/v2/models/{name}/versions/{version}": _get(
            "Model metadata of a version", _ref("ModelMetadata"), errors=(401, 404), params=version_params
        ),
        "/v2/models/{name}/versions/{version}/ready": _get(
            "Model readiness of a version", {"type": "object"}, errors=(404, 503), params=version_params
        ),
        "/v2/models/{name}/versions/{version}/infer": infer("name", "version"),
    }
    if auth:
        for path, item in paths.items():
            if "/health/" not in path and not path.endswith("/ready"):
                for op in item.values():
                    op["security"] = [{"bearer": []}]
                    op["responses"]["401"] = _ERROR
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "additionalProperties": False,
        "properties": {
            "name": {"const": INPUT_NAME},
            "shape": {
                "type": "array",
                "minItems": 4,
                "maxItems": 4,
                "items": {"type": "integer"},
                "description": f"[N, 3, {s}, {s}], N >= 1",
            },
            "datatype": {"const": "FP32"},
            "parameters": _ref("Parameters"),
            "data": {"type": "array", "description": "flat row-major or nested [N][3][H][W] numbers"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "effnet serve",
            "version": info.version,
            "description": f"{info.name} ({info.weights}, {info.backend} {info.precision}): ImageNet classifier",
        },
        "paths": paths,
        "components": {
            "parameters": {
                "name": {"name": "name", "in": "path", "required": True, "schema": {"const": info.name}},
                "version": {"name": "version", "in": "path", "required": True, "schema": {"const": info.version}},
                "top_k": {
                    "name": "top_k",
                    "in": "query",
                    "description": f"labels per answer; above the model's {k} classes it is clamped to {k}, "
                    "and the answer's top_k_requested says so",
                    "schema": {"type": "integer", "minimum": 1, "default": 5},
                },
                "method": {
                    "name": "method",
                    "in": "query",
                    "schema": {"enum": ["gradcam", "integrated-gradients", "occlusion"], "default": "gradcam"},
                },
                "target": {
                    "name": "target",
                    "in": "query",
                    "description": "top1 (the model's own top-1), or a class index, synset or label",
                    "schema": {"type": "string", "default": "top1"},
                },
                "format": {"name": "format", "in": "query", "schema": {"enum": ["png", "json"], "default": "png"}},
                "fps": {
                    "name": "fps",
                    "in": "query",
                    "description": "frames classified per second of video time, by timestamps (not with every)",
                    "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000, "default": 2},
                },
                "every": {
                    "name": "every",
                    "in": "query",
                    "description": "classify every Nth decoded frame instead (not with fps)",
                    "schema": {"type": "integer", "minimum": 1},
                },
                "window": {
                    "name": "window",
                    "in": "query",
                    "description": "segments: sampled frames of the majority-vote smoothing window",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 999, "default": 5},
                },
                "InferenceHeaderContentLength": {
                    "name": "Inference-Header-Content-Length",
                    "in": "header",
                    "description": "bytes of JSON before the binary tensor data (binary tensor extension)",
                    "schema": {"type": "integer", "minimum": 1},
                },
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Parameters": {
                    "type": "object",
                    "additionalProperties": {"type": ["boolean", "number", "string"]},
                },
                "InferRequest": {
                    "type": "object",
                    "required": ["inputs"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": _ref("Parameters"),
                        "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": tensor},
                        "outputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"name": {"const": OUTPUT_NAME}, "parameters": _ref("Parameters")},
                            },
                        },
                    },
                },
                "InferResponse": {"type": "object"},
                "ModelMetadata": {"type": "object"},
                "ServerMetadata": {"type": "object"},
                "Classification": {
                    "type": "object",
                    "required": ["predictions", "model", "weights", "top_k", "latency_ms"],
                    "properties": {
                        "predictions": {"type": "array", "items": {"type": "object"}},
                        "model": {"type": "string"},
                        "weights": {"type": "string"},
                        "top_k": {"type": "integer", "description": "labels given (top_k asked, at most the classes)"},
                        "top_k_requested": {
                            "type": "integer",
                            "description": f"only when top_k was clamped: the value asked for (above {k})",
                        },
                        "latency_ms": {"type": "number"},
                    },
                },
                "Explanation": {"type": "object"},
                "VideoClassification": {
                    "type": "object",
                    "required": ["model", "weights", "top_k", "sampling", "video", "frames", "segments", "latency_ms"],
                    "properties": {
                        "frames": {
                            "type": "array",
                            "description": "one per sampled frame: frame (index among decoded frames), time (s, "
                            "from its timestamp), predictions; a damaged clip ends with one row carrying error",
                            "items": {"type": "object"},
                        },
                        "segments": {
                            "type": "array",
                            "description": "start, end (s), label, class_index, probability, frames",
                            "items": {"type": "object"},
                        },
                        "video": {"type": "object", "description": "width, height, duration, frames decoded..."},
                        "error": {"type": "string", "description": "what ended a damaged clip early"},
                    },
                },
            },
            "responses": {"Error": _json(_ref("Error"), "Error: {'error': what was wrong}")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _p(name: str) -> dict:
    return {"$ref": f"#/components/parameters/{name}"}
