"""``POST /v1/explain``: an attribution map (:mod:`effnet.saliency`) of one image, PNG or JSON."""

from __future__ import annotations

import asyncio
import base64
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import EffnetError, ImageError
from .context import ServerContext
from .errors import ApiError
from .validation import check_query

__all__ = ["explain_routes"]


def explain_routes(ctx: ServerContext) -> list[Route]:
    model, info, explain_pool = ctx.model, ctx.info, ctx.explain_pool

    @ctx.instrumented("explain")
    async def explain(request: Request) -> Response:
        """An attribution map (effnet.saliency) of one image: PNG, or JSON with base64 PNGs and the summary."""
        from ..saliency import METHODS, resolve_target

        started = time.perf_counter()
        check_query(request.query_params, ("method", "target", "format"), "/v1/explain")
        method = request.query_params.get("method", "gradcam")
        if method not in METHODS:
            raise ApiError(400, "bad_request", f"method must be one of {', '.join(METHODS)}, got {method[:40]!r}")
        fmt = request.query_params.get("format", "png")
        if fmt not in ("png", "json"):
            raise ApiError(400, "bad_request", f"format must be png or json, got {fmt[:40]!r}")
        target = request.query_params.get("target", "top1")
        run = getattr(model, "explain", None)
        if run is None:
            raise ApiError(501, "unsupported", "this server cannot explain: its model runs in other processes")
        labels = getattr(getattr(model, "classifier", None), "labels", ())
        try:
            resolve_target(target, labels)
        except EffnetError as err:
            raise ApiError(400, "bad_request", str(err)) from None
        async with ctx.admitted():
            data = await ctx.image_bytes(request, await ctx.read_body(request))
            if not data:
                raise ApiError(
                    400, "empty_body", "empty request body: send image bytes (raw, or multipart field 'image')"
                )
            loop = asyncio.get_running_loop()
            try:
                exp = await loop.run_in_executor(explain_pool, run, data, method, target)
            except ImageError as err:
                raise ApiError(400, "bad_image", str(err)) from None
            overlay = await loop.run_in_executor(explain_pool, exp.overlay_png)
            if fmt == "png":
                return Response(overlay, media_type="image/png")
            heatmap = await loop.run_in_executor(explain_pool, exp.heatmap_png)
        return JSONResponse(
            {
                **exp.summary(),
                "path": None,
                "model": info.name,
                "weights": info.weights,
                "overlay_png": base64.b64encode(overlay).decode("ascii"),
                "heatmap_png": base64.b64encode(heatmap).decode("ascii"),
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    return [Route("/v1/explain", explain, methods=["POST"])]
