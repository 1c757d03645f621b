"""The inference routes: ``POST /v1/classify`` (image bytes -> top-k) and the KServe v2 tensor ``infer``."""

from __future__ import annotations

import time

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import ImageError
from ..predict import clamp_top_k
from .config import DEFAULT_TOP_K, MAX_TOP_K, PIXELS, TENSOR
from .context import ServerContext
from .errors import ApiError
from .kserve import HEADER_LENGTH, encode_infer_response, parse_infer_request
from .validation import check_pixels, check_query, parse_int_param

__all__ = ["classify_routes"]


def classify_routes(ctx: ServerContext) -> list[Route]:
    model, info, batcher = ctx.model, ctx.info, ctx.batcher

    @ctx.instrumented("classify")
    async def classify(request: Request) -> Response:
        started = time.perf_counter()
        check_query(request.query_params, ("top_k",), "/v1/classify")
        requested = parse_int_param(request.query_params, "top_k", DEFAULT_TOP_K, 1, MAX_TOP_K)
        top_k = clamp_top_k(requested, info.num_classes)  # the CLI's rule; the answer says when it clamped
        async with ctx.admitted():
            data = await ctx.image_bytes(request, await ctx.read_body(request))
            if not data:
                raise ApiError(
                    400, "empty_body", "empty request body: send image bytes (raw, or multipart field 'image')"
                )
            check_pixels(data, ctx.config.max_pixels, ctx.config.max_image_mp)
            try:
                crop = await ctx.in_thread(model.crop, data)
            except ImageError as e:
                raise ApiError(400, "bad_image", str(e)) from None
            probs = await batcher.submit(PIXELS, crop[np.newaxis])
        predictions = [p.to_dict() for p in model.top_k(probs[0], top_k)]
        answer = {
            "predictions": predictions,
            "model": info.name,
            "weights": info.weights,
            "top_k": top_k,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        }
        if top_k != requested:
            answer["top_k_requested"] = requested  # clamped to the model's number of classes
        return JSONResponse(answer)

    @ctx.instrumented("infer")
    async def infer(request: Request) -> Response:
        ctx.check_model(request)
        check_query(request.query_params, (), "the v2 infer endpoint")
        if not model.accepts_tensors:
            raise ApiError(
                501,
                "unsupported",
                f"the {info.backend} backend takes image pixels, not normalized "
                "tensors: serve with --backend torch, onnxruntime or openvino for the v2 tensor API",
            )
        async with ctx.admitted():
            body = await ctx.read_body(request)
            parsed = await ctx.in_thread(parse_infer_request, body, request.headers.get(HEADER_LENGTH), info)
            probs = await batcher.submit(TENSOR, parsed.data)
        content, headers = encode_infer_response(info, parsed, probs)
        return Response(content, headers=headers)

    post = ["POST"]
    return [
        Route("/v1/classify", classify, methods=post),
        Route("/v2/models/{name}/infer", infer, methods=post),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=post),
    ]
